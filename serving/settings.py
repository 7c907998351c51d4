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
    wal_dir: str = Field(
        default="", description="The write-ahead log of accepted events (local disk). Default <home>/serving/wal."
    )
    api_keys_file: str = Field(
        default="", description="Hashed API keys (serving.auth). Default <home>/serving/api-keys.json."
    )
    api_keys: str = Field(default="", description='Hashed API keys inline, JSON {"keys": [...]} (serving.auth).')
    auth_disabled: bool = Field(
        default=False, description="true = every route open, no API key asked (never in production; logged)."
    )
    erasure_salt: str = Field(
        default="",
        description="Secret salt of the erasure audit's user hashes (RECSYS_ERASURE_SALT, shared with jobs.erasure).",
    )

    @property
    def cache_dir(self) -> Path:
        return Path(self._under_home(self.serving_cache_dir, "serving", "cache"))

    @property
    def wal_path(self) -> Path:
        return Path(self._under_home(self.wal_dir, "serving", "wal"))

    @property
    def keys_file(self) -> Path:
        return Path(self._under_home(self.api_keys_file, "serving", "api-keys.json"))


def serving_settings(settings: Settings | None = None) -> ServingSettings:
    """``ServingSettings`` from env, or upgraded from a given ``Settings`` (its values win)."""
    if isinstance(settings, ServingSettings):
        return settings
    if settings is None:
        return ServingSettings()
    return ServingSettings(**settings.model_dump())
