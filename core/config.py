"""How the pipeline behaves: the versioned TOML file (``config/recsys.toml``), parsed once into typed sections.

``load_config()`` returns a frozen :class:`Config`; each job, model trainer or the API takes the
section it needs (``cfg.events``, ``cfg.split``, ``cfg.serving``, ...). A missing or unknown key, a
value of the wrong type or out of range is refused at load time with the key's full name. To change a
value for one run, derive a new config: ``cfg.replace(split={"protocol": "temporal"})``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from core.contract import PROTOCOLS

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "recsys.toml"

PROFILES: tuple[str, ...] = ("quick", "full")
EXCLUDE_POLICIES: tuple[str, ...] = ("purchased", "seen", "none")
INDEX_KINDS: tuple[str, ...] = ("auto", "exact", "faiss")


class ConfigError(ValueError):
    """The configuration file is missing a key, has an unknown one, or a value out of range."""


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: interaction weight per event type, time decay, late-event threshold."""

    weights: dict[str, float]
    half_life_days: float
    late_after_days: int

    def check(self) -> None:
        _positive("events", half_life_days=self.half_life_days)
        _at_least("events", 0, late_after_days=self.late_after_days)
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise ConfigError(f"config events.weights {bad} must be >= 0")


@dataclass(frozen=True)
class CleanConfig:
    """``[clean]``: bot thresholds."""

    bot_max_events_per_minute: int
    bot_max_events_per_day: int

    def check(self) -> None:
        _positive(
            "clean",
            bot_max_events_per_minute=self.bot_max_events_per_minute,
            bot_max_events_per_day=self.bot_max_events_per_day,
        )


@dataclass(frozen=True)
class ValidationConfig:
    """``[validation]``: the data gates' thresholds."""

    raw_unknown_event_type_max_fraction: float
    raw_missing_price_max_fraction: float
    min_clean_events: int
    min_users: int
    min_items: int
    clean_min_price_fraction: float = 0.95
    ts_floor: str = "2000-01-01"
    ts_future_tolerance_hours: float = 2.0
    unknown_item_max_fraction: float = 0.05
    min_day_events: int = 1
    volume_lookback_days: int = 14
    volume_min_history_days: int = 3
    volume_min_ratio: float = 0.25
    volume_max_ratio: float = 4.0
    psi_max_event_type: float = 0.1
    psi_max_item_popularity: float = 0.25
    drift_top_items: int = 50
    drift_min_events: int = 2000

    def check(self) -> None:
        _fraction(
            "validation",
            raw_unknown_event_type_max_fraction=self.raw_unknown_event_type_max_fraction,
            raw_missing_price_max_fraction=self.raw_missing_price_max_fraction,
            clean_min_price_fraction=self.clean_min_price_fraction,
            unknown_item_max_fraction=self.unknown_item_max_fraction,
        )
        try:
            dt.date.fromisoformat(self.ts_floor)
        except ValueError:
            raise ConfigError(f"config validation.ts_floor={self.ts_floor!r} must be a date, YYYY-MM-DD") from None
        _at_least(
            "validation",
            0,
            ts_future_tolerance_hours=self.ts_future_tolerance_hours,
            min_day_events=self.min_day_events,
            volume_min_ratio=self.volume_min_ratio,
            psi_max_event_type=self.psi_max_event_type,
            psi_max_item_popularity=self.psi_max_item_popularity,
            drift_min_events=self.drift_min_events,
        )
        _positive(
            "validation",
            volume_lookback_days=self.volume_lookback_days,
            volume_min_history_days=self.volume_min_history_days,
            drift_top_items=self.drift_top_items,
        )
        if self.volume_max_ratio <= max(self.volume_min_ratio, 1.0) or self.volume_min_ratio > 1.0:
            raise ConfigError(
                f"config validation.volume_min_ratio={self.volume_min_ratio} / volume_max_ratio={self.volume_max_ratio}"
                " must bracket 1 (min <= 1 < max)"
            )
        _at_least(
            "validation", 0, min_clean_events=self.min_clean_events, min_users=self.min_users, min_items=self.min_items
        )


@dataclass(frozen=True)
class SplitConfig:
    """``[split]``: the evaluation protocol and its parameters."""

    protocol: str
    temporal_valid_fraction: float
    temporal_test_fraction: float
    min_user_items: int

    def check(self) -> None:
        _one_of("split", "protocol", self.protocol, PROTOCOLS)
        _fraction(
            "split",
            temporal_valid_fraction=self.temporal_valid_fraction,
            temporal_test_fraction=self.temporal_test_fraction,
        )
        if self.temporal_valid_fraction + self.temporal_test_fraction >= 1:
            raise ConfigError(
                "config split.temporal_valid_fraction + temporal_test_fraction must be < 1 "
                f"(got {self.temporal_valid_fraction} + {self.temporal_test_fraction})"
            )
        _at_least("split", 1, min_user_items=self.min_user_items)


@dataclass(frozen=True)
class WindowConfig:
    """``[window]``: days of data a run reads, ending at its run date."""

    days: int

    def check(self) -> None:
        _positive("window", days=self.days)


@dataclass(frozen=True)
class SequencesConfig:
    """``[sequences]``: the longest item sequence kept per user."""

    max_len: int

    def check(self) -> None:
        _positive("sequences", max_len=self.max_len)


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: which models a run trains, the profile, the seed and the metric cut-offs."""

    models: list[str]
    zoo: list[str]
    profile: str
    seed: int
    k: list[int]

    def check(self) -> None:
        _one_of("train", "profile", self.profile, PROFILES)
        extra = sorted(set(self.models) - set(self.zoo))
        if extra:
            raise ConfigError(f"config train.models {extra} are not in train.zoo {self.zoo}")
        if not self.k or min(self.k) < 1:
            raise ConfigError(f"config train.k={self.k} must hold positive cut-offs")


@dataclass(frozen=True)
class PromotionConfig:
    """``[promotion]``: the metric that decides, the margin over the champion, the popularity guardrail."""

    metric: str
    margin: float
    must_beat_popularity: bool = True
    canary_share: float = 0.0
    publish_attempts: int = 3
    publish_backoff_seconds: float = 2.0
    force: bool = False

    def check(self) -> None:
        _at_least("promotion", 0, margin=self.margin, publish_backoff_seconds=self.publish_backoff_seconds)
        _at_least("promotion", 1, publish_attempts=self.publish_attempts)
        if not 0.0 <= self.canary_share < 1.0:
            raise ConfigError(
                f"config promotion.canary_share={self.canary_share} must be within [0, 1): 0 = off, else the "
                "traffic share a new winner starts with"
            )


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]`` (each key is documented in ``config/recsys.toml``)."""

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
    log_exposures: bool = True
    exposure_flush_events: int = 5000
    exposure_flush_seconds: float = 5.0
    exposure_max_pending: int = 100_000
    durable_events: bool = True
    landing_max_pending: int = 100_000
    idempotency_ttl_seconds: int = 86_400
    state_timeout_seconds: float = 0.25
    state_connect_timeout_seconds: float = 0.25
    state_retry_seconds: float = 2.0
    score_max_queue: int = 1024
    request_deadline_seconds: float = 1.0
    retry_after_seconds: int = 1
    registry_timeout_seconds: float = 5.0
    registry_retry_max_seconds: float = 300.0

    def check(self) -> None:
        _positive(
            "serving",
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.type in ("int", "float") and f.name != "diversity"
            },
        )
        _one_of("serving", "exclude", self.exclude, EXCLUDE_POLICIES)
        _one_of("serving", "index", self.index, INDEX_KINDS)
        _fraction("serving", diversity=self.diversity)
        if not self.landing_source or "/" in self.landing_source:
            raise ConfigError(f"config serving.landing_source={self.landing_source!r} must be a plain file-name prefix")


@dataclass(frozen=True)
class AttributionConfig:
    """``[attribution]``: how long after an exposure an event counts for it, and the API's bound on what it remembers."""

    window_minutes: int
    memory_max_requests: int = 200_000

    def check(self) -> None:
        _positive("attribution", window_minutes=self.window_minutes, memory_max_requests=self.memory_max_requests)

    @property
    def window_seconds(self) -> int:
        return self.window_minutes * 60


@dataclass(frozen=True)
class AlertingConfig:
    """``[alerting]``: where failure alerts of the DAG go (empty URL = off) and how long one may take."""

    webhook_url: str
    timeout_seconds: float

    def check(self) -> None:
        _positive("alerting", timeout_seconds=self.timeout_seconds)
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError(f"config alerting.webhook_url={self.webhook_url!r} must be an http(s) URL or empty")


@dataclass(frozen=True)
class DagConfig:
    """``[dag]``: each task's execution timeout (a default, and per task id or id prefix) and the run's timeout."""

    default_task_timeout_minutes: float
    task_timeout_minutes: dict[str, float]
    run_timeout_minutes: float

    def check(self) -> None:
        _positive(
            "dag",
            default_task_timeout_minutes=self.default_task_timeout_minutes,
            run_timeout_minutes=self.run_timeout_minutes,
            **{f"task_timeout_minutes.{k}": v for k, v in self.task_timeout_minutes.items()},
        )

    def task_timeout(self, task_id: str) -> float:
        """Minutes for ``task_id``: its own entry, else the longest matching prefix (``train`` → ``train_bpr``), else the default."""
        if task_id in self.task_timeout_minutes:
            return self.task_timeout_minutes[task_id]
        prefixes = [k for k in self.task_timeout_minutes if task_id.startswith(k + "_")]
        return self.task_timeout_minutes[max(prefixes, key=len)] if prefixes else self.default_task_timeout_minutes


@dataclass(frozen=True)
class Config:
    """Every section of the pipeline configuration, typed and checked."""

    events: EventsConfig
    clean: CleanConfig
    validation: ValidationConfig
    split: SplitConfig
    window: WindowConfig
    sequences: SequencesConfig
    train: TrainConfig
    promotion: PromotionConfig
    serving: ServingConfig
    attribution: AttributionConfig
    alerting: AlertingConfig
    dag: DagConfig
    source: str = field(default="", compare=False)

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "events",
        "clean",
        "validation",
        "split",
        "window",
        "sequences",
        "train",
        "promotion",
        "serving",
        "attribution",
        "alerting",
        "dag",
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Config:
        """Parse and check a TOML document (as a dict); errors name the file and the key."""
        unknown = sorted(set(raw) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {list(cls.SECTIONS)}")
        hints = typing.get_type_hints(cls)
        sections = {}
        for name in cls.SECTIONS:
            if name not in raw:
                raise ConfigError(f"{source}: no [{name}] section; see config/recsys.toml")
            sections[name] = _parse_section(hints[name], raw[name], name, source)
        return cls(**sections, source=source)

    def replace(self, **changes: dict[str, Any]) -> Config:
        """A copy with some keys of some sections changed (checked like the file): ``replace(split={"protocol": "temporal"})``."""
        updated = {}
        for name, values in changes.items():
            if name not in self.SECTIONS:
                raise ConfigError(f"unknown config section {name!r}; known: {list(self.SECTIONS)}")
            current = dataclasses.asdict(getattr(self, name))
            unknown = sorted(set(values) - set(current))
            if unknown:
                raise ConfigError(f"config {name} has no key(s) {unknown}")
            updated[name] = _parse_section(type(getattr(self, name)), {**current, **values}, name, self.source)
        return dataclasses.replace(self, **updated)


S = TypeVar("S")


def _parse_section(klass: type[S], raw: Any, name: str, source: str) -> S:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(klass)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[f'{name}.{k}' for k in unknown]}; known: {sorted(fields)}")
    hints = typing.get_type_hints(klass)
    values = {}
    for key, f in fields.items():
        if key not in raw:
            if f.default is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{source}: {name}.{key} is missing; add it (see config/recsys.toml)")
        values[key] = _coerce(hints[key], raw[key], f"{name}.{key}", source)
    section = klass(**values)
    section.check()  # type: ignore[attr-defined]
    return section


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is list:
            (inner,) = typing.get_args(hint)
            if not isinstance(value, list):
                raise TypeError
            return [_coerce(inner, v, f"{key}[{n}]", source) for n, v in enumerate(value)]
        if origin is dict:
            _, inner = typing.get_args(hint)
            if not isinstance(value, dict):
                raise TypeError
            return {str(k): _coerce(inner, v, f"{key}.{k}", source) for k, v in value.items()}
        if origin is types.UnionType:
            raise TypeError
    except TypeError:
        shown = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{source}: {key}={value!r} must be {shown}") from None
    raise ConfigError(f"{source}: {key} has an unsupported type {hint}")


def _positive(section: str, **values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"config {section}.{key}={value} must be > 0")


def _at_least(section: str, low: float, **values: float) -> None:
    for key, value in values.items():
        if value < low:
            raise ConfigError(f"config {section}.{key}={value} must be >= {low}")


def _fraction(section: str, **values: float) -> None:
    for key, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"config {section}.{key}={value} must be within 0..1")


def _one_of(section: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config {section}.{key}={value!r} must be one of {list(allowed)}")


def config_path() -> Path:
    """The config file in force: ``RECSYS_CONFIG`` if set, else the project's default."""
    return Path(os.environ.get("RECSYS_CONFIG", DEFAULT_CONFIG_PATH))


@lru_cache(maxsize=8)
def _load(path: str) -> Config:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; set RECSYS_CONFIG to a recsys.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return Config.from_dict(raw, source=path)


def load_config(path: str | Path | None = None) -> Config:
    """The pipeline configuration (immutable; derive a changed copy with :meth:`Config.replace`)."""
    return _load(str(path or config_path()))
