"""Offline evaluation: the dataset in the models' shape (``data``), metric formulas (``metrics``) and
the full-ranking protocol (``evaluate``). Imports only ``core``: models, training and benchmarks
build on it."""
