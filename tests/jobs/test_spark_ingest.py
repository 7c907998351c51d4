"""Ingest transforms on hand-made JSON lines: typing, quarantine, event ids; run() writes each day as they say."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from core.config import load_config
from core.contract import EVENT_COLUMNS, ITEM_COLUMNS
from core.lake import Lake
from jobs import ingest
from jobs.common import rejected_path
from jobs.ingest import (
    BRONZE_EVENT_COLUMNS,
    REASON_COL,
    SOURCE_MANIFEST,
    accepted,
    ingest_events,
    ingest_items,
    rejected,
)

pytestmark = pytest.mark.spark

GOOD = '{"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2024-03-01T10:00:00+02:00", "price": 12.5, "quantity": 2}'
NO_ID = '{"user_id": "u2", "item_id": "i2", "event_type": "purchase", "ts": "2024-03-01T08:00:00Z", "session_id": "s9", "price": "3.5"}'
BAD_PRICE = '{"event_id": "e3", "user_id": "u3", "item_id": "i3", "event_type": "click", "ts": "2024-03-01T09:00:00.250Z", "price": "n/a", "quantity": "x"}'
NO_TS = '{"event_id": "e4", "user_id": "u4", "item_id": "i4", "event_type": "view"}'
BAD_TS = '{"event_id": "e5", "user_id": "u5", "item_id": "i5", "event_type": "view", "ts": "yesterday"}'
LINES = [
    GOOD,
    NO_ID,
    BAD_PRICE,
    NO_TS,
    BAD_TS,
    "not json at all",
    '[{"user_id": "x"}]',
    "42",
    "",
    '{"user_id": "u6", "ts": ',
]


def _lines(spark, values):
    return spark.createDataFrame([(v, "a.jsonl") for v in values], "value string, source_file string")


def test_events_are_typed_and_bad_lines_quarantined(spark):
    labelled = ingest_events(_lines(spark, LINES)).cache()
    sha = hashlib.sha1(b"u2|i2|purchase|2024-03-01T08:00:00.000000Z|s9").hexdigest()
    expected = spark.createDataFrame(
        [
            ("e1", "u1", "i1", "view", dt.datetime(2024, 3, 1, 8), None, 12.5, 2),
            (sha, "u2", "i2", "purchase", dt.datetime(2024, 3, 1, 8), "s9", 3.5, None),
            ("e3", "u3", "i3", "click", dt.datetime(2024, 3, 1, 9, 0, 0, 250000), None, None, None),
            ("e4", "u4", "i4", "view", None, None, None, None),
        ],
        "event_id string, user_id string, item_id string, event_type string, ts timestamp, "
        "session_id string, price double, quantity int",
    )
    assertDataFrameEqual(accepted(labelled, EVENT_COLUMNS), expected)

    quarantined = rejected(labelled).select("raw", "reason")
    assertDataFrameEqual(
        quarantined,
        [
            (BAD_TS, "unparseable_ts"),
            ("not json at all", "not_json_object"),
            ('[{"user_id": "x"}]', "not_json_object"),
            ("42", "not_json_object"),
            ('{"user_id": "u6", "ts": ', "not_json_object"),
        ],
    )
    coerced = labelled.filter(F.col(REASON_COL).isNull()).agg(F.sum("price_invalid"), F.sum("quantity_invalid"))
    assert coerced.first() == (1, 1)
    assert labelled.filter(F.col(REASON_COL) == "blank_line").count() == 1


def test_events_keep_the_request_they_followed(spark):
    """``request_id`` and ``position`` (sent back by the shop after a recommendation) reach bronze; a position that
    is not an integer >= 1 and a blank request id are null."""
    lines = [
        '{"user_id": "u1", "item_id": "i1", "event_type": "click", "ts": "2024-03-01T08:00:00Z", '
        '"request_id": " 01J9Z3ABC ", "position": 3}',
        '{"user_id": "u2", "item_id": "i2", "event_type": "click", "ts": "2024-03-01T08:00:00Z", '
        '"request_id": "", "position": 0}',
        '{"user_id": "u3", "item_id": "i3", "event_type": "view", "ts": "2024-03-01T08:00:00Z", "position": "x"}',
    ]
    labelled = ingest_events(_lines(spark, lines))
    assert tuple(accepted(labelled, BRONZE_EVENT_COLUMNS).columns) == (*EVENT_COLUMNS, "request_id", "position")
    rows = labelled.select("user_id", "request_id", "position").orderBy("user_id").collect()
    assert [tuple(r) for r in rows] == [("u1", "01J9Z3ABC", 3), ("u2", None, None), ("u3", None, None)]


def test_items_keep_lists_and_flag_uncastable_fields(spark):
    lines = [
        '{"item_id": "i1", "category": "shoes", "brand": "b", "price": 9.5, "available": true, "attributes": ["red", "42"]}',
        '{"item_id": "i2", "price": "cheap", "available": "maybe", "attributes": "red"}',
        "oops",
    ]
    labelled = ingest_items(_lines(spark, lines)).cache()
    assertDataFrameEqual(
        accepted(labelled, ITEM_COLUMNS),
        spark.createDataFrame(
            [("i1", "shoes", "b", 9.5, True, None, ["red", "42"]), ("i2", None, None, None, None, None, None)],
            "item_id string, category string, brand string, price double, available boolean, title string, "
            "attributes array<string>",
        ),
    )
    flags = labelled.filter(F.col("item_id") == "i2").select("price_invalid", "available_invalid", "attributes_invalid")
    assert flags.first() == (1, 1, 1)
    assert rejected(labelled).count() == 1


def test_run_writes_every_changed_day_with_its_manifest_and_quarantine(spark, tmp_path):
    """Days ingested together give each day what ingesting its own lines gives; unchanged days are skipped."""
    lake = Lake(tmp_path / "lake")
    d1, d2, d3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
    landed = {d1: [GOOD, NO_ID, "not json at all"], d2: [BAD_PRICE, NO_TS, ""], d3: ["42", BAD_TS]}
    for day, lines in landed.items():
        lake.landing_events(day).mkdir(parents=True)
        (lake.landing_events(day) / "sim-0.jsonl").write_text("\n".join(lines) + "\n")

    report = ingest.run(lake.root, d3, load_config(), spark, window_days=3)

    assert report["ingested_days"] == [d1.isoformat(), d2.isoformat(), d3.isoformat()]
    for day, lines in landed.items():
        expected = ingest_events(_lines(spark, lines)).cache()
        bronze = spark.read.parquet(str(lake.bronze_events(day)))
        assert {r[0] for r in bronze.select("source_file").distinct().collect()} <= {"sim-0.jsonl"}, "the landing file"
        assertDataFrameEqual(bronze.drop("source_file"), accepted(expected, BRONZE_EVENT_COLUMNS))
        manifest = json.loads((lake.bronze_events(day) / SOURCE_MANIFEST).read_text())
        assert manifest["counts"] == {k: v for k, v in report["days"][day.isoformat()].items() if k != "status"}
        quarantine = rejected_path(lake, day)
        if rejected(expected).count():
            written = spark.read.parquet(str(quarantine)).select("raw", "reason")
            assertDataFrameEqual(written, rejected(expected).select("raw", "reason"))
        else:
            assert not quarantine.exists()
        expected.unpersist()
    assert spark.read.parquet(str(lake.bronze_events(d3))).count() == 0  # every line rejected: an empty day

    (lake.landing_events(d1) / "sim-0.jsonl").write_text(GOOD + "\n")
    again = ingest.run(lake.root, d3, load_config(), spark, window_days=3)
    assert again["ingested_days"] == [d1.isoformat()] and again["skipped_days"] == [d2.isoformat(), d3.isoformat()]
    assert spark.read.parquet(str(lake.bronze_events(d1))).count() == 1
    assert not rejected_path(lake, d1).exists()  # its bad line is gone, and so is its quarantine
