"""Serving-only settings: the shared ``Settings`` plus where the API binds and caches artifacts,
and the ``[serving]`` section of the pipeline config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from core.config import load_config
from core.settings import Settings


class ServingSettings(Settings):
    host: str = Field(default="0.0.0.0", description="Address the scoring API binds (env RECSYS_HOST).")
    serving_cache_dir: str = Field(
        default="", description="Where fetched, verified artifacts are kept. Default <home>/serving/cache."
    )

    @property
    def cache_dir(self) -> Path:
        return Path(self._under_home(self.serving_cache_dir, "serving", "cache"))


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]`` of ``config/recsys.toml``: how often to poll the champion pointer, the largest ``k``."""

    poll_seconds: float
    max_k: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None = None) -> ServingConfig:
        section = (cfg or load_config()).get("serving")
        if not section:
            raise ValueError("config has no [serving] section; add poll_seconds and max_k (see config/recsys.toml)")
        try:
            poll_seconds = float(section["poll_seconds"])
            max_k = int(section["max_k"])
        except KeyError as exc:
            raise ValueError(f"config [serving] lacks {exc.args[0]!r}; see config/recsys.toml") from None
        if poll_seconds <= 0:
            raise ValueError(f"config serving.poll_seconds={poll_seconds} must be > 0")
        if max_k < 1:
            raise ValueError(f"config serving.max_k={max_k} must be >= 1")
        return cls(poll_seconds=poll_seconds, max_k=max_k)


def serving_settings(settings: Settings | None = None) -> ServingSettings:
    """``ServingSettings`` from env, or upgraded from a given ``Settings`` (its values win)."""
    if isinstance(settings, ServingSettings):
        return settings
    if settings is None:
        return ServingSettings()
    return ServingSettings(**settings.model_dump())
