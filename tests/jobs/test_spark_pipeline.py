"""ingest → clean → features → split on a tiny landing folder: reruns replace, bad lines are quarantined, reports add up."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from core.config import Config, load_config
from core.lake import Lake
from jobs import clean, features, ingest, split
from jobs.common import bronze_items_path, rejected_path

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAY1, DAY2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
BAD_LINE = '{"user_id": "u1", "item_id": '


def _event(user, item, etype, ts, **extra):
    return json.dumps({"user_id": user, "item_id": item, "event_type": etype, "ts": ts, **extra})


def _write_landing(root: Path) -> None:
    lake = Lake(root)
    day1 = [
        _event("u1", "i1", "view", "2024-03-01T09:00:00Z", event_id="a1", price=10.0),
        _event("u1", "i2", "click", "2024-03-01T09:05:00Z", event_id="a2"),
        _event("u1", "i2", "click", "2024-03-01T09:05:00Z", event_id="a2"),  # duplicate
        _event("u2", "i1", "purchase", "2024-03-01T10:00:00+01:00", price=10.0, quantity=1),
        _event("u2", "i3", "teleport", "2024-03-01T10:10:00Z"),  # unknown type
        BAD_LINE,
        _event("u3", "i9", "view", "2024-02-20T10:00:00Z"),  # late, item missing from the catalogue
    ]
    bot = [_event("bot", "i1", "view", f"2024-03-02T12:00:{s:02d}Z") for s in range(5)]
    day2 = [
        _event("u1", "i3", "add_to_cart", "2024-03-02T08:00:00Z"),
        _event("u1", "i4", "purchase", "2024-03-02T08:30:00Z", price=-5.0),  # negative price
        _event("u2", "i2", "view", "2024-03-02T09:00:00Z"),
        _event("u2", "i4", "view", "2024-03-02T09:30:00Z"),
        _event("u3", "i1", "view", "2024-03-02T11:00:00Z"),
        _event("u3", "i2", "view", "2024-03-02T11:30:00Z"),
        _event("", "i2", "view", "2024-03-02T11:40:00Z"),  # missing user
        *bot,
    ]
    items = [
        json.dumps({"item_id": i, "category": "c", "brand": "b", "price": p, "available": True})
        for i, p in (("i1", 10.0), ("i2", 4.0), ("i3", 7.0), ("i4", 2.0))
    ]
    for day, lines in ((DAY1, day1), (DAY2, day2)):
        folder = lake.landing_events(day)
        folder.mkdir(parents=True)
        (folder / "sim-0.jsonl").write_text("\n".join(lines) + "\n")
    lake.landing_items().mkdir(parents=True)
    (lake.landing_items() / "items.jsonl").write_text("\n".join(items) + "\n")


def _counts(spark, lake: Lake) -> dict[str, int]:
    paths = {
        "bronze1": lake.bronze_events(DAY1),
        "bronze2": lake.bronze_events(DAY2),
        "silver1": lake.silver_events(DAY1),
        "silver2": lake.silver_events(DAY2),
        "silver_items": lake.silver_items(),
        "bronze_items": bronze_items_path(lake),
        "rejected1": rejected_path(lake, DAY1),
    }
    paths.update({t: lake.gold(DAY2, t) for t in (*features.GOLD_TABLES, "split=train", "split=valid", "split=test")})
    return {name: spark.read.parquet(str(path)).count() for name, path in paths.items()}


def _pipeline(root: Path, cfg: Config, spark, *, force: bool = False) -> dict[str, dict]:
    return {
        "ingest": ingest.run(root, DAY2, cfg, spark, window_days=2, force=force),
        "clean": clean.run(root, DAY2, cfg, spark, window_days=2),
        "features": features.run(root, DAY2, cfg, spark),
        "split": split.run(root, DAY2, cfg, spark),
    }


def test_pipeline_reruns_replace_and_reports_add_up(spark, tmp_path):
    root = tmp_path / "lake"
    _write_landing(root)
    lake = Lake(root)
    cfg = load_config()
    cfg = cfg.replace(clean={"bot_max_events_per_minute": 4}, split={"min_user_items": 3})

    first = _pipeline(root, cfg, spark)
    counts = _counts(spark, lake)

    ing = first["ingest"]
    assert ing["ingested_days"] == ["2024-03-01", "2024-03-02"] and ing["skipped_days"] == []
    assert ing["days"]["2024-03-01"] | {"rows_in": 7, "rows_out": 6, "rejected": 1} == ing["days"]["2024-03-01"]
    assert ing["rows_in"] == ing["rows_out"] + ing["rejected"] == 19
    quarantined = spark.read.parquet(str(rejected_path(lake, DAY1))).collect()
    assert [(r["raw"], r["reason"], r["source_file"]) for r in quarantined] == [
        (BAD_LINE, "not_json_object", "sim-0.jsonl")
    ]

    cl = first["clean"]
    assert cl["rows_in"] == ing["rows_out"] == counts["bronze1"] + counts["bronze2"]
    assert cl["rows_in"] == cl["rows_out"] + sum(cl["dropped"].values())
    assert cl["dropped"] == {
        "duplicate": 1,
        "bot_user": 5,
        "unknown_event_type": 1,
        "missing_id": 1,
        "negative_price": 1,
    }
    assert cl["rows_out"] == counts["silver1"] + counts["silver2"] == 9
    assert (cl["bot_users"], cl["late"], cl["filled_price"]) == (1, 1, 6)
    assert cl["items"]["added_from_events"] == 1 and counts["silver_items"] == 5
    assert json.loads(lake.report(DAY2, "clean").read_text()) == json.loads(json.dumps(cl, default=str))

    silver = spark.read.parquet(str(lake.silver_events(DAY1)), str(lake.silver_events(DAY2)))
    assert silver.select("event_id").distinct().count() == silver.count()
    assert silver.filter(F.col("price").isNull()).count() == 1  # i9 has no catalogue price

    sp = first["split"]
    assert sum(sp["rows"].values()) == counts["interactions"] == first["features"]["rows"]["interactions"]
    assert sp["users_in_test"] == counts["split=test"] == 3  # u1, u2, u3 each have >= 3 items

    # (a) a rerun skips unchanged landing days and leaves identical partitions
    second = _pipeline(root, cfg, spark)
    assert second["ingest"]["skipped_days"] == ["2024-03-01", "2024-03-02"]
    assert _counts(spark, lake) == counts
    # forcing re-ingest rewrites the partitions, still without duplicates
    forced = ingest.run(root, DAY2, cfg, spark, window_days=2, force=True)
    assert forced["ingested_days"] == ["2024-03-01", "2024-03-02"]
    assert _counts(spark, lake) == counts
    assert not [p for p in lake.root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]

    # a new landing file re-ingests only its day
    (lake.landing_events(DAY1) / "api-1.jsonl").write_text(_event("u4", "i1", "view", "2024-03-01T12:00:00Z") + "\n")
    third = ingest.run(root, DAY2, cfg, spark, window_days=2)
    assert third["ingested_days"] == ["2024-03-01"] and third["skipped_days"] == ["2024-03-02"]
    assert spark.read.parquet(str(lake.bronze_events(DAY1))).count() == counts["bronze1"] + 1


def test_split_main_runs_from_the_command_line(spark, tmp_path, capsys):
    root = tmp_path / "lake"
    _write_landing(root)
    cfg = load_config()
    for job in (ingest, clean):
        job.run(root, DAY2, cfg, spark, window_days=2)
    features.run(root, DAY2, cfg, spark)
    assert split.main(["--lake", str(root), "--run-date", DAY2.isoformat()]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stage"] == "split" and report["rows_in"] == sum(report["rows"].values()) + sum(
        report["dropped_cold"].values()
    )


def test_ingest_main_maps_force_to_the_run(spark, tmp_path, capsys):
    root = tmp_path / "lake"
    _write_landing(root)
    common = ["--lake", str(root), "--run-date", DAY2.isoformat(), "--window-days", "2"]
    ingest.run(root, DAY2, load_config(), spark, window_days=2)
    capsys.readouterr()
    assert ingest.main(common) == 0
    assert json.loads(capsys.readouterr().out)["skipped_days"] == ["2024-03-01", "2024-03-02"]
    assert ingest.main([*common, "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["ingested_days"] == ["2024-03-01", "2024-03-02"]
