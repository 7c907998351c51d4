"""The raw gate's new checks on hand-written bronze days: timestamps, unknown items, data per day, volume,
drift (PSI), and a failed day that stays failed, naming its landing files, until its data is fixed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, load_config
from core.lake import Lake
from expectations import state
from expectations.runner import ValidationFailed, validate_stage

pytestmark = pytest.mark.spark

RUN_DATE = dt.date(2026, 3, 10)
HISTORY = [RUN_DATE - dt.timedelta(days=k) for k in range(5, 0, -1)]
SCHEMA = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, "
    "session_id string, price double, quantity int, source_file string"
)
ITEMS_SCHEMA = "item_id string, category string, brand string, price double, available boolean"
TYPES = ("view", "click", "add_to_cart", "purchase")
ITEMS = [f"i{k}" for k in range(7)]


@pytest.fixture
def cfg() -> Config:
    """Drift judged on the tiny days (50 events are enough here), everything else as shipped."""
    return load_config().replace(validation={"drift_min_events": 50})


def _events(day: dt.date, n: int = 60, file: str = "events-0.jsonl", **overrides: Any) -> list[dict[str, Any]]:
    start = dt.datetime.combine(day, dt.time(8))
    rows = []
    for i in range(n):
        row = {
            "event_id": f"e{day:%m%d}-{file}-{i}",
            "user_id": f"u{i % 10}",
            "item_id": ITEMS[i % len(ITEMS)],
            "event_type": TYPES[i % len(TYPES)],
            "ts": start + dt.timedelta(minutes=i),
            "session_id": f"s{i % 10}",
            "price": 10.0 + i % 5,
            "quantity": 1,
            "source_file": f"landing/events/dt={day.isoformat()}/{file}",
        }
        rows.append({**row, **{k: (v(i) if callable(v) else v) for k, v in overrides.items()}})
    return rows


def _write_day(spark, lake: Lake, day: dt.date, rows: list[dict[str, Any]]) -> None:
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.mode("overwrite").parquet(str(lake.bronze_events(day)))


def _catalogue(spark, lake: Lake) -> None:
    rows = [{"item_id": i, "category": "c", "brand": "b", "price": 10.0, "available": True} for i in ITEMS]
    spark.createDataFrame(rows, ITEMS_SCHEMA).coalesce(1).write.mode("overwrite").parquet(
        str(lake.root / "bronze" / "items")
    )


@pytest.fixture(scope="module")
def history_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five steady days of 60 events and a catalogue, written once; each test copies them."""
    lake = Lake(tmp_path_factory.mktemp("history") / "lake")
    _catalogue(spark, lake)
    for day in HISTORY:
        _write_day(spark, lake, day, _events(day))
    return lake.root


@pytest.fixture
def lake(history_lake: Path, tmp_path: Path) -> Lake:
    shutil.copytree(history_lake, tmp_path / "lake")
    return Lake(tmp_path / "lake")


def _validate(spark, lake: Lake, cfg: Config, reports: Path, run_date: dt.date = RUN_DATE) -> dict[str, Any]:
    return validate_stage("raw", lake.root, run_date, spark, cfg=cfg, report_dir=reports, window_days=30)


def _failed(summary: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (table, e["column"] if isinstance(e["column"], str) else ",".join(e["column"]), e["expectation"])
        for table, tbl in summary["tables"].items()
        for e in tbl["expectations"]
        if not e["success"]
    }


def _day_row(summary: dict[str, Any], day: dt.date) -> dict[str, Any]:
    (row,) = [r for r in _read_day_table(summary) if r["dt"] == day.isoformat()]
    return row


def _read_day_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The day table as GX saw it, from the summary's observed values of the raw_days suite."""
    days = summary["tables"]["bronze_days"]
    return days["day_table"]


def test_a_steady_feed_passes_every_new_check_with_each_one_judged(
    spark, lake: Lake, tmp_path: Path, cfg: Config
) -> None:
    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE))

    summary = _validate(spark, lake, cfg, tmp_path / "reports")

    assert summary["success"], summary.get("failure_report")
    assert summary["checked_days"] == [d.isoformat() for d in [*HISTORY, RUN_DATE]]
    expectations = {(e["column"], e["expectation"]) for e in summary["tables"]["bronze_events"]["expectations"]}
    assert ("ts", "expect_column_values_to_be_between") in expectations
    assert ("unknown_item", "expect_column_values_to_be_null") in expectations
    run_day = _day_row(summary, RUN_DATE)
    assert run_day["events"] == 60 and run_day["volume_ratio"] == pytest.approx(1.0)
    assert run_day["baseline_day"] == HISTORY[-1].isoformat()
    assert run_day["psi_event_type"] == pytest.approx(0.0) and run_day["psi_item_popularity"] == pytest.approx(0.0)
    record = state.read_state(tmp_path / "reports", RUN_DATE)
    assert record is not None and record["status"] == "passed" and record["events"] == 60
    assert record["distribution"]["event_types"] == {t: 15 for t in TYPES}


#: Two faulty clocks: 3 h after the run date's end (tolerance 2 h), and the Unix epoch (floor 2000-01-01).
TS_FAULTS = {3: dt.datetime(2026, 3, 11, 5), 4: dt.datetime(1970, 1, 1)}

CASES: dict[str, tuple[Any, dict[str, Any], tuple[str, str, str], str]] = {
    "timestamps in the future and before the floor": (
        lambda day: _events(day, ts=lambda i: TS_FAULTS.get(i, dt.datetime(2026, 3, 10, 9))),
        {},
        ("bronze_events", "ts", "expect_column_values_to_be_between"),
        "'1970-01-01 00:00:00', '2026-03-11 05:00:00'",
    ),
    "events on items missing from the catalogue (a day's own share, not diluted by the others)": (
        lambda day: _events(day, item_id=lambda i: f"ghost{i % 3}" if i % 5 == 0 else ITEMS[i % 7]),
        {"drift_min_events": 1000},  # ghost items also shift popularity; judge them alone here
        ("bronze_days", "unknown_item_share", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
    "unknown event types (a day's own share)": (
        lambda day: _events(day, event_type=lambda i: "hover" if i % 10 == 0 else TYPES[i % 4]),
        {"drift_min_events": 1000},  # a new type also shifts the mix; judge the share alone here
        ("bronze_days", "unknown_event_type_share", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
    "no landing data on the run day": (
        None,
        {},
        ("bronze_days", "events", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
    "volume spike against the trailing median": (
        lambda day: _events(day, n=400),
        {},
        ("bronze_days", "volume_ratio", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
    "event-type mix drift": (
        lambda day: _events(day, event_type="view"),
        {},
        ("bronze_days", "psi_event_type", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
    "item popularity drift": (
        lambda day: _events(day, item_id=lambda i: ITEMS[0] if i % 4 else ITEMS[i % 7]),
        {},
        ("bronze_days", "psi_item_popularity", "expect_column_values_to_be_between"),
        "2026-03-10",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_new_check_trips_on_its_own_fault(spark, lake: Lake, tmp_path: Path, cfg: Config, case: str) -> None:
    make_run_day, overrides, expected, shown = CASES[case]
    if make_run_day is not None:
        _write_day(spark, lake, RUN_DATE, make_run_day(RUN_DATE))
    cfg = cfg.replace(validation=overrides) if overrides else cfg

    with pytest.raises(ValidationFailed) as caught:
        _validate(spark, lake, cfg, tmp_path / "reports")

    summary = caught.value.summary
    assert _failed(summary) == {expected}
    assert shown in str(caught.value), str(caught.value)
    assert summary["day_outcomes"][RUN_DATE.isoformat()] == "failed"
    assert {d for d, s in summary["day_outcomes"].items() if s == "failed"} == {RUN_DATE.isoformat()}
    record = state.read_state(tmp_path / "reports", RUN_DATE)
    assert record is not None and record["status"] == "failed"
    assert record["failures"] == [f"{expected[0]}: {expected[1]} {expected[2]}"]


def test_a_volume_drop_fails_its_day_and_a_steady_day_after_it_passes(
    spark, lake: Lake, tmp_path: Path, cfg: Config
) -> None:
    drop_day = RUN_DATE - dt.timedelta(days=1)
    _write_day(spark, lake, drop_day, _events(drop_day, n=10))
    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE))
    with pytest.raises(ValidationFailed) as caught:
        _validate(spark, lake, cfg, tmp_path / "reports")
    summary = caught.value.summary
    assert _failed(summary) == {("bronze_days", "volume_ratio", "expect_column_values_to_be_between")}
    assert _day_row(summary, drop_day)["volume_ratio"] == pytest.approx(10 / 60)
    assert _day_row(summary, RUN_DATE)["volume_ratio"] == pytest.approx(1.0)  # the median shrugs one bad day off
    assert {d for d, s in summary["day_outcomes"].items() if s == "failed"} == {drop_day.isoformat()}


def test_a_day_judged_alone_names_unknown_items_and_their_landing_file(
    spark, lake: Lake, tmp_path: Path, cfg: Config
) -> None:
    ghosts = _events(RUN_DATE, n=20, file="api-7.jsonl", item_id=lambda i: f"ghost{i % 2}")
    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE) + ghosts)
    with pytest.raises(ValidationFailed) as caught:
        validate_stage("raw", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "r", window_days=1)
    summary = caught.value.summary
    assert summary["checked_days"] == [RUN_DATE.isoformat()]
    assert {
        ("bronze_events", "unknown_item", "expect_column_values_to_be_null"),
        ("bronze_days", "unknown_item_share", "expect_column_values_to_be_between"),
    } <= _failed(summary)
    assert summary["bad_files"] == {f"landing/events/dt={RUN_DATE.isoformat()}/api-7.jsonl": 20}
    message = str(caught.value)
    assert "offending values: 'ghost0'" in message and "api-7.jsonl  (20 rows)" in message


def test_drift_baseline_is_the_previous_days_stored_distribution(
    spark, lake: Lake, tmp_path: Path, cfg: Config
) -> None:
    """The previous run's distributions live in its day's JSON; a later run compares against them unread."""
    reports = tmp_path / "reports"
    first = _validate(spark, lake, cfg, reports, run_date=HISTORY[-1])
    assert first["success"]
    stored = json.loads(state.state_path(reports, HISTORY[-1]).read_text())["distribution"]
    assert stored["events"] == 60 and set(stored["top_items"]) == set(ITEMS)

    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE, event_type="purchase"))
    with pytest.raises(ValidationFailed) as caught:
        _validate(spark, lake, cfg, reports)
    summary = caught.value.summary
    assert summary["checked_days"] == [RUN_DATE.isoformat()]  # the history passed and is unchanged
    assert _failed(summary) == {("bronze_days", "psi_event_type", "expect_column_values_to_be_between")}
    run_day = _day_row(summary, RUN_DATE)
    assert run_day["baseline_day"] == HISTORY[-1].isoformat() and run_day["psi_event_type"] > 1.0


def test_a_failed_day_stays_failed_names_its_files_and_passes_once_fixed(
    spark, lake: Lake, tmp_path: Path, cfg: Config
) -> None:
    reports = tmp_path / "reports"
    bad_day = HISTORY[-1]
    good = _events(bad_day, file="api-1.jsonl")
    bad = _events(bad_day, n=20, file="api-2.jsonl", price=lambda i: -1.0 if i < 12 else 5.0)
    _write_day(spark, lake, bad_day, good + bad)

    with pytest.raises(ValidationFailed) as caught:
        _validate(spark, lake, cfg, reports, run_date=bad_day)
    bad_path = f"landing/events/dt={bad_day.isoformat()}/api-2.jsonl"
    assert caught.value.summary["bad_files"] == {bad_path: 12}
    assert f"{bad_path}  (12 rows)" in str(caught.value)
    saved = json.loads((reports / bad_day.isoformat() / "validation_raw.json").read_text())
    assert saved["bad_files"] == {bad_path: 12}  # what python -m jobs.quarantine reads
    assert state.failed_days(reports)[bad_day.isoformat()]["bad_files"] == {bad_path: 12}

    # The next day arrives clean; the bad day was not re-ingested, yet it is judged again and fails again.
    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE))
    with pytest.raises(ValidationFailed) as again:
        _validate(spark, lake, cfg, reports)
    assert again.value.summary["checked_days"] == [bad_day.isoformat(), RUN_DATE.isoformat()]
    assert again.value.summary["day_outcomes"] == {bad_day.isoformat(): "failed", RUN_DATE.isoformat(): "passed"}
    assert again.value.summary["bad_files"] == {bad_path: 12}

    # The operator sets api-2.jsonl aside; ingest rewrites the day without it; the day passes and is settled.
    _write_day(spark, lake, bad_day, good)
    fixed = _validate(spark, lake, cfg, reports)
    assert fixed["success"] and fixed["checked_days"] == [bad_day.isoformat()]
    assert state.read_state(reports, bad_day)["status"] == "passed"
    assert state.failed_days(reports) == {}


def test_an_accepted_day_is_settled_until_its_data_changes(spark, lake: Lake, tmp_path: Path, cfg: Config) -> None:
    reports = tmp_path / "reports"
    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE, n=400))  # a real sales day, say
    with pytest.raises(ValidationFailed):
        _validate(spark, lake, cfg, reports)
    with pytest.raises(ValueError, match="reason"):
        state.accept_day(reports, lake.bronze_events(), RUN_DATE, "  ")

    state.accept_day(reports, lake.bronze_events(), RUN_DATE, "spring sale: 6x traffic is real", by="ops")
    rerun = _validate(spark, lake, cfg, reports)
    assert rerun["success"] and rerun["checked_days"] == []
    audit = [json.loads(line) for line in (state.state_dir(reports) / "audit.jsonl").read_text().splitlines()]
    assert audit == [
        {
            "action": "accept",
            "at": audit[0]["at"],
            "by": "ops",
            "day": RUN_DATE.isoformat(),
            "previous_status": "failed",
            "reason": "spring sale: 6x traffic is real",
        }
    ]

    _write_day(spark, lake, RUN_DATE, _events(RUN_DATE, n=401))  # re-ingested: judged again
    with pytest.raises(ValidationFailed):
        _validate(spark, lake, cfg, reports)


def test_a_bulk_import_is_judged_row_by_row_only(spark, lake: Lake, tmp_path: Path, cfg: Config) -> None:
    summary = validate_stage(
        "raw", lake.root, RUN_DATE, spark, cfg=cfg, report_dir=tmp_path / "r", window_days=30, day_checks=False
    )
    assert summary["success"] and summary["checked_days"] == [d.isoformat() for d in HISTORY]
    judged = {e["column"] for e in summary["tables"]["bronze_days"]["expectations"]}
    assert judged == {"unknown_event_type_share", "missing_price_share", "unknown_item_share"}
    assert any("day checks off" in note for note in summary["notes"])
