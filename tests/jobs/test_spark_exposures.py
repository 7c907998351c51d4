"""Exposure log → bronze (typed, malformed lines quarantined and counted) → silver (one row per request_id)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from core.config import load_config
from core.lake import Lake
from core.online import bronze_exposures, rejected_exposures, silver_exposures
from jobs import exposures
from jobs.exposures import (
    BAD_ITEMS,
    MISSING_REQUEST_ID,
    MISSING_TS,
    SILVER_COLUMNS,
    accepted_exposures,
    dedupe_exposures,
    exposure_items,
    ingest_exposures,
)
from jobs.ingest import BAD_TS, BLANK, NOT_OBJECT, REASON_COL, SOURCE_MANIFEST, rejected

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 3, 1)


def record(request_id: str, ts: str = "2026-03-01T10:00:00.000Z", **over: Any) -> dict[str, Any]:
    """One exposure record as ``serving.runtime.exposure_record`` writes it."""
    base: dict[str, Any] = {
        "request_id": request_id,
        "ts": ts,
        "user_id": "u1",
        "session_id": None,
        "route": "user",
        "model_name": "bpr",
        "model_version": "3",
        "experiment": "exp",
        "variant": "control",
        "fallback": False,
        "filters": {"exclude": "seen", "category": None, "min_price": None, "max_price": None, "diversity": 0.0},
        "items": [
            {"item_id": "i1", "position": 1, "score": 0.9, "team": None},
            {"item_id": "i2", "position": 2, "score": 0.5, "team": None},
        ],
    }
    base.update(over)
    return base


def _lines(spark, values: list[str], source: str = "api-1.jsonl"):
    return spark.createDataFrame([(v, source) for v in values], "value string, source_file string")


def test_lines_are_typed_and_malformed_ones_labelled(spark) -> None:
    values = [
        json.dumps(record("r1", model_version=7)),
        json.dumps(record("r2", items=[], user_id=None, session_id="s1")),
        json.dumps(record("r3", items=[{"item_id": "i1", "position": "x"}])),
        json.dumps(record("r4", items="i1,i2")),
        json.dumps(record(" ")),
        json.dumps({k: v for k, v in record("r6").items() if k != "ts"}),
        json.dumps(record("r7", ts="yesterday")),
        "not json",
        "",
    ]
    labelled = ingest_exposures(_lines(spark, values)).cache()
    reasons = {r["raw"]: r[REASON_COL] for r in labelled.filter(F.col(REASON_COL).isNotNull()).collect()}
    assert reasons == {
        values[2]: BAD_ITEMS,
        values[3]: BAD_ITEMS,
        values[4]: MISSING_REQUEST_ID,
        values[5]: MISSING_TS,
        values[6]: BAD_TS,
        "not json": NOT_OBJECT,
        "": BLANK,
    }
    bronze = {r["request_id"]: r for r in accepted_exposures(labelled).collect()}
    assert sorted(bronze) == ["r1", "r2"]
    assert bronze["r1"]["model_version"] == "7"
    assert bronze["r1"]["ts"] == dt.datetime(2026, 3, 1, 10)
    assert [(i["item_id"], i["position"], i["score"]) for i in bronze["r1"]["items"]] == [
        ("i1", 1, 0.9),
        ("i2", 2, 0.5),
    ]
    assert json.loads(bronze["r1"]["filters"])["exclude"] == "seen"
    assert bronze["r2"]["items"] == [] and bronze["r2"]["fallback"] is False
    quarantined = sorted(r["reason"] for r in rejected(labelled).collect())
    assert quarantined == sorted([BAD_ITEMS, BAD_ITEMS, MISSING_REQUEST_ID, MISSING_TS, BAD_TS, NOT_OBJECT])


def test_silver_keeps_the_first_copy_of_each_request(spark) -> None:
    schema = exposures.BRONZE_EXPOSURE_SCHEMA.add("dt", "date")
    rows = [
        ("r1", dt.datetime(2026, 3, 1, 10, 0, 5), " u1 ", "f2.jsonl", DAY),
        ("r1", dt.datetime(2026, 3, 1, 10, 0, 5), "u1", "f1.jsonl", DAY),
        ("r2", dt.datetime(2026, 2, 28, 23, 59), "u2", "f0.jsonl", DAY - dt.timedelta(days=1)),
        ("r2", dt.datetime(2026, 2, 28, 23, 59), "u2", "f3.jsonl", DAY),
        ("r3", dt.datetime(2026, 3, 1, 11), None, "f1.jsonl", DAY),
    ]
    item = {"item_id": " i1 ", "position": 1, "score": 1.0, "team": None}
    bronze = spark.createDataFrame(
        [(r, ts, u, "s" + r, "user", "bpr", "3", None, None, False, "{}", [item], f, d) for r, ts, u, f, d in rows],
        schema,
    )
    silver = dedupe_exposures(bronze, DAY)
    assert silver.columns == list(SILVER_COLUMNS)
    got = {r["request_id"]: r for r in silver.collect()}
    assert sorted(got) == ["r1", "r3"]
    assert got["r1"]["user_id"] == "u1" and got["r1"]["unit_id"] == "u1"
    assert got["r1"]["items"][0]["item_id"] == "i1" and got["r1"]["n_items"] == 1
    assert got["r3"]["unit_id"] == "sr3"
    flat = exposure_items(silver).filter(F.col("request_id") == "r1").collect()
    assert [(r["item_id"], r["position"], r["unit_id"]) for r in flat] == [("i1", 1, "u1")]


def _land(lake: Lake, day: dt.date, name: str, lines: list[str]) -> Path:
    folder = lake.landing_exposures(day)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_writes_bronze_silver_and_quarantine_and_skips_unchanged_days(spark, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    cfg = load_config()
    _land(lake, DAY, "api-a.jsonl", [json.dumps(record("r1")), json.dumps(record("r2")), "{broken"])
    _land(lake, DAY, "api-b.jsonl", [json.dumps(record("r2")), json.dumps(record("r3", items=[]))])

    lake.landing_exposures(DAY + dt.timedelta(days=1)).mkdir(parents=True)  # a folder with no file yet
    empty = exposures.run(lake.root, DAY + dt.timedelta(days=1), cfg, spark, window_days=1)
    assert empty["bronze"] == {
        (DAY + dt.timedelta(days=1)).isoformat(): {"status": "empty", "rows_in": 0, "rows_out": 0, "rejected": 0}
    }
    assert empty["silver"] == {}

    report = exposures.run(lake.root, DAY, cfg, spark, window_days=2)
    day = report["bronze"][DAY.isoformat()]
    assert day["status"] == "ingested"
    assert (day["rows_in"], day["rows_out"], day["rejected"]) == (5, 4, 1)
    assert day["rejected_by_reason"] == {NOT_OBJECT: 1}
    assert report["silver"][DAY.isoformat()]["rows_out"] == 3
    assert report["duplicates"] == 1
    assert report["missing_days"] == [(DAY - dt.timedelta(days=1)).isoformat()]
    assert (bronze_exposures(lake, DAY) / SOURCE_MANIFEST).exists()
    assert spark.read.parquet(str(rejected_exposures(lake, DAY))).count() == 1
    assert sorted(r["request_id"] for r in spark.read.parquet(str(silver_exposures(lake, DAY))).collect()) == [
        "r1",
        "r2",
        "r3",
    ]

    again = exposures.run(lake.root, DAY, cfg, spark, window_days=2)
    assert again["skipped_days"] == [DAY.isoformat()]
    assert again["silver"][DAY.isoformat()]["status"] == "skipped"

    # a fixed file replaces the quarantine; the day is ingested again
    _land(lake, DAY, "api-a.jsonl", [json.dumps(record("r1")), json.dumps(record("r2"))])
    fixed = exposures.run(lake.root, DAY, cfg, spark, window_days=1)
    assert fixed["ingested_days"] == [DAY.isoformat()] and fixed["rejected"] == 0
    assert not rejected_exposures(lake, DAY).exists()
