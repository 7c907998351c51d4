"""The pipeline configuration parses into typed sections and refuses bad values by their full key name."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from core.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config


def _raw() -> dict:
    with open(DEFAULT_CONFIG_PATH, "rb") as fh:
        return tomllib.load(fh)


def test_the_shipped_file_parses_into_typed_sections() -> None:
    cfg = load_config()
    assert isinstance(cfg.events.weights["purchase"], float)
    assert cfg.split.protocol in ("leave-one-out", "temporal")
    assert set(cfg.train.models) <= set(cfg.train.zoo)
    assert cfg.serving.max_k >= 1


def test_replace_derives_a_checked_copy() -> None:
    cfg = load_config()
    temporal = cfg.replace(split={"protocol": "temporal"})
    assert temporal.split.protocol == "temporal"
    assert temporal.split.min_user_items == cfg.split.min_user_items
    assert load_config().split.protocol == "leave-one-out"  # the cached original is untouched
    with pytest.raises(ConfigError, match=r"split.protocol='sideways'"):
        cfg.replace(split={"protocol": "sideways"})
    with pytest.raises(ConfigError, match=r"no key\(s\) \['nope'\]"):
        cfg.replace(split={"nope": 1})


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("serving", "max_k", 0, r"serving.max_k=0 must be > 0"),
        ("serving", "max_k", "ten", r"serving.max_k='ten' must be int"),
        (
            "validation",
            "raw_missing_price_max_fraction",
            1.5,
            r"raw_missing_price_max_fraction=1.5 must be within 0..1",
        ),
        ("events", "weights", {"view": "x"}, r"events.weights.view='x' must be float"),
        ("train", "models", ["popularity", "magic"], r"\['magic'\] are not in train.zoo"),
        ("promotion", "must_beat_popularity", "yes", r"must_beat_popularity='yes' must be bool"),
    ],
)
def test_bad_values_name_the_key(section: str, key: str, value: object, message: str) -> None:
    raw = _raw()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(raw, source="test.toml")


def test_missing_and_unknown_keys_and_sections(tmp_path: Path) -> None:
    raw = _raw()
    del raw["clean"]["bot_max_events_per_day"]
    with pytest.raises(ConfigError, match=r"clean.bot_max_events_per_day is missing"):
        Config.from_dict(raw)
    raw = _raw()
    raw["split"]["protocl"] = "temporal"
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['split.protocl'\]"):
        Config.from_dict(raw)
    raw = _raw()
    del raw["serving"]
    with pytest.raises(ConfigError, match=r"no \[serving\] section"):
        Config.from_dict(raw)
    bad = tmp_path / "bad.toml"
    bad.write_text("[events\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
