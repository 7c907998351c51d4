"""Attribution on a hand-built fixture with exact counts: by request id, by window (last touch), late events,
unknown request ids, an item the referenced exposure did not show, anonymous exposures; and run()'s days."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from core.config import load_config
from core.lake import Lake
from core.online import (
    ATTRIBUTED,
    BY_REQUEST,
    BY_WINDOW,
    ITEM_NOT_IN_REQUEST,
    LATE,
    MATCHED,
    UNEXPOSED,
    UNKNOWN_REQUEST,
    attributed_events,
    silver_exposures,
)
from jobs import attribution
from jobs.attribution import OUTPUT_COLUMNS, attribute_events, summarise
from jobs.exposures import SILVER_EXPOSURE_SCHEMA

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 3, 1)
WINDOW_MINUTES = 60


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute)


def exposures_frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Silver exposures: (request_id, ts, user, session, variant, model, version, [(item, position, team)])."""
    data = []
    for request_id, ts, user, session, variant, model, version, items in rows:
        shown = [{"item_id": i, "position": p, "score": 1.0 / p, "team": team} for i, p, team in items]
        unit = user or session
        data.append(
            (
                request_id,
                ts,
                user,
                session,
                "user",
                model,
                version,
                "exp",
                variant,
                False,
                "{}",
                shown,
                len(shown),
                unit,
            )
        )
    return spark.createDataFrame(data, SILVER_EXPOSURE_SCHEMA)


EVENT_SCHEMA = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, session_id string, "
    "price double, quantity int, request_id string, position int"
)


def events_frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Silver events with the request columns: (event_id, user, item, type, ts, request_id)."""
    return spark.createDataFrame(
        [(e, u, i, t, ts, None, 10.0, 1, r, None) for e, u, i, t, ts, r in rows],
        EVENT_SCHEMA,
    )


EXPOSURES = [
    ("R1", at(10), "u1", None, "control", "bpr", "1", [("i1", 1, None), ("i2", 2, None)]),
    ("R2", at(10), "u2", None, "treatment", "sasrec", "2", [("i3", 1, None), ("i4", 2, None)]),
    ("R3", at(10, 30), "u1", None, "control", "bpr", "1", [("i1", 1, None), ("i5", 2, None)]),
    ("R4", at(10), None, "s9", "control", "bpr", "1", [("i6", 1, None)]),
    ("R5", at(8), "u3", None, "treatment", "sasrec", "2", [("i7", 1, None)]),
]
EVENTS = [
    ("e1", "u1", "i1", "click", at(10, 5), "R1"),  # request, position 1
    ("e2", "u1", "i1", "click", at(10, 40), None),  # window: last touch R3 (10:30), not R1
    ("e3", "u1", "i2", "add_to_cart", at(10, 50), "R1"),  # request, 50 min
    ("e4", "u2", "i3", "click", at(11, 30), "R2"),  # request matched but 90 min later: late
    ("e5", "u2", "i4", "purchase", at(10, 20), "RX"),  # unknown request id -> window R2
    ("e6", "u1", "i5", "click", at(10, 45), "R1"),  # R1 did not show i5 -> window R3
    ("e7", "u3", "i7", "click", at(10), None),  # last exposure 2 h earlier: late
    ("e8", "u4", "i1", "view", at(10, 10), None),  # never shown: unexposed
    ("e9", "u9", "i6", "click", at(10, 5), "R4"),  # anonymous exposure, reached by its request id
    ("e10", "u2", "i3", "click", at(9, 55), "R2"),  # the shop's clock 5 min behind: still R2
    ("e11", "u5", "i9", "click", at(10), "RY"),  # unknown request id, nothing to fall back to
    ("e12", "u1", "i2", "click", at(9), None),  # before any exposure: unexposed
]


@pytest.fixture(scope="module")
def attributed(spark):
    frame = attribute_events(events_frame(spark, EVENTS), exposures_frame(spark, EXPOSURES), WINDOW_MINUTES).cache()
    yield frame
    frame.unpersist()


def test_each_event_gets_its_exposure(attributed) -> None:
    assert attributed.columns == list(OUTPUT_COLUMNS)
    got = {
        r["event_id"]: (
            r["attribution_status"],
            r["attribution"],
            r["request_status"],
            r["exposure_request_id"],
            r["exposed_position"],
            r["variant"],
            r["model_name"],
            r["unit_id"],
        )
        for r in attributed.collect()
    }
    assert got == {
        "e1": (ATTRIBUTED, BY_REQUEST, MATCHED, "R1", 1, "control", "bpr", "u1"),
        "e2": (ATTRIBUTED, BY_WINDOW, None, "R3", 1, "control", "bpr", "u1"),
        "e3": (ATTRIBUTED, BY_REQUEST, MATCHED, "R1", 2, "control", "bpr", "u1"),
        "e4": (LATE, None, LATE, None, None, None, None, None),
        "e5": (ATTRIBUTED, BY_WINDOW, UNKNOWN_REQUEST, "R2", 2, "treatment", "sasrec", "u2"),
        "e6": (ATTRIBUTED, BY_WINDOW, ITEM_NOT_IN_REQUEST, "R3", 2, "control", "bpr", "u1"),
        "e7": (LATE, None, None, None, None, None, None, None),
        "e8": (UNEXPOSED, None, None, None, None, None, None, None),
        "e9": (ATTRIBUTED, BY_REQUEST, MATCHED, "R4", 1, "control", "bpr", "s9"),
        "e10": (ATTRIBUTED, BY_REQUEST, MATCHED, "R2", 1, "treatment", "sasrec", "u2"),
        "e11": (UNEXPOSED, None, UNKNOWN_REQUEST, None, None, None, None, None),
        "e12": (UNEXPOSED, None, None, None, None, None, None, None),
    }


def test_counts_are_exact_and_nothing_is_dropped(attributed) -> None:
    counts = summarise(attributed)
    assert counts["events"] == len(EVENTS)
    assert (counts["attributed"], counts["late"], counts["unexposed"]) == (7, 2, 3)
    assert counts["by_method"] == {BY_REQUEST: 4, BY_WINDOW: 3}
    assert counts["with_request_id"] == 8
    assert counts["by_request_status"] == {MATCHED: 4, LATE: 1, UNKNOWN_REQUEST: 2, ITEM_NOT_IN_REQUEST: 1}
    assert counts["attributed_by_event_type"] == {"add_to_cart": 1, "click": 5, "purchase": 1}
    assert counts["attributed_by_arm"] == {"exp/control": 5, "exp/treatment": 2}


def test_a_shorter_window_makes_window_touches_late(spark) -> None:
    short = attribute_events(events_frame(spark, EVENTS), exposures_frame(spark, EXPOSURES), 8)
    status = {r["event_id"]: r["attribution_status"] for r in short.collect()}
    # e2 is 10 min after R3, e5 20 min after R2, e6 15 min after R3, e3 50 min after R1; e1 and e9 5 min
    assert [e for e, s in sorted(status.items()) if s == LATE] == ["e2", "e3", "e4", "e5", "e6", "e7"]


def test_events_without_request_columns_are_attributed_by_window(spark) -> None:
    events = events_frame(spark, EVENTS[:2]).drop("request_id", "position")
    out = attribute_events(events, exposures_frame(spark, EXPOSURES), WINDOW_MINUTES)
    assert {r["event_id"]: (r["attribution"], r["exposure_request_id"]) for r in out.collect()} == {
        "e1": (BY_WINDOW, "R1"),
        "e2": (BY_WINDOW, "R3"),
    }


def test_run_attributes_days_and_redoes_a_day_when_next_days_exposures_land(spark, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    cfg = load_config().replace(attribution={"window_minutes": WINDOW_MINUTES})
    events_frame(spark, EVENTS).write.parquet(str(lake.silver_events(DAY)))
    exposures_frame(spark, EXPOSURES[:4]).write.parquet(str(silver_exposures(lake, DAY)))

    first = attribution.run(lake.root, DAY, cfg, spark, window_days=1)
    day = first["days"][DAY.isoformat()]
    assert day["status"] == "attributed" and day["exposure_days"] == [DAY.isoformat()]
    assert (first["events"], first["attributed"], first["unknown_request"]) == (12, 7, 2)
    assert spark.read.parquet(str(attributed_events(lake, DAY))).count() == 12

    assert attribution.run(lake.root, DAY, cfg, spark, window_days=1)["skipped_days"] == [DAY.isoformat()]

    # R5 (u3's exposure of i7) lands the next day: day 1 is redone and e7 turns from unexposed to late
    exposures_frame(spark, EXPOSURES[4:]).write.parquet(str(silver_exposures(lake, DAY + dt.timedelta(days=1))))
    again = attribution.run(lake.root, DAY, cfg, spark, window_days=1)
    assert again["attributed_days"] == [DAY.isoformat()]
    assert (again["late"], again["unexposed"]) == (2, 3)
