"""Split rules on hand-made interactions, ties included; run() writes what they assign."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from pyspark.testing import assertDataFrameEqual

from core.config import load_config
from core.lake import Lake
from jobs import split
from jobs.split import SPLITS, assign_splits, leave_one_out, split_table, temporal

pytestmark = pytest.mark.spark

DDL = "user_id string, item_id string, weight double, n_events long, first_ts timestamp, last_ts timestamp"
T = dt.datetime(2024, 3, 1)


def row(user, item, hours):
    ts = T + dt.timedelta(hours=hours)
    return (user, item, 1.0, 1, ts, ts)


def test_leave_one_out_with_ties_and_short_users(spark):
    inter = spark.createDataFrame(
        [
            row("u1", "a", 0),
            row("u1", "b", 1),
            row("u1", "d", 2),  # tie at hour 2: (first_ts, item_id) puts c before d
            row("u1", "c", 2),
            row("u2", "a", 0),
            row("u2", "b", 1),  # two items < min_user_items: all train
        ],
        DDL,
    )
    out = leave_one_out(inter, min_user_items=3).select("user_id", "item_id", "split")
    assertDataFrameEqual(
        out,
        [
            ("u1", "a", "train"),
            ("u1", "b", "train"),
            ("u1", "c", "valid"),
            ("u1", "d", "test"),
            ("u2", "a", "train"),
            ("u2", "b", "train"),
        ],
    )
    test = split_table(leave_one_out(inter, min_user_items=3), "test")
    assertDataFrameEqual(test, [("u1", "d", T + dt.timedelta(hours=2))])
    assert split_table(leave_one_out(inter, min_user_items=3), "train").columns == inter.columns


def test_temporal_cut_boundaries_and_cold_targets(spark):
    # range 0..100 h, test_fraction 0.1 → test > 90 h, valid_fraction 0.2 → valid in (70 h, 90 h]
    inter = spark.createDataFrame(
        [
            row("u1", "a", 0),
            row("u1", "b", 70),  # on the valid cut: train
            row("u2", "a", 71),  # valid
            row("u2", "b", 90),  # on the test cut: valid
            row("u1", "c", 95),  # test, but c never in train: dropped
            row("u3", "b", 100),  # test, but u3 has no train row: dropped
            row("u1", "a2", 100),  # dropped (cold item)
        ],
        DDL,
    )
    out = temporal(inter, valid_fraction=0.2, test_fraction=0.1).select("user_id", "item_id", "split")
    assertDataFrameEqual(
        out,
        [
            ("u1", "a", "train"),
            ("u1", "b", "train"),
            ("u2", "a", "dropped_valid"),  # u2 has no train row
            ("u2", "b", "dropped_valid"),
            ("u1", "c", "dropped_test"),
            ("u3", "b", "dropped_test"),
            ("u1", "a2", "dropped_test"),
        ],
    )
    kept = temporal(
        spark.createDataFrame([row("u1", "a", 0), row("u2", "a", 10), row("u2", "b", 50), row("u1", "b", 100)], DDL),
        valid_fraction=0.2,
        test_fraction=0.1,
    ).select("user_id", "item_id", "split")
    assertDataFrameEqual(kept, [("u1", "a", "train"), ("u2", "a", "train"), ("u2", "b", "train"), ("u1", "b", "test")])


def test_unknown_protocol_names_the_setting(spark):
    inter = spark.createDataFrame([row("u1", "a", 0)], DDL)
    unchecked = dataclasses.replace(load_config().split, protocol="random")  # Config.replace would refuse it
    with pytest.raises(ValueError, match=r"split\.protocol"):
        assign_splits(inter, unchecked)


def test_run_writes_each_split_and_keeps_the_other_gold_tables(spark, tmp_path):
    lake = Lake(tmp_path / "lake")
    run_date = dt.date(2024, 3, 2)
    rows = [row(user, item, hours) for user in ("u1", "u2") for hours, item in enumerate("abcd")]
    spark.createDataFrame(rows, DDL).write.parquet(str(lake.gold(run_date, "interactions")))
    spark.createDataFrame([("old",)], "user_id string").write.parquet(str(lake.gold(run_date, "split=test")))
    cfg = load_config().replace(split={"protocol": "leave-one-out", "min_user_items": 3})

    report = split.run(lake.root, run_date, cfg, spark)

    labelled = assign_splits(spark.read.parquet(str(lake.gold(run_date, "interactions"))), cfg.split)
    for name in SPLITS:
        written = spark.read.parquet(str(lake.gold(run_date, f"split={name}")))
        assertDataFrameEqual(written, split_table(labelled, name))
    assert report["rows"] == {"train": 4, "valid": 2, "test": 2}
    assert report["users_in_test"] == 2
    assert sorted(p.name for p in lake.gold(run_date).iterdir()) == [
        "interactions",
        "split=test",
        "split=train",
        "split=valid",
    ]
