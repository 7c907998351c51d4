"""Small shared layer: settings from env, the column contract and pipeline config."""
