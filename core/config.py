"""Pipeline configuration from the versioned TOML file (``config/recsys.toml``)."""

from __future__ import annotations

import copy
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "recsys.toml"


def config_path() -> Path:
    """The config file in force: ``RECSYS_CONFIG`` if set, else the project's default."""
    return Path(os.environ.get("RECSYS_CONFIG", DEFAULT_CONFIG_PATH))


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Return a fresh copy of the pipeline configuration (safe to mutate)."""
    return copy.deepcopy(_load(str(path or config_path())))


def event_weights(cfg: dict[str, Any] | None = None) -> dict[str, float]:
    cfg = cfg or load_config()
    return {k: float(v) for k, v in cfg["events"]["weights"].items()}
