"""Serving-only settings: the shared ``Settings`` plus where the API binds and caches artifacts.

(How the API behaves is ``[serving]`` of the pipeline config: ``core.config.ServingConfig``.)"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from core.settings import Settings


class ServingSettings(Settings):
    host: str = Field(default="0.0.0.0", description="Address the scoring API binds (env RECSYS_HOST).")
    serving_cache_dir: str = Field(
        default="", description="Where fetched, verified artifacts are kept. Default <home>/serving/cache."
    )

    @property
    def cache_dir(self) -> Path:
        return Path(self._under_home(self.serving_cache_dir, "serving", "cache"))


def serving_settings(settings: Settings | None = None) -> ServingSettings:
    """``ServingSettings`` from env, or upgraded from a given ``Settings`` (its values win)."""
    if isinstance(settings, ServingSettings):
        return settings
    if settings is None:
        return ServingSettings()
    return ServingSettings(**settings.model_dump())
