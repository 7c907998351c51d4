"""The exposure gate on a tiny lake written by jobs.exposures: a clean log passes, planted faults fail loudly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from core.config import load_config
from core.lake import Lake
from expectations.exposures import exposures_suite, validate_exposures
from expectations.runner import ValidationFailed
from jobs import exposures
from tests.jobs.test_spark_exposures import record

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 3, 1)


def _land(lake: Lake, day: dt.date, lines: list[str]) -> None:
    folder = lake.landing_exposures(day)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "api-1.jsonl").write_text("\n".join(lines) + "\n")


def test_suite_bounds_come_from_config() -> None:
    cfg = load_config()
    suite = exposures_suite(cfg.validation, DAY, cfg.serving.max_k)
    assert len(suite.expectations) == 11
    between = [e for e in suite.expectations if getattr(e, "column", None) == "n_items"]
    assert between[0].max_value == cfg.serving.max_k


def test_clean_log_passes_and_faults_fail_with_a_readable_report(spark, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    cfg = load_config()
    reports = tmp_path / "reports"
    bad_day = DAY + dt.timedelta(days=1)
    _land(lake, DAY, [json.dumps(record(f"r{i}", user_id=f"u{i}")) for i in range(4)])
    twice = [{"item_id": "i1", "position": 1, "score": 1.0}, {"item_id": "i2", "position": 1, "score": 0.5}]
    late = "2026-03-02T10:00:00Z"
    _land(
        lake,
        bad_day,
        [
            json.dumps(record("r5", ts=late)),
            json.dumps(record("r6", ts=late, variant=None)),
            json.dumps(record("r7", ts=late, items=twice)),
            "{not json",
        ],
    )
    exposures.run(lake.root, bad_day, cfg, spark, window_days=2)

    summary = validate_exposures(lake.root, DAY, spark, cfg=cfg, report_dir=reports)
    assert summary["success"] is True
    assert summary["tables"]["silver_exposures"]["rows"] == 4
    assert summary["tables"]["silver_exposure_items"]["rows"] == 8
    assert (reports / DAY.isoformat() / "validation_exposures.json").exists()
    assert (reports / DAY.isoformat() / "data_docs" / "index.html").exists()

    with pytest.raises(ValidationFailed) as failed:
        validate_exposures(lake.root, bad_day, spark, cfg=cfg, report_dir=reports)
    text = str(failed.value)
    assert "stage 'exposures'" in text
    assert "variant_missing" in text and "duplicate_position" in text and "rejected_share" in text
    assert "r6" in text and "r7#1" in text
    saved = json.loads((reports / bad_day.isoformat() / "validation_exposures.json").read_text())
    assert saved["success"] is False and saved["tables"]["exposure_days"]["rows"] == 1


def test_no_exposures_names_the_path(spark, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="silver exposures"):
        validate_exposures(tmp_path / "lake", DAY, spark, report_dir=tmp_path / "reports")
