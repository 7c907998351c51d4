"""Clean transforms on hand-made bronze rows: every drop reason, id normalisation, price fill, items; run() uses them."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from core.config import load_config
from core.contract import ITEM_COLUMNS
from core.lake import Lake
from jobs import clean
from jobs.clean import (
    BRONZE_ITEM_SCHEMA,
    DROP_REASON_COL,
    DROP_REASONS,
    add_missing_items,
    bot_users,
    catalogue,
    clean_events,
    label_duplicates,
    label_invalid,
    label_items,
    normalise_events,
    silver_rows,
)
from jobs.common import BRONZE_EVENT_SCHEMA, bronze_items_path, read_days

pytestmark = pytest.mark.spark

EVENTS_DDL = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, session_id string, "
    "price double, quantity int, dt date"
)
ITEMS_DDL = (
    "item_id string, category string, brand string, price double, available boolean, title string, "
    "attributes array<string>"
)
BRONZE_ITEMS_DDL = ITEMS_DDL + ", source_file string, source_mtime timestamp, source_seq long"
DAY = dt.date(2024, 3, 2)
T0 = dt.datetime(2024, 3, 2, 10, 0)


def ev(eid, user, item, etype="view", ts=T0, price=None, day=DAY, session=None):
    return (eid, user, item, etype, ts, session, price, 1, day)


def bronze_ev(eid, user, item, etype="view", ts=T0, price=None, request_id=None, position=None):
    """A bronze row as ingest writes it (no ``dt``: the partition folder gives it)."""
    return (*ev(eid, user, item, etype, ts, price)[:-1], request_id, position)


def test_ids_are_trimmed_and_nfc_normalised(spark):
    rows = spark.createDataFrame(
        [ev("e1", "  Cafe\u0301 ", " i1\t", " VIEW "), ev("e2", "   ", "i2", session="")], EVENTS_DDL
    )
    out = normalise_events(rows).select("user_id", "item_id", "event_type", "session_id")
    assertDataFrameEqual(out, [("Caf\u00e9", "i1", "view", None), (None, "i2", "view", None)])


def test_missing_ids_and_unknown_types_are_labelled(spark):
    rows = spark.createDataFrame(
        [
            ev("e1", "u1", "i1"),
            ev("e2", None, "i1"),
            ev("e3", "u1", "i1", ts=None),
            ev("e4", "u1", "i1", etype="wishlist"),
            ev("e5", "u1", None, etype="wishlist"),
        ],
        EVENTS_DDL,
    )
    out = label_invalid(rows).select("event_id", DROP_REASON_COL)
    assertDataFrameEqual(
        out,
        [("e1", None), ("e2", "missing_id"), ("e3", "missing_id"), ("e4", "unknown_event_type"), ("e5", "missing_id")],
    )


def test_duplicates_keep_the_earliest_landing_day_then_ts(spark):
    rows = spark.createDataFrame(
        [
            ev("a", "u1", "i1", ts=T0, day=DAY),
            ev("a", "u1", "i1", ts=T0, day=DAY - dt.timedelta(days=1)),
            ev("b", "u1", "i2", ts=T0 + dt.timedelta(minutes=1)),
            ev("b", "u1", "i2", ts=T0),
            ev("c", None, "i3"),  # invalid rows never make a valid row a duplicate
            ev("c", "u1", "i3"),
        ],
        EVENTS_DDL,
    )
    out = label_duplicates(label_invalid(rows)).select("event_id", "ts", "dt", DROP_REASON_COL)
    earlier = DAY - dt.timedelta(days=1)
    assertDataFrameEqual(
        out,
        [
            ("a", T0, earlier, None),
            ("a", T0, DAY, "duplicate"),
            ("b", T0, DAY, None),
            ("b", T0 + dt.timedelta(minutes=1), DAY, "duplicate"),
            ("c", T0, DAY, "missing_id"),
            ("c", T0, DAY, None),
        ],
    )


def test_bot_users_by_minute_and_by_day(spark):
    burst = [ev(f"m{i}", "burst", "i1", ts=T0 + dt.timedelta(seconds=i)) for i in range(4)]
    steady = [ev(f"d{i}", "steady", "i1", ts=T0 + dt.timedelta(minutes=i)) for i in range(6)]
    human = [ev(f"h{i}", "human", "i1", ts=T0 + dt.timedelta(minutes=2 * i)) for i in range(3)]
    rows = spark.createDataFrame(burst + steady + human, EVENTS_DDL)
    bots = bot_users(rows, max_events_per_minute=3, max_events_per_day=5)
    assertDataFrameEqual(bots, [("burst", 4, 4), ("steady", 1, 6)])


def test_clean_events_labels_each_row_once_and_fills_prices(spark):
    events = spark.createDataFrame(
        [
            ev("e1", "u1", "i1", etype="view", price=None),  # filled from the catalogue
            ev("e2", "u1", "i2", etype="purchase", price=5.0),
            ev("e2", "u1", "i2", etype="purchase", price=5.0),  # duplicate
            ev("e3", "u1", "i9", etype="click", price=None),  # not in the catalogue: stays null
            ev("e4", "u2", "i1", etype="view", price=-1.0),  # negative
            ev("e5", "u3", "i1", etype="bogus"),
            ev("e6", "", "i1"),
            ev("e7", "u1", "i1", ts=dt.datetime(2024, 2, 20), price=2.0),  # late, kept
        ]
        + [ev(f"b{i}", "bot", "i1", ts=T0 + dt.timedelta(seconds=i)) for i in range(4)],
        EVENTS_DDL,
    )
    items = spark.createDataFrame(
        [("i1", "c", "b", 7.0, True, None, None), ("i2", "c", "b", 5.0, True, None, None)], ITEMS_DDL
    )
    cleaned = clean_events(
        normalise_events(events),
        items,
        bot_max_events_per_minute=3,
        bot_max_events_per_day=100,
        late_after_days=2,
    )
    assertDataFrameEqual(cleaned.bots, [("bot", 4, 4)])
    labelled = cleaned.labelled.cache()
    reasons = labelled.groupBy(DROP_REASON_COL).count()
    assertDataFrameEqual(
        reasons,
        [
            (None, 4),
            ("duplicate", 1),
            ("negative_price", 1),
            ("unknown_event_type", 1),
            ("missing_id", 1),
            ("bot_user", 4),
        ],
    )
    kept = silver_rows(labelled).select("event_id", "price")
    assertDataFrameEqual(kept, [("e1", 7.0), ("e2", 5.0), ("e3", None), ("e7", 2.0)])
    flags = labelled.filter(F.col(DROP_REASON_COL).isNull()).agg(
        F.sum(F.col("price_filled").cast("int")), F.sum(F.col("is_late").cast("int"))
    )
    assert flags.first() == (1, 1)


def test_items_last_drop_wins_and_missing_items_are_added(spark):
    old, new = dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2)
    bronze = spark.createDataFrame(
        [
            ("i1", "old", "b", 1.0, True, None, None, "a.jsonl", old, 0),
            ("i1", "new", "b", 2.0, True, None, None, "b.jsonl", new, 1),
            (" i2 ", "c", "b", -3.0, False, "t", ["x"], "a.jsonl", old, 2),
            ("i3", "first", "b", 1.0, True, None, None, "b.jsonl", new, 2),
            ("i3", "second", "b", 1.5, True, None, None, "b.jsonl", new, 3),
            ("  ", "c", "b", 1.0, True, None, None, "a.jsonl", old, 4),
        ],
        BRONZE_ITEMS_DDL,
    )
    labelled = label_items(bronze)
    assertDataFrameEqual(labelled.groupBy(DROP_REASON_COL).count(), [(None, 3), ("superseded", 2), ("missing_id", 1)])
    previous = spark.createDataFrame(
        [("i0", None, None, None, None, None, None), ("i1", "x", "x", 9.0, True, None, None)], ITEMS_DDL
    )
    items = catalogue(labelled, previous=previous)
    events = spark.createDataFrame([ev("e1", "u1", "i1"), ev("e2", "u1", "i7")], EVENTS_DDL)
    out = add_missing_items(items, events).select(*ITEM_COLUMNS)
    expected = spark.createDataFrame(
        [
            ("i1", "new", "b", 2.0, True, None, None),
            ("i2", "c", "b", None, False, "t", ["x"]),
            ("i3", "second", "b", 1.5, True, None, None),
            ("i0", None, None, None, None, None, None),
            ("i7", None, None, None, None, None, None),
        ],
        ITEMS_DDL,
    )
    assertDataFrameEqual(out, expected)


def test_run_reports_and_writes_what_clean_events_labels(spark, tmp_path):
    """clean.run on a bronze lake: its report and silver days are clean_events' labels on the same rows."""
    day1 = DAY - dt.timedelta(days=1)
    lake = Lake(tmp_path / "lake")
    bronze_days = {
        day1: [
            bronze_ev("a1", "u1", "i1", price=None, request_id="r1", position=2),  # price filled from the catalogue
            bronze_ev("a2", " u1 ", "i2", etype="purchase", price=5.0),
            bronze_ev("a3", "u2", "i1", etype="teleport"),
            bronze_ev("a4", "u3", "i9", ts=dt.datetime(2024, 2, 20)),  # late; i9 not in the catalogue
        ],
        DAY: [
            bronze_ev("a2", "u1", "i2", etype="purchase", price=5.0),  # duplicate of day 1's a2
            bronze_ev("b1", "u2", "i2", price=-1.0),
            bronze_ev("b2", "", "i2"),
            *[bronze_ev(f"x{i}", "bot", "i1", ts=T0 + dt.timedelta(seconds=i)) for i in range(4)],
        ],
    }
    for day, rows in bronze_days.items():
        spark.createDataFrame(rows, BRONZE_EVENT_SCHEMA).write.parquet(str(lake.bronze_events(day)))
    t = dt.datetime(2024, 3, 1)
    bronze_items = [
        ("i1", "c", "b", 7.0, True, None, None, "a.jsonl", t, 0),
        ("i2", "c", "b", 5.0, True, None, None, "a.jsonl", t, 1),
    ]
    spark.createDataFrame(bronze_items, BRONZE_ITEM_SCHEMA).write.parquet(str(bronze_items_path(lake)))
    cfg = load_config().replace(clean={"bot_max_events_per_minute": 3}, events={"late_after_days": 2})

    report = clean.run(lake.root, DAY, cfg, spark, window_days=2)

    bronze = read_days(spark, lake.bronze_events(), [day1, DAY], BRONZE_EVENT_SCHEMA)
    items = catalogue(label_items(spark.read.parquet(str(bronze_items_path(lake)))))
    cleaned = clean_events(
        bronze,
        items,
        bot_max_events_per_minute=cfg.clean.bot_max_events_per_minute,
        bot_max_events_per_day=cfg.clean.bot_max_events_per_day,
        late_after_days=cfg.events.late_after_days,
    )
    labelled = cleaned.labelled.cache()
    by_reason = {r[DROP_REASON_COL]: r["count"] for r in labelled.groupBy(DROP_REASON_COL).count().collect()}
    kept = labelled.filter(F.col(DROP_REASON_COL).isNull())
    assert report["dropped"] == {reason: by_reason.get(reason, 0) for reason in DROP_REASONS}
    assert (report["rows_in"], report["rows_out"]) == (labelled.count(), by_reason[None])
    assert report["bot_users"] == cleaned.bots.count() == 1
    assert report["filled_price"] == kept.filter("price_filled").count() == 1
    assert report["late"] == kept.filter("is_late").count() == 1
    assert report["dropped"] == {
        "duplicate": 1,
        "bot_user": 4,
        "unknown_event_type": 1,
        "missing_id": 1,
        "negative_price": 1,
    }
    for day in (day1, DAY):
        written = spark.read.parquet(str(lake.silver_events(day)))
        assertDataFrameEqual(written, silver_rows(labelled).filter(F.col("dt") == F.lit(day)).drop("dt"))
    followed = spark.read.parquet(str(lake.silver_events(day1))).filter(F.col("request_id").isNotNull())
    assert [tuple(r) for r in followed.select("event_id", "request_id", "position").collect()] == [("a1", "r1", 2)]
    labelled.unpersist()


def _bronze_lake(spark, root, days: dict[dt.date, list[tuple]]) -> Lake:
    """A lake whose bronze holds ``days`` (rows as :func:`bronze_ev` makes them) and a two-item catalogue."""
    lake = Lake(root)
    for day, rows in days.items():
        spark.createDataFrame(rows, BRONZE_EVENT_SCHEMA).write.mode("overwrite").parquet(str(lake.bronze_events(day)))
    if not bronze_items_path(lake).exists():
        t = dt.datetime(2024, 3, 1)
        items = [
            ("i1", "c", "b", 7.0, True, None, None, "a.jsonl", t, 0),
            ("i2", "c", "b", 5.0, True, None, None, "a.jsonl", t, 1),
        ]
        spark.createDataFrame(items, BRONZE_ITEM_SCHEMA).write.parquet(str(bronze_items_path(lake)))
    return lake


def _silver_files(lake: Lake) -> dict[str, int]:
    """Every file under silver/events with its mtime (ns): a rewritten day changes both."""
    return {
        str(p.relative_to(lake.silver_events())): p.stat().st_mtime_ns
        for p in sorted(lake.silver_events().rglob("*"))
        if p.is_file()
    }


def _bot_cfg():
    return load_config().replace(clean={"bot_max_events_per_minute": 3})


def _silver(spark, lake: Lake, day: dt.date) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.parquet(str(lake.silver_events(day))).collect())


DAY0 = DAY - dt.timedelta(days=2)
DAY1 = DAY - dt.timedelta(days=1)


def test_rerun_without_new_data_rewrites_nothing(spark, tmp_path):
    lake = _bronze_lake(
        spark,
        tmp_path / "lake",
        {
            DAY0: [bronze_ev("a1", "u1", "i1"), bronze_ev("a2", "u2", "i2", price=None)],
            DAY1: [bronze_ev("b1", "u1", "i2", etype="purchase", price=5.0), bronze_ev("a1", "u1", "i1")],
        },
    )
    first = clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3)
    assert first["cleaned_days"] == [DAY0.isoformat(), DAY1.isoformat()] and first["skipped_days"] == []
    files, silver = _silver_files(lake), {d: _silver(spark, lake, d) for d in (DAY0, DAY1)}

    second = clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3)

    assert second["cleaned_days"] == [] and second["skipped_days"] == [DAY0.isoformat(), DAY1.isoformat()]
    assert _silver_files(lake) == files
    assert {d: _silver(spark, lake, d) for d in (DAY0, DAY1)} == silver
    assert {k: second[k] for k in ("rows_in", "rows_out", "dropped")} == {
        k: first[k] for k in ("rows_in", "rows_out", "dropped")
    }
    forced = clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3, force=True)
    assert forced["cleaned_days"] == [DAY0.isoformat(), DAY1.isoformat()]
    assert {d: _silver(spark, lake, d) for d in (DAY0, DAY1)} == silver


def test_a_new_day_revealing_a_bot_rewrites_only_the_days_the_bot_touched(spark, tmp_path):
    old_days = {
        DAY0: [bronze_ev("a1", "u1", "i1"), bronze_ev("a2", "sneaky", "i2")],
        DAY1: [bronze_ev("b1", "u2", "i1"), bronze_ev("b2", "u1", "i2")],
    }
    lake = _bronze_lake(spark, tmp_path / "lake", old_days)
    clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3)
    assert ("a2", "sneaky") in [r[:2] for r in _silver(spark, lake, DAY0)]
    day1_files = {k: v for k, v in _silver_files(lake).items() if k.startswith(f"dt={DAY1}")}

    burst = [bronze_ev(f"x{i}", "sneaky", "i1", ts=T0 + dt.timedelta(seconds=i)) for i in range(4)]
    _bronze_lake(spark, lake.root, {DAY: [bronze_ev("c1", "u3", "i1"), *burst]})
    report = clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3)

    assert report["cleaned_days"] == [DAY0.isoformat(), DAY.isoformat()]
    assert report["skipped_days"] == [DAY1.isoformat()]
    assert report["bot_users"] == 1 and report["dropped"]["bot_user"] == 5
    assert [r[:2] for r in _silver(spark, lake, DAY0)] == [("a1", "u1")]
    assert [r[:2] for r in _silver(spark, lake, DAY)] == [("c1", "u3")]
    assert {k: v for k, v in _silver_files(lake).items() if k.startswith(f"dt={DAY1}")} == day1_files
    incremental = {d: _silver(spark, lake, d) for d in (DAY0, DAY1, DAY)}
    clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=3, force=True)
    assert {d: _silver(spark, lake, d) for d in (DAY0, DAY1, DAY)} == incremental


def test_a_new_day_drops_its_copy_of_an_older_event(spark, tmp_path):
    lake = _bronze_lake(spark, tmp_path / "lake", {DAY1: [bronze_ev("e1", "u1", "i1"), bronze_ev("e2", "u2", "i1")]})
    clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=2)
    day1 = _silver(spark, lake, DAY1)

    later = T0 + dt.timedelta(hours=1)
    _bronze_lake(spark, lake.root, {DAY: [bronze_ev("e1", "u1", "i1", ts=later), bronze_ev("e3", "u3", "i2")]})
    report = clean.run(lake.root, DAY, _bot_cfg(), spark, window_days=2)

    assert report["cleaned_days"] == [DAY.isoformat()] and report["skipped_days"] == [DAY1.isoformat()]
    assert report["dropped"]["duplicate"] == 1
    assert [r[0] for r in _silver(spark, lake, DAY)] == ["e3"]
    assert _silver(spark, lake, DAY1) == day1
    assert json.loads((lake.silver_events(DAY) / clean.CLEAN_MANIFEST).read_text())["counts"] == {
        "rows_in": 2,
        "rows_out": 1,
    }
