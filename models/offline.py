"""``python -m models.offline``: the command users already type, kept as an alias.

The offline experiment (load a dataset, train one model, rank every item, print one JSON line) lives
in :mod:`training.offline`; this module only forwards to it.
"""

from __future__ import annotations

from training.offline import main

if __name__ == "__main__":
    main()
