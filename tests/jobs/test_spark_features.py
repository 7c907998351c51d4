"""Features transforms on hand-made silver rows: decayed weights, users, price bands, sequences; run() writes them."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from pyspark.testing import assertDataFrameEqual

from core.config import load_config
from core.lake import Lake
from jobs import features
from jobs.common import BRONZE_EVENT_SCHEMA, ITEM_SCHEMA, day_start, read_days
from jobs.features import GOLD_TABLES, build_gold, price_bands, sequences

pytestmark = pytest.mark.spark

EVENTS_DDL = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, session_id string, "
    "price double, quantity int"
)
ITEMS_DDL = (
    "item_id string, category string, brand string, price double, available boolean, title string, "
    "attributes array<string>"
)
END = dt.datetime(2024, 3, 11)
WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


def ev(user, item, etype, days_before_end, price=None):
    return (
        f"{user}{item}{etype}{days_before_end}",
        user,
        item,
        etype,
        END - dt.timedelta(days=days_before_end),
        None,
        price,
        1,
    )


def test_interactions_users_and_items(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "i1", "view", 10, 4.0),  # one half-life old: 1 * 0.5
            ev("u1", "i1", "purchase", 0, 6.0),  # age 0: 8
            ev("u1", "i2", "click", 20),  # two half-lives: 2 * 0.25
            ev("u2", "i1", "add_to_cart", -1, 2.0),  # after the end: age clipped to 0
        ],
        EVENTS_DDL,
    )
    catalogue = spark.createDataFrame(
        [("i1", "c1", "b1", 10.0, True, "t", ["x"]), ("i3", "c2", None, None, False, None, None)], ITEMS_DDL
    )
    gold = build_gold(events, catalogue, weights=WEIGHTS, half_life_days=10.0, end_ts=END, max_len=5).tables

    d = dt.timedelta
    assertDataFrameEqual(
        gold["interactions"],
        [
            ("u1", "i1", 8.5, 2, END - d(days=10), END),
            ("u1", "i2", 0.5, 1, END - d(days=20), END - d(days=20)),
            ("u2", "i1", 4.0, 1, END + d(days=1), END + d(days=1)),
        ],
    )
    assertDataFrameEqual(
        gold["users"],
        [("u1", 3, 2, 1, END - d(days=20), END, 5.0), ("u2", 1, 1, 0, END + d(days=1), END + d(days=1), 2.0)],
    )
    assertDataFrameEqual(
        gold["items"],
        [
            ("i1", "c1", "b1", 10.0, 1, True, ["x"], 2, 1),
            ("i2", None, None, None, 0, None, None, 1, 0),
            ("i3", "c2", None, None, 0, False, None, 0, 0),
        ],
    )


def test_price_bands_are_quintiles_by_price_then_id(spark):
    rows = [(f"i{n:02d}", float(p)) for n, p in enumerate([5, 1, 1, 9, 3, 7, 2, 8, 4, 6, 10, 3])]
    rows.append(("none", None))
    items = spark.createDataFrame(rows, "item_id string, price double")
    out = price_bands(items).select("item_id", "price_band")
    # 12 priced items → bands of 3, 3, 2, 2, 2 over (price, item_id); an unknown price is band 0
    expected = {
        "i01": 1, "i02": 1, "i06": 1,
        "i04": 2, "i11": 2, "i08": 2,
        "i00": 3, "i09": 3,
        "i05": 4, "i07": 4,
        "i03": 5, "i10": 5,
        "none": 0,
    }  # fmt: skip
    assertDataFrameEqual(out, list(expected.items()))


def test_sequences_order_by_first_time_then_item_and_keep_the_tail(spark):
    t = dt.datetime(2024, 3, 1)
    inter = spark.createDataFrame(
        [
            ("u1", "c", t + dt.timedelta(hours=2)),
            ("u1", "b", t),
            ("u1", "a", t),  # tie with b: item id breaks it
            ("u1", "d", t + dt.timedelta(hours=3)),
            ("u2", "z", t),
        ],
        "user_id string, item_id string, first_ts timestamp",
    )
    assertDataFrameEqual(sequences(inter, max_len=3), [("u1", ["b", "c", "d"]), ("u2", ["z"])])
    assertDataFrameEqual(sequences(inter, max_len=10), [("u1", ["a", "b", "c", "d"]), ("u2", ["z"])])


def test_run_writes_build_golds_tables_and_replaces_the_run_folder(spark, tmp_path):
    """features.run on a silver lake writes exactly build_gold's tables and drops the date's stale splits."""
    lake = Lake(tmp_path / "lake")
    run_date = END.date() - dt.timedelta(days=1)
    days = [run_date - dt.timedelta(days=1), run_date]
    for n, day in enumerate(days):
        rows = [ev("u1", "i1", "view", 2 - n, 4.0), ev("u2", f"i{n + 2}", "purchase", 1 - n)]
        spark.createDataFrame(rows, EVENTS_DDL).write.parquet(str(lake.silver_events(day)))
    spark.createDataFrame([("i1", "c1", "b1", 4.0, True, "t", ["x"])], ITEMS_DDL).write.parquet(
        str(lake.silver_items())
    )
    stale = lake.gold(run_date, "split=train")
    spark.createDataFrame([("u9",)], "user_id string").write.parquet(str(stale))
    cfg = load_config()

    report = features.run(lake.root, run_date, cfg, spark)

    expected = build_gold(
        read_days(spark, lake.silver_events(), days, BRONZE_EVENT_SCHEMA),
        spark.read.schema(ITEM_SCHEMA).parquet(str(lake.silver_items())),
        weights=cfg.events.weights,
        half_life_days=cfg.events.half_life_days,
        end_ts=END,
        max_len=cfg.sequences.max_len,
    ).tables
    assert sorted(p.name for p in lake.gold(run_date).iterdir()) == sorted(GOLD_TABLES)
    for name in GOLD_TABLES:
        written = spark.read.parquet(str(lake.gold(run_date, name)))
        assertDataFrameEqual(written, expected[name])
        assert report["rows"][name] == expected[name].count()
    assert report["end_ts"] == END.isoformat() + "Z"
    assert json.loads(lake.report(run_date, "features").read_text()) == report


def _gold(spark, lake: Lake, run_date: dt.date) -> dict[str, list[tuple]]:
    return {
        name: sorted(tuple(r) for r in spark.read.parquet(str(lake.gold(run_date, name))).collect())
        for name in GOLD_TABLES
    }


def _from_scratch(spark, lake: Lake, days: list[dt.date], end: dt.datetime) -> dict[str, list[tuple]]:
    cfg = load_config()
    tables = build_gold(
        read_days(spark, lake.silver_events(), days, BRONZE_EVENT_SCHEMA),
        spark.read.schema(ITEM_SCHEMA).parquet(str(lake.silver_items())),
        weights=cfg.events.weights,
        half_life_days=cfg.events.half_life_days,
        end_ts=end,
        max_len=cfg.sequences.max_len,
    ).tables
    return {name: sorted(tuple(r) for r in tables[name].collect()) for name in GOLD_TABLES}


def _assert_same_gold(actual: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> None:
    """Equal tables; floats (weights, average prices) equal up to summation-order rounding."""
    for name in GOLD_TABLES:
        assert len(actual[name]) == len(expected[name]), name
        for got, want in zip(actual[name], expected[name], strict=True):
            same = [
                math.isclose(a, b, rel_tol=1e-9) if isinstance(b, float) else a == b
                for a, b in zip(got, want, strict=True)
            ]
            assert all(same), (name, got, want)


def test_reused_daily_aggregates_give_the_from_scratch_gold(spark, tmp_path):
    """A later run date reuses the earlier days' aggregates and writes what a from-scratch build writes."""
    lake = Lake(tmp_path / "lake")
    d1, d2, d3 = (dt.date(2024, 3, 8) + dt.timedelta(days=n) for n in range(3))
    day_rows = {
        d1: [ev("u1", "i1", "view", 3.5, 4.0), ev("u1", "i1", "click", 3.2), ev("u2", "i2", "purchase", 3.1, 9.0)],
        d2: [ev("u1", "i1", "purchase", 2.5, 6.0), ev("u2", "i1", "view", 2.9), ev("u1", "i3", "view", 40.0)],
        d3: [ev("u1", "i2", "add_to_cart", 1.4, 2.0), ev("u2", "i2", "view", 1.2), ev("u1", "i1", "view", 1.05)],
    }
    for day in (d1, d2):
        spark.createDataFrame(day_rows[day], EVENTS_DDL).write.parquet(str(lake.silver_events(day)))
    spark.createDataFrame([("i1", "c1", "b1", 4.0, True, "t", ["x"])], ITEMS_DDL).write.parquet(
        str(lake.silver_items())
    )
    cfg = load_config()
    first = features.run(lake.root, d2, cfg, spark)
    assert first["aggregated_days"] == [d1.isoformat(), d2.isoformat()] and first["reused_days"] == []
    _assert_same_gold(_gold(spark, lake, d2), _from_scratch(spark, lake, [d1, d2], day_start(d3)))

    spark.createDataFrame(day_rows[d3], EVENTS_DDL).write.parquet(str(lake.silver_events(d3)))
    second = features.run(lake.root, d3, cfg, spark)

    assert second["aggregated_days"] == [d3.isoformat()]
    assert second["reused_days"] == [d1.isoformat(), d2.isoformat()] and second["days_from_events"] == []
    assert second["events"] == 9
    _assert_same_gold(_gold(spark, lake, d3), _from_scratch(spark, lake, [d1, d2, d3], END))

    # a rewritten silver day is aggregated again; an event after the run's end is summed from its events
    future = [ev("u3", "i1", "purchase", -0.5, 1.0), ev("u1", "i1", "view", 1.5)]
    spark.createDataFrame(future, EVENTS_DDL).write.mode("overwrite").parquet(str(lake.silver_events(d1)))
    third = features.run(lake.root, d3, cfg, spark)
    assert third["aggregated_days"] == [d1.isoformat()] and third["days_from_events"] == [d1.isoformat()]
    _assert_same_gold(_gold(spark, lake, d3), _from_scratch(spark, lake, [d1, d2, d3], END))
