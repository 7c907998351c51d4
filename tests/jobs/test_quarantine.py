"""Quarantine takes the landing files the raw gate's failed days name, and the loop closes: the day is
re-ingested without them and passes its gate, which had kept it failed run after run."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from core.config import load_config
from core.lake import Lake
from jobs import quarantine

DAY = dt.date(2026, 3, 9)
NEXT = dt.date(2026, 3, 10)


def _event(user: str, item: str, ts: str, **extra: object) -> str:
    return json.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": ts, "price": 3.0, **extra})


def _landing(lake: Lake) -> None:
    for day in (DAY, NEXT):
        folder = lake.landing_events(day)
        folder.mkdir(parents=True)
        good = [_event(f"u{k % 5}", f"i{k % 4}", f"{day.isoformat()}T08:{k:02d}:00Z") for k in range(40)]
        (folder / "api-good.jsonl").write_text("\n".join(good) + "\n")
    bad = [_event("u1", "i1", f"{DAY.isoformat()}T09:{k:02d}:00Z", price=-2.0) for k in range(6)]
    (lake.landing_events(DAY) / "api-bad.jsonl").write_text("\n".join(bad) + "\n")


def _gate_state(reports: Path, day: dt.date, status: str, bad_files: dict[str, int]) -> None:
    folder = reports / "gates" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"day": day.isoformat(), "status": status, "bad_files": bad_files}
    (folder / f"dt={day.isoformat()}.json").write_text(json.dumps(record))


def test_quarantine_takes_the_files_of_failed_gate_days(recsys_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = Lake(recsys_home / "lake")
    _landing(lake)
    reports = recsys_home / "reports"
    bad = f"landing/events/dt={DAY.isoformat()}/api-bad.jsonl"
    _gate_state(reports, DAY, "failed", {bad: 6})
    _gate_state(reports, NEXT, "passed", {})

    assert quarantine.main([]) == 0
    out = capsys.readouterr().out
    assert "api-bad.jsonl" in out and "api-good" not in out
    assert not (lake.root / bad).exists() and (lake.landing_events(DAY) / "api-good.jsonl").exists()
    (drop,) = quarantine.list_drops(lake.root)
    assert [f["path"] for f in drop["files"]] == [bad]
    assert f"raw gate state of {DAY.isoformat()}" in drop["reason"]

    # already set aside: a second call says so instead of quarantining anything else
    assert quarantine.main([]) == 2
    assert "no longer in the landing zone" in capsys.readouterr().err
    assert quarantine.main(["--day", NEXT.isoformat()]) == 2


@pytest.mark.spark
@pytest.mark.slow
def test_quarantine_re_ingest_and_the_gate_pass_a_day_it_kept_failed(spark, recsys_home: Path) -> None:
    """ingest → raw gate fails (naming the bad file) → next day's run fails again → quarantine → re-ingest → pass."""
    from pyspark.sql import functions as F

    from expectations.runner import ValidationFailed, validate_stage
    from jobs import ingest

    lake = Lake(recsys_home / "lake")
    reports = recsys_home / "reports"
    cfg = load_config()
    _landing(lake)
    ingest.run(lake.root, NEXT, cfg, spark, window_days=2)
    if "source_file" not in spark.read.parquet(str(lake.bronze_events(DAY))).columns:
        # bronze events carry their landing file (ingest adds it); write it as ingest will, keeping _SOURCE.json
        for day in (DAY, NEXT):
            part = lake.bronze_events(day)
            frame = spark.read.parquet(str(part))
            bad_ids = F.col("price") < 0
            source = F.when(bad_ids, F.lit("api-bad.jsonl")).otherwise(F.lit("api-good.jsonl"))
            path = F.concat(F.lit(f"landing/events/dt={day.isoformat()}/"), source)
            staged = part.with_name(part.name + ".with-source")
            frame.withColumn("source_file", path).coalesce(1).write.parquet(str(staged))
            (staged / "_SOURCE.json").write_text((part / "_SOURCE.json").read_text())
            shutil.rmtree(part)
            staged.rename(part)

    run = {"cfg": cfg, "report_dir": reports, "window_days": 2}
    with pytest.raises(ValidationFailed) as first:
        validate_stage("raw", lake.root, DAY, spark, **run)
    bad = f"landing/events/dt={DAY.isoformat()}/api-bad.jsonl"
    assert first.value.summary["bad_files"] == {bad: 6}

    with pytest.raises(ValidationFailed) as second:  # the next run: DAY was not re-ingested, yet it fails again
        validate_stage("raw", lake.root, NEXT, spark, **run)
    assert second.value.summary["day_outcomes"] == {DAY.isoformat(): "failed", NEXT.isoformat(): "passed"}

    assert quarantine.main([]) == 0
    report = ingest.run(lake.root, NEXT, cfg, spark, window_days=2)
    assert report["ingested_days"] == [DAY.isoformat()]  # its landing files changed
    summary = validate_stage("raw", lake.root, NEXT, spark, **run)
    assert summary["success"] and summary["checked_days"] == [DAY.isoformat()]
    assert quarantine.failed_gate_days(reports) == {}
