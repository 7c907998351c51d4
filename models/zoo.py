"""Imports every model module so that each registers itself by name. Add new models here."""

from __future__ import annotations

import importlib

MODEL_MODULES = (
    "models.popularity",
    "models.bpr",
    "models.knn",
    "models.content",
    "models.two_tower",
    "models.sasrec",
)

for _module in MODEL_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # a model module not written yet must not break the others
        if exc.name != _module:
            raise
