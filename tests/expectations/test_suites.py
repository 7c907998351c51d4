"""GX gates on tiny hand-written lake partitions: good data passes, planted violations fail loudly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, load_config
from core.lake import Lake
from expectations.runner import ValidationFailed, format_failure, main, validate_stage, window_days_of
from expectations.suites import stage_suites

pytestmark = pytest.mark.spark

RUN_DATE = dt.date(2026, 3, 10)
BRONZE_SCHEMA = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, "
    "session_id string, price double, quantity int"
)
ITEMS_SCHEMA = "item_id string, category string, brand string, price double, available boolean, title string, attributes array<string>"
INTERACTIONS_SCHEMA = (
    "user_id string, item_id string, weight double, n_events long, first_ts timestamp, last_ts timestamp"
)
HELD_OUT_SCHEMA = "user_id string, item_id string, ts timestamp"
TYPES = ("view", "click", "add_to_cart", "purchase")


@pytest.fixture
def cfg() -> Config:
    """The real config with size floors lowered to the tiny test data."""
    return load_config().replace(validation={"min_clean_events": 40, "min_users": 5, "min_items": 5})


def _events(n: int = 60, day: dt.date = RUN_DATE) -> list[dict[str, Any]]:
    start = dt.datetime.combine(day, dt.time(8))
    return [
        {
            "event_id": f"e{day:%d}-{i}",
            "user_id": f"u{i % 10}",
            "item_id": f"i{i % 7}",
            "event_type": TYPES[i % 4],
            "ts": start + dt.timedelta(minutes=i),
            "session_id": f"s{i % 10}",
            "price": 10.0 + i % 5,
            "quantity": 1 + i % 2,
        }
        for i in range(n)
    ]


def _write(spark, rows: list[dict[str, Any]], schema: str, path: Path) -> None:
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("overwrite").parquet(str(path))


def _items() -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"i{i}",
            "category": "c",
            "brand": "b",
            "price": 10.0 + i,
            "available": i != 3,
            "title": None,
            "attributes": ["a"],
        }
        for i in range(7)
    ]


def _gold(
    spark, lake: Lake, valid_rows: list[tuple[str, str]], test_rows: list[tuple[str, str]], zero_weight: bool = False
) -> None:
    t0 = dt.datetime(2026, 3, 1)
    interactions = [
        {
            "user_id": f"u{u}",
            "item_id": f"i{(u + k) % 8}",
            "weight": 1.0 + k,
            "n_events": 1 + k,
            "first_ts": t0 + dt.timedelta(hours=u * 10 + k),
            "last_ts": t0 + dt.timedelta(hours=u * 10 + k),
        }
        for u in range(6)
        for k in range(4)
    ]
    if zero_weight:
        interactions[0]["weight"] = 0.0
    held = {(r["user_id"], r["item_id"]) for r in interactions if r["item_id"] == f"i{(int(r['user_id'][1:]) + 3) % 8}"}
    held |= {
        (r["user_id"], r["item_id"]) for r in interactions if r["item_id"] == f"i{(int(r['user_id'][1:]) + 2) % 8}"
    }
    train = [r for r in interactions if (r["user_id"], r["item_id"]) not in held]
    users = [
        {
            "user_id": f"u{u}",
            "n_events": 10,
            "n_items": 4,
            "n_purchases": 1,
            "first_ts": t0,
            "last_ts": t0,
            "avg_price": 12.0,
        }
        for u in range(6)
    ]
    items = [
        {
            "item_id": f"i{i}",
            "category": "c",
            "brand": "b",
            "price": 10.0 + i,
            "price_band": 1 + i % 5,
            "available": True,
            "attributes": ["a"],
            "popularity": 3,
            "n_purchases": 1,
        }
        for i in range(8)
    ]
    _write(spark, interactions, INTERACTIONS_SCHEMA, lake.gold(RUN_DATE, "interactions"))
    _write(spark, train, INTERACTIONS_SCHEMA, lake.gold(RUN_DATE, "split=train"))
    _write(
        spark,
        users,
        "user_id string, n_events long, n_items long, n_purchases long, first_ts timestamp, last_ts timestamp, avg_price double",
        lake.gold(RUN_DATE, "users"),
    )
    _write(
        spark,
        items,
        "item_id string, category string, brand string, price double, price_band int, available boolean, "
        "attributes array<string>, popularity long, n_purchases long",
        lake.gold(RUN_DATE, "items"),
    )
    for name, rows in (("split=valid", valid_rows), ("split=test", test_rows)):
        held_rows = [{"user_id": u, "item_id": i, "ts": t0} for u, i in rows]
        _write(spark, held_rows, HELD_OUT_SCHEMA, lake.gold(RUN_DATE, name))


def _loo_held_out() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    valid = [(f"u{u}", f"i{(u + 2) % 8}") for u in range(6)]
    test = [(f"u{u}", f"i{(u + 3) % 8}") for u in range(6)]
    return valid, test


def _failed(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (e["column"] if isinstance(e["column"], str) else ",".join(e["column"]), e["expectation"]): e
        for table in summary["tables"].values()
        for e in table["expectations"]
        if not e["success"]
    }


def test_stage_suites_use_config_thresholds(cfg: Config) -> None:
    cfg = cfg.replace(validation={"raw_unknown_event_type_max_fraction": 0.1})
    raw = stage_suites("raw", cfg.validation)["bronze_events"]
    in_set = next(e for e in raw.expectations if e.expectation_type == "expect_column_values_to_be_in_set")
    assert in_set.mostly == pytest.approx(0.9)
    with pytest.raises(ValueError, match="raw_unknown_event_type_max_fraction"):
        cfg.replace(validation={"raw_unknown_event_type_max_fraction": 1.5})
    with pytest.raises(ValueError, match="unknown stage"):
        stage_suites("gold", cfg.validation)


def test_window_days_ends_at_run_date() -> None:
    assert window_days_of(RUN_DATE, 3) == [dt.date(2026, 3, 8), dt.date(2026, 3, 9), RUN_DATE]


def test_raw_cli_passes_on_clean_bronze_and_writes_data_docs(spark, tmp_path: Path, capsys) -> None:
    lake = Lake(tmp_path / "lake")
    _write(
        spark,
        _events(day=RUN_DATE - dt.timedelta(days=1)),
        BRONZE_SCHEMA,
        lake.bronze_events(RUN_DATE - dt.timedelta(days=1)),
    )
    _write(spark, _events(), BRONZE_SCHEMA, lake.bronze_events(RUN_DATE))
    _write(
        spark, [{**_events(1)[0], "price": -1.0}], BRONZE_SCHEMA, lake.bronze_events(RUN_DATE - dt.timedelta(days=5))
    )

    argv = ["--stage", "raw", "--lake", str(lake.root), "--run-date", "2026-03-10", "--window-days", "2"]
    assert main([*argv, "--report-dir", str(tmp_path / "reports")]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "reports" / "2026-03-10" / "validation_raw.json").read_text())

    assert summary["success"] is True
    table = summary["tables"]["bronze_events"]
    assert table["rows"] == 120  # the day outside the window (with its negative price) is not read
    assert table["partitions"] == ["dt=2026-03-09", "dt=2026-03-10"]
    assert all(e["success"] for e in table["expectations"])
    docs = Path(summary["data_docs"])
    assert docs == tmp_path / "reports" / "2026-03-10" / "data_docs" / "index.html"
    assert docs.is_file() and "raw_events" in docs.read_text()
    assert printed["success"] is True and printed["data_docs"] == str(docs)


def test_raw_stage_fails_with_readable_report(spark, tmp_path: Path, cfg: Config) -> None:
    lake = Lake(tmp_path / "lake")
    rows = _events(100)
    for i in (3, 4):
        rows[i]["user_id"] = None
    for i in range(10, 15):  # 5% unknown types, tolerance is 2%
        rows[i]["event_type"] = "hover"
    rows[20]["price"] = -4.5
    rows[30]["price"] = None  # one missing price is within tolerance
    _write(spark, rows, BRONZE_SCHEMA, lake.bronze_events(RUN_DATE))

    with pytest.raises(ValidationFailed) as caught:
        validate_stage("raw", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports", window_days=1)

    failure = caught.value
    failed = _failed(failure.summary)
    assert set(failed) == {
        ("user_id", "expect_column_values_to_not_be_null"),
        ("event_type", "expect_column_values_to_be_in_set"),
        ("price", "expect_column_values_to_be_between"),
        ("unknown_event_type_share", "expect_column_values_to_be_between"),  # the day's own share (day table)
    }
    assert failed[("user_id", "expect_column_values_to_not_be_null")]["unexpected_count"] == 2
    assert failed[("event_type", "expect_column_values_to_be_in_set")]["unexpected_count"] == 5
    assert failed[("event_type", "expect_column_values_to_be_in_set")]["unexpected_sample"][0] == "hover"
    assert failed[("price", "expect_column_values_to_be_between")]["unexpected_sample"] == [-4.5]
    message = str(failure)
    assert "stage 'raw'" in message and "4 of" in message
    for needle in ("column user_id", "column event_type", "column price", "'hover'", "-4.5", "index.html"):
        assert needle in message, f"{needle!r} missing from:\n{message}"
    assert Path(failure.summary["data_docs"]).is_file()
    saved = json.loads(Path(failure.summary["summary_path"]).read_text())
    assert saved["success"] is False and format_failure(saved) == message == saved["failure_report"]


def test_raw_stage_without_partitions_names_the_path(spark, tmp_path: Path, cfg: Config) -> None:
    with pytest.raises(FileNotFoundError, match="bronze"):
        validate_stage("raw", tmp_path / "lake", RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "r", window_days=1)


def test_clean_stage_passes_then_catches_duplicate_event_id(spark, tmp_path: Path, cfg: Config) -> None:
    lake = Lake(tmp_path / "lake")
    _write(spark, _items(), ITEMS_SCHEMA, lake.silver_items())
    _write(spark, _events(), BRONZE_SCHEMA, lake.silver_events(RUN_DATE))
    summary = validate_stage(
        "clean", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports", window_days=1
    )
    assert summary["success"] and set(summary["tables"]) == {"silver_events", "silver_items"}

    rows = _events()
    rows[5]["event_id"] = rows[6]["event_id"]
    _write(spark, rows, BRONZE_SCHEMA, lake.silver_events(RUN_DATE))
    with pytest.raises(ValidationFailed) as caught:
        validate_stage("clean", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports", window_days=1)
    assert set(_failed(caught.value.summary)) == {("event_id", "expect_column_values_to_be_unique")}
    assert "e10-6" in str(caught.value)
    index = (tmp_path / "reports" / "2026-03-10" / "data_docs" / "index.html").read_text()
    assert "clean_events" in index and "items" in index


def test_features_stage_passes_then_catches_test_pair_in_train(spark, tmp_path: Path, cfg: Config) -> None:
    lake = Lake(tmp_path / "lake")
    valid, test = _loo_held_out()
    _gold(spark, lake, valid, test)
    summary = validate_stage("features", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports")
    assert summary["success"], format_failure(summary)
    assert summary["tables"]["split_checks"]["rows"] == 12

    leaked = [*test, ("u1", "i1"), ("u9", "i2")]  # u1/i1 is a train pair, u9 has no train history
    _gold(spark, lake, valid, leaked)
    with pytest.raises(ValidationFailed) as caught:
        validate_stage("features", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports")
    failed = _failed(caught.value.summary)
    assert set(failed) == {
        ("leaked_pair", "expect_column_values_to_be_null"),
        ("user_without_train", "expect_column_values_to_be_null"),
    }
    assert failed[("leaked_pair", "expect_column_values_to_be_null")]["unexpected_sample"] == ["test:u1|i1"]
    assert failed[("user_without_train", "expect_column_values_to_be_null")]["unexpected_sample"] == ["u9"]
    assert "test:u1|i1" in str(caught.value)


def test_features_stage_catches_non_positive_weight_and_too_few_users(spark, tmp_path: Path, cfg: Config) -> None:
    lake = Lake(tmp_path / "lake")
    valid, test = _loo_held_out()
    _gold(spark, lake, valid, test, zero_weight=True)
    cfg = cfg.replace(validation={"min_users": 50})
    with pytest.raises(ValidationFailed) as caught:
        validate_stage("features", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "reports")
    failed = _failed(caught.value.summary)
    assert set(failed) == {
        ("weight", "expect_column_values_to_be_between"),
        ("user_id", "expect_column_unique_value_count_to_be_between"),
    }
    assert failed[("user_id", "expect_column_unique_value_count_to_be_between")]["observed_value"] == 6


def test_feed_without_prices_passes_but_partial_prices_are_still_required(spark, tmp_path: Path, cfg: Config) -> None:
    """Price is optional in the contract: a feed with no prices at all passes; one that drops most of them fails."""
    lake = Lake(tmp_path / "lake")
    no_prices = [{**row, "price": None} for row in _events(60)]
    _write(spark, no_prices, BRONZE_SCHEMA, lake.bronze_events(RUN_DATE))
    summary = validate_stage("raw", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "r1", window_days=1)
    assert summary["success"] and any("no prices" in note for note in summary["notes"])

    mostly_missing = [{**row, "price": None if i % 2 else row["price"]} for i, row in enumerate(_events(60))]
    _write(spark, mostly_missing, BRONZE_SCHEMA, lake.bronze_events(RUN_DATE))
    with pytest.raises(ValidationFailed) as caught:
        validate_stage("raw", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "r2", window_days=1)
    assert set(_failed(caught.value.summary)) == {
        ("price", "expect_column_values_to_not_be_null"),
        ("missing_price_share", "expect_column_values_to_be_between"),
    }
