"""Split: ``gold/<run_date>/interactions`` → ``split=train`` (interaction rows), ``split=valid``,
``split=test`` (``user_id, item_id, ts`` with ts = first interaction time).

Rules (the same as ``evaluation.data.split_interactions``):

* ``leave-one-out``: per user, items ordered by ``(first_ts, item_id)``; a user with at least
  ``min_user_items`` items gives the last to test and the second to last to valid, the rest to
  train; other users are train only.
* ``temporal``: with ``range = t_max - t_min`` of ``first_ts``, test is ``first_ts > t_max -
  test_fraction·range``, valid is ``t_max - (test+valid)_fraction·range < first_ts <= test cut``,
  train the rest; valid/test rows whose user has no train row or whose item is not in train are
  dropped and counted.

The three tables are written to one staging folder first, then each renamed into place (the rest of
``gold/<run_date>`` stays).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.config import Config, SplitConfig
from core.contract import ITEM_COL, PROTOCOLS, TS_COL, USER_COL
from core.lake import Lake
from jobs.common import run_job_main, write_report, write_tables_atomic

SPLIT_COL = "split"
SPLITS = ("train", "valid", "test")
TARGET_COLUMNS = (USER_COL, ITEM_COL, TS_COL)


def leave_one_out(interactions: DataFrame, *, min_user_items: int) -> DataFrame:
    """Interactions with a ``split`` column by the leave-one-out rule."""
    by_user = Window.partitionBy(USER_COL)
    ordered = by_user.orderBy(F.col("first_ts").desc(), F.col(ITEM_COL).desc())
    rank = F.row_number().over(ordered)
    n_items = F.count(F.lit(1)).over(by_user)
    split = (
        F.when(n_items < min_user_items, F.lit("train"))
        .when(rank == 1, F.lit("test"))
        .when(rank == 2, F.lit("valid"))
        .otherwise(F.lit("train"))
    )
    return interactions.withColumn(SPLIT_COL, split)


def temporal(interactions: DataFrame, *, valid_fraction: float, test_fraction: float) -> DataFrame:
    """Interactions with a ``split`` column by the global temporal cut, cold valid/test rows labelled ``dropped_*``.

    ``dropped_valid``/``dropped_test`` mark rows whose user has no train row or whose item is not in train.
    """
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"split.temporal_valid_fraction ({valid_fraction}) and temporal_test_fraction ({test_fraction}) "
            "must be >= 0 and sum to less than 1"
        )
    ts_us = F.unix_micros(F.col("first_ts"))
    bounds = interactions.agg(F.min(ts_us).alias("_t_min"), F.max(ts_us).alias("_t_max"))
    span = F.col("_t_max") - F.col("_t_min")
    test_cut = F.col("_t_max") - span * F.lit(float(test_fraction))
    valid_cut = test_cut - span * F.lit(float(valid_fraction))
    raw = interactions.crossJoin(F.broadcast(bounds)).withColumn(
        SPLIT_COL,
        F.when(ts_us > test_cut, F.lit("test")).when(ts_us > valid_cut, F.lit("valid")).otherwise(F.lit("train")),
    )
    raw = raw.drop("_t_min", "_t_max")
    train = raw.filter(F.col(SPLIT_COL) == "train")
    train_users = train.select(USER_COL).distinct().withColumn("_user_ok", F.lit(True))
    train_items = train.select(ITEM_COL).distinct().withColumn("_item_ok", F.lit(True))
    joined = raw.join(train_users, on=USER_COL, how="left").join(train_items, on=ITEM_COL, how="left")
    cold = F.col("_user_ok").isNull() | F.col("_item_ok").isNull()
    split = F.when((F.col(SPLIT_COL) != "train") & cold, F.concat(F.lit("dropped_"), F.col(SPLIT_COL))).otherwise(
        F.col(SPLIT_COL)
    )
    return joined.withColumn(SPLIT_COL, split).drop("_user_ok", "_item_ok").select(*interactions.columns, SPLIT_COL)


def assign_splits(interactions: DataFrame, split: SplitConfig) -> DataFrame:
    """Label interactions with ``split`` by ``split.protocol``."""
    protocol = split.protocol
    if protocol == "leave-one-out":
        return leave_one_out(interactions, min_user_items=split.min_user_items)
    if protocol == "temporal":
        return temporal(
            interactions,
            valid_fraction=split.temporal_valid_fraction,
            test_fraction=split.temporal_test_fraction,
        )
    raise ValueError(f"split.protocol must be one of {list(PROTOCOLS)}, got {protocol!r}: fix config/recsys.toml")


def split_table(labelled: DataFrame, name: str) -> DataFrame:
    """The rows of one split in its gold schema (train keeps the interaction columns)."""
    rows = labelled.filter(F.col(SPLIT_COL) == name)
    if name == "train":
        return rows.drop(SPLIT_COL)
    return rows.select(F.col(USER_COL), F.col(ITEM_COL), F.col("first_ts").alias(TS_COL))


def split_folder(name: str) -> str:
    """The folder of split ``name`` under ``gold/<run_date>``: ``split=<name>``."""
    return f"{SPLIT_COL}={name}"


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Split ``gold/<run_date>/interactions``; ``window_days`` is unused (the window was fixed by features)."""
    lake = Lake(lake_root)
    source = lake.gold(run_date, "interactions")
    if not source.exists():
        raise FileNotFoundError(f"{source} is absent: run the features job for {run_date} first")
    labelled = assign_splits(spark.read.parquet(str(source)), cfg.split).cache()
    try:
        rows = labelled.groupBy(SPLIT_COL).count().collect()
        counts = {r[SPLIT_COL]: int(r["count"]) for r in rows}
        users = (
            labelled.filter(F.col(SPLIT_COL).isin("valid", "test"))
            .groupBy(SPLIT_COL)
            .agg(F.countDistinct(USER_COL).alias("n"))
        )
        n_users = {r[SPLIT_COL]: int(r["n"]) for r in users.collect()}
        write_tables_atomic(
            {split_folder(name): split_table(labelled, name) for name in SPLITS},
            lake.gold(run_date),
            rows={split_folder(name): counts.get(name, 0) for name in SPLITS},
            replace_folder=False,
        )
    finally:
        labelled.unpersist()
    report = {
        "stage": "split",
        "run_date": run_date.isoformat(),
        "protocol": cfg.split.protocol,
        "rows_in": sum(counts.values()),
        "rows": {name: counts.get(name, 0) for name in SPLITS},
        "dropped_cold": {name: counts.get(f"dropped_{name}", 0) for name in ("valid", "test")},
        "users_in_valid": n_users.get("valid", 0),
        "users_in_test": n_users.get("test", 0),
    }
    write_report(lake, run_date, "split", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(run, "Split gold interactions into train/valid/test.", "mercato-split", None, argv)


if __name__ == "__main__":
    raise SystemExit(main())
