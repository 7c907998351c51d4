"""How the pipeline behaves: the versioned TOML file (``config/recsys.toml``), parsed once into typed sections.

``load_config()`` returns a frozen :class:`Config`; each job, model trainer or the API takes the
section it needs (``cfg.events``, ``cfg.split``, ``cfg.serving``, ...). A missing or unknown key, a
value of the wrong type or out of range is refused at load time with the key's full name. To change a
value for one run, derive a new config: ``cfg.replace(split={"protocol": "temporal"})``.
"""

from __future__ import annotations

import dataclasses
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

    def check(self) -> None:
        _fraction(
            "validation",
            raw_unknown_event_type_max_fraction=self.raw_unknown_event_type_max_fraction,
            raw_missing_price_max_fraction=self.raw_missing_price_max_fraction,
            clean_min_price_fraction=self.clean_min_price_fraction,
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

    def check(self) -> None:
        _at_least("promotion", 0, margin=self.margin)


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
