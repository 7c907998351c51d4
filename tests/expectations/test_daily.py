"""The raw gate's day metrics and day bookkeeping as plain functions: PSI, volume, baselines, the gate state."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from core.config import load_config
from expectations import state
from expectations.attribution import landing_path
from expectations.daily import OTHER_BIN, day_rows, find_baseline, item_bins, psi, trailing_median

D = dt.date(2026, 3, 10)


def test_psi_is_zero_for_equal_mixes_and_follows_its_formula() -> None:
    assert psi({"a": 10, "b": 30}, {"a": 1, "b": 3}) == pytest.approx(0.0)
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert psi({"a": 1, "b": 3}, {"a": 2, "b": 2}) == pytest.approx(expected)
    # a bin absent on one side is floored at 1e-4, so a brand-new event type counts, and finitely
    assert 0.5 < psi({"view": 100}, {"view": 90, "hover": 10}) < 1.0
    with pytest.raises(ValueError, match="positive total"):
        psi({}, {"a": 1})


def test_item_bins_keep_the_baselines_top_items_and_put_the_rest_in_one_bin() -> None:
    assert item_bins({"i1": 50, "i2": 30}, 100, {"i1": 10, "i9": 70}) == {"i1": 10, "i2": 0, OTHER_BIN: 90}


def test_trailing_median_skips_days_without_data_and_needs_enough_history() -> None:
    events = {D - dt.timedelta(days=k): n for k, n in ((1, 100), (2, 0), (3, 300), (4, 200), (20, 5))}
    assert trailing_median(D, events, lookback=14, min_history=3) == 200.0
    assert trailing_median(D, events, lookback=14, min_history=4) is None
    assert trailing_median(D, events, lookback=2, min_history=1) == 100.0


def test_find_baseline_takes_the_nearest_usable_earlier_day_within_the_lookback() -> None:
    usable = {D - dt.timedelta(days=3), D - dt.timedelta(days=9)}
    assert find_baseline(D, 7, usable.__contains__) == D - dt.timedelta(days=3)
    assert find_baseline(D, 2, usable.__contains__) is None


def test_day_rows_judge_volume_and_drift_only_with_enough_data() -> None:
    v = load_config().replace(validation={"drift_min_events": 100}).validation
    prev = D - dt.timedelta(days=1)
    facts = {D: {"rows": 150, "unknown_event_type": 3, "missing_price": 15, "unknown_item": 0}}
    events = {D - dt.timedelta(days=k): 100 for k in range(1, 4)} | {D: 150}
    dists = {
        prev: {"events": 100, "event_types": {"view": 50, "purchase": 50}, "top_items": {"i1": 60, "i2": 40}},
        D: {"events": 150, "event_types": {"view": 75, "purchase": 75}, "top_items": {"i1": 90, "i2": 60}},
    }
    (row,) = day_rows([D], facts, v, events, dists, {D: {"i1": 90, "i2": 60}}, {D: prev})
    assert row["events"] == 150 and row["volume_ratio"] == pytest.approx(1.5)
    assert row["unknown_event_type_share"] == pytest.approx(0.02) and row["missing_price_share"] == pytest.approx(0.1)
    assert row["baseline_day"] == prev.isoformat()
    assert row["psi_event_type"] == pytest.approx(0.0) and row["psi_item_popularity"] == pytest.approx(0.0)

    small = load_config().replace(validation={"drift_min_events": 1000}).validation
    (row,) = day_rows([D], facts, small, events, dists, {D: {"i1": 90, "i2": 60}}, {D: prev})
    assert row["psi_event_type"] is None and row["psi_item_popularity"] is None  # too small a sample: not judged
    (empty,) = day_rows([D], {}, v, events)
    assert empty["events"] == 0 and empty["volume_ratio"] is None and empty["unknown_event_type_share"] is None


def _partition(base: Path, day: dt.date, size: int = 10) -> None:
    folder = base / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.parquet").write_bytes(b"x" * size)


def test_days_to_check_are_the_unsettled_ones_and_the_run_day(tmp_path: Path) -> None:
    base, reports = tmp_path / "bronze", tmp_path / "reports"
    days = [D - dt.timedelta(days=k) for k in range(4, -1, -1)]
    for day in days[:4]:
        _partition(base, day)
    assert state.days_to_check(reports, base, days, run_date=D) == days  # never judged; the run day has no data

    fingerprint = state.partition_fingerprint(base / f"dt={days[0].isoformat()}")
    for day, status in zip(days[:3], ("passed", "accepted", "failed"), strict=True):
        record = {"day": day.isoformat(), "status": status, "bronze": fingerprint}
        state.write_state(reports, record)
    assert state.days_to_check(reports, base, days, run_date=D) == days[2:]
    assert (
        state.days_to_check(reports, base, days) == days[2:4]
    )  # without day checks a run day without data is not judged

    _partition(base, days[0], size=11)  # re-ingested: judged again
    assert state.days_to_check(reports, base, days, run_date=D) == [days[0], *days[2:]]
    assert list(state.failed_days(reports)) == [days[2].isoformat()]
    with pytest.raises(ValueError, match="status"):
        state.write_state(reports, {"day": D.isoformat(), "status": "fine"})


def test_state_cli_lists_failed_days_and_accepts_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports, lake = tmp_path / "reports", tmp_path / "lake"
    bad = {"landing/events/dt=2026-03-10/api-1.jsonl": 3}
    state.write_state(reports, {"day": D.isoformat(), "status": "failed", "failures": ["x"], "bad_files": bad})
    args = ["--report-dir", str(reports), "--lake", str(lake)]
    assert state.main(args) == 0
    assert "api-1.jsonl" in capsys.readouterr().out
    assert state.main([*args, "--accept", D.isoformat()]) == 2  # a reason is required
    assert state.main([*args, "--accept", D.isoformat(), "--reason", "known outage"]) == 0
    record = json.loads(state.state_path(reports, D).read_text())
    assert record["status"] == "accepted" and record["previous_status"] == "failed" and record["bad_files"] == bad


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("landing/events/dt=2026-03-10/a.jsonl", "landing/events/dt=2026-03-10/a.jsonl"),
        ("file:///srv/lake/landing/events/dt=2026-03-10/a.jsonl", "landing/events/dt=2026-03-10/a.jsonl"),
        ("a.jsonl", "landing/events/dt=2026-03-10/a.jsonl"),
        (None, None),
    ],
)
def test_landing_path_is_relative_to_the_lake(source: str | None, expected: str | None) -> None:
    assert landing_path(source, D) == expected
