"""The incremental pipeline benchmark end to end at toy size: its table, and a second run that skips unchanged days."""

from __future__ import annotations

import pytest

from bench.pipeline_incremental import DAILY, FULL, ONE_DAY, STAGES, main

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_pipeline_incremental_prints_its_table_and_skips_unchanged_days(capsys: pytest.CaptureFixture[str]) -> None:
    res = main(["--days", "3", "--users", "40", "--items", "60", "--end-date", "2025-01-04", "--no-warmup"])
    out = capsys.readouterr().out

    assert "days done" in out and "second daily run / one-day run" in out
    for run in (ONE_DAY, FULL, DAILY):
        assert {f.stage for f in res["figures"] if f.run == run} == set(STAGES)
        assert f"{run:<17} total" in out
    daily = {f.stage: f.report for f in res["figures"] if f.run == DAILY}
    old_days = ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert daily["ingest"]["ingested_days"] == ["2025-01-04"] and daily["ingest"]["skipped_days"] == old_days
    assert daily["clean"]["cleaned_days"] == ["2025-01-04"] and daily["clean"]["skipped_days"] == old_days
    assert daily["features"]["aggregated_days"] == ["2025-01-04"] and daily["features"]["reused_days"] == old_days
    assert res["ratio"] > 0
