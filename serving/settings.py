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


EXCLUDE_POLICIES: tuple[str, ...] = ("purchased", "seen", "none")
INDEX_KINDS: tuple[str, ...] = ("auto", "exact", "faiss")


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]`` of ``config/recsys.toml`` (each key is documented there)."""

    poll_seconds: float
    max_k: int
    max_events_per_batch: int
    max_id_length: int
    max_body_bytes: int
    exclude: str
    diversity: float
    diversity_pool: int
    index: str
    index_exact_max_items: int
    score_max_batch: int
    state_max_users: int
    state_max_recent: int
    state_ttl_seconds: int
    landing_flush_events: int
    landing_flush_seconds: float
    landing_source: str

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None = None) -> ServingConfig:
        section = (cfg or load_config()).get("serving")
        if not section:
            raise ValueError("config has no [serving] section; add it (see config/recsys.toml)")
        try:
            out = cls(
                poll_seconds=float(section["poll_seconds"]),
                max_k=int(section["max_k"]),
                max_events_per_batch=int(section["max_events_per_batch"]),
                max_id_length=int(section["max_id_length"]),
                max_body_bytes=int(section["max_body_bytes"]),
                exclude=str(section["exclude"]),
                diversity=float(section["diversity"]),
                diversity_pool=int(section["diversity_pool"]),
                index=str(section["index"]),
                index_exact_max_items=int(section["index_exact_max_items"]),
                score_max_batch=int(section["score_max_batch"]),
                state_max_users=int(section["state_max_users"]),
                state_max_recent=int(section["state_max_recent"]),
                state_ttl_seconds=int(section["state_ttl_seconds"]),
                landing_flush_events=int(section["landing_flush_events"]),
                landing_flush_seconds=float(section["landing_flush_seconds"]),
                landing_source=str(section["landing_source"]),
            )
        except KeyError as exc:
            raise ValueError(f"config [serving] lacks {exc.args[0]!r}; see config/recsys.toml") from None
        out.check()
        return out

    def check(self) -> None:
        """Raise naming the first out-of-range key."""
        positive = {
            "poll_seconds": self.poll_seconds,
            "max_k": self.max_k,
            "max_events_per_batch": self.max_events_per_batch,
            "max_id_length": self.max_id_length,
            "max_body_bytes": self.max_body_bytes,
            "diversity_pool": self.diversity_pool,
            "index_exact_max_items": self.index_exact_max_items,
            "score_max_batch": self.score_max_batch,
            "state_max_users": self.state_max_users,
            "state_max_recent": self.state_max_recent,
            "state_ttl_seconds": self.state_ttl_seconds,
            "landing_flush_events": self.landing_flush_events,
            "landing_flush_seconds": self.landing_flush_seconds,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"config serving.{key}={value} must be > 0")
        if self.exclude not in EXCLUDE_POLICIES:
            raise ValueError(f"config serving.exclude={self.exclude!r} must be one of {EXCLUDE_POLICIES}")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"config serving.index={self.index!r} must be one of {INDEX_KINDS}")
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError(f"config serving.diversity={self.diversity} must be within 0..1")
        if not self.landing_source or "/" in self.landing_source:
            raise ValueError(f"config serving.landing_source={self.landing_source!r} must be a plain file-name prefix")


def serving_settings(settings: Settings | None = None) -> ServingSettings:
    """``ServingSettings`` from env, or upgraded from a given ``Settings`` (its values win)."""
    if isinstance(settings, ServingSettings):
        return settings
    if settings is None:
        return ServingSettings()
    return ServingSettings(**settings.model_dump())
