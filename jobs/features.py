"""Features: silver days of the window → ``gold/<run_date>/{interactions, users, items, sequences}``.

* ``interactions``: one row per (user, item); ``weight`` = Σ event weight × 0.5^(age_days /
  half_life_days) with age measured to the end of ``run_date`` (midnight UTC after it) and clipped
  at 0, ``n_events``, ``first_ts``, ``last_ts``.
* ``users``: ``n_events, n_items, n_purchases, first_ts, last_ts, avg_price`` (mean of known prices).
* ``items``: every silver item plus any item seen in events; ``price_band`` = ``ntile(5) over (order
  by price, item_id)`` among items with a price, 0 without; ``popularity`` = distinct users.
* ``sequences``: per user, distinct items ordered by ``(first_ts, item_id)``, the last ``max_len``.

Atomicity: the four tables are written into one staging folder that replaces ``gold/<run_date>``
in a single rename, so a rerun also removes that date's stale ``split=*`` tables: run split after.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.config import Config
from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    BRAND_COL,
    CATEGORY_COL,
    EVENT_TYPE_COL,
    EVENT_TYPES,
    ITEM_COL,
    PRICE_COL,
    TS_COL,
    USER_COL,
    WEIGHT_COL,
)
from core.lake import Lake
from jobs.common import (
    BRONZE_EVENT_SCHEMA,
    ITEM_SCHEMA,
    day_start,
    read_days,
    read_table,
    run_job_main,
    window,
    write_report,
    write_tables_atomic,
)

PURCHASE = "purchase"
N_PRICE_BANDS = 5
GOLD_TABLES = ("interactions", "users", "items", "sequences")
INTERACTION_COLUMNS = (USER_COL, ITEM_COL, WEIGHT_COL, "n_events", "first_ts", "last_ts")
USER_COLUMNS = (USER_COL, "n_events", "n_items", "n_purchases", "first_ts", "last_ts", "avg_price")
GOLD_ITEM_COLUMNS = (
    ITEM_COL,
    CATEGORY_COL,
    BRAND_COL,
    PRICE_COL,
    "price_band",
    AVAILABLE_COL,
    ATTRIBUTES_COL,
    "popularity",
    "n_purchases",
)
SEQUENCE_COLUMNS = (USER_COL, "items")


def decayed_weight(
    weights: Mapping[str, float],
    half_life_days: float,
    end_ts: dt.datetime,
    *,
    type_col: str = EVENT_TYPE_COL,
    ts_col: str = TS_COL,
) -> Column:
    """Event weight × 0.5^(age_days / half_life_days), age to ``end_ts`` (naive UTC) clipped at 0."""
    if half_life_days <= 0:
        raise ValueError(f"events.half_life_days must be positive, got {half_life_days}")
    end_us = int((end_ts - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    age_days = F.greatest(F.lit(end_us) - F.unix_micros(F.col(ts_col)), F.lit(0)) / F.lit(86_400_000_000.0)
    base = F.create_map(*[x for k, v in weights.items() for x in (F.lit(k), F.lit(float(v)))])
    return base[F.col(type_col)] * F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))


def user_item_stats(
    events: DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float,
    end_ts: dt.datetime,
    purchase_type: str = PURCHASE,
) -> DataFrame:
    """One row per (user, item): the interaction columns plus purchase and price sums for users/items."""
    unknown = sorted(set(EVENT_TYPES) - set(weights))
    if unknown:
        raise ValueError(f"events.weights lacks event type(s) {unknown}: add them to config/recsys.toml [events]")
    w = decayed_weight(weights, half_life_days, end_ts)
    return events.groupBy(USER_COL, ITEM_COL).agg(
        F.sum(w).alias(WEIGHT_COL),
        F.count(F.lit(1)).alias("n_events"),
        F.min(TS_COL).alias("first_ts"),
        F.max(TS_COL).alias("last_ts"),
        F.sum(F.when(F.col(EVENT_TYPE_COL) == purchase_type, 1).otherwise(0)).alias("n_purchases"),
        F.sum(PRICE_COL).alias("_price_sum"),
        F.count(PRICE_COL).alias("_price_n"),
    )


def interactions(stats: DataFrame) -> DataFrame:
    return stats.select(*INTERACTION_COLUMNS)


def users(stats: DataFrame) -> DataFrame:
    agg = stats.groupBy(USER_COL).agg(
        F.sum("n_events").alias("n_events"),
        F.count(F.lit(1)).alias("n_items"),
        F.sum("n_purchases").alias("n_purchases"),
        F.min("first_ts").alias("first_ts"),
        F.max("last_ts").alias("last_ts"),
        (F.sum("_price_sum") / F.sum("_price_n")).alias("avg_price"),
    )
    return agg.select(*USER_COLUMNS)


def price_bands(items: DataFrame, *, n_bands: int = N_PRICE_BANDS, price_col: str = PRICE_COL) -> DataFrame:
    """``price_band``: ``ntile(n_bands)`` over ``(price, item_id)`` among priced items, 0 when the price is unknown.

    One global window: fine for catalogues, not meant for event-sized tables.
    """
    w = Window.partitionBy(F.col(price_col).isNull()).orderBy(F.col(price_col), F.col(ITEM_COL))
    band = F.when(F.col(price_col).isNull(), F.lit(0)).otherwise(F.ntile(n_bands).over(w))
    return items.withColumn("price_band", band.cast("int"))


def gold_items(catalogue: DataFrame, stats: DataFrame, *, n_bands: int = N_PRICE_BANDS) -> DataFrame:
    """Silver items (plus items only seen in events) with price band, popularity and purchases."""
    per_item = stats.groupBy(ITEM_COL).agg(
        F.count(F.lit(1)).alias("popularity"), F.sum("n_purchases").alias("n_purchases")
    )
    joined = catalogue.select(*[c for c in ITEM_SCHEMA.fieldNames()]).join(per_item, on=ITEM_COL, how="full_outer")
    joined = joined.withColumns(
        {
            "popularity": F.coalesce(F.col("popularity"), F.lit(0)).cast("long"),
            "n_purchases": F.coalesce(F.col("n_purchases"), F.lit(0)).cast("long"),
        }
    )
    return price_bands(joined, n_bands=n_bands).select(*GOLD_ITEM_COLUMNS)


def sequences(interactions: DataFrame, *, max_len: int) -> DataFrame:
    """Per user, distinct items by ``(first_ts, item_id)``, keeping the last ``max_len``."""
    if max_len < 1:
        raise ValueError(f"sequences.max_len must be >= 1, got {max_len}")
    ordered = F.sort_array(F.collect_list(F.struct(F.col("first_ts"), F.col(ITEM_COL))))
    per_user = interactions.groupBy(USER_COL).agg(ordered.alias("_seq"))
    n = F.size("_seq")
    start = F.greatest(n - F.lit(max_len) + F.lit(1), F.lit(1))
    items = F.transform(F.slice(F.col("_seq"), start, F.least(n, F.lit(max_len))), lambda s: s[ITEM_COL])
    return per_user.select(F.col(USER_COL), items.alias("items"))


@dataclass(frozen=True)
class GoldTables:
    """The gold tables of one run by name (``GOLD_TABLES``) and the per (user, item) ``stats`` they all read."""

    stats: DataFrame
    tables: dict[str, DataFrame]


def build_gold(
    events: DataFrame,
    catalogue: DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float,
    end_ts: dt.datetime,
    max_len: int,
) -> GoldTables:
    """All gold tables of one run from silver events and items (cache ``stats`` when writing them all)."""
    stats = user_item_stats(events, weights=weights, half_life_days=half_life_days, end_ts=end_ts)
    interaction_rows = interactions(stats)
    tables = {
        "interactions": interaction_rows,
        "users": users(stats),
        "items": gold_items(catalogue, stats),
        "sequences": sequences(interaction_rows, max_len=max_len),
    }
    return GoldTables(stats=stats, tables=tables)


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Build ``gold/<run_date>`` from the silver days in the window (``None``: every day up to run_date)."""
    lake = Lake(lake_root)
    days = window(run_date, window_days, Lake.partition_days(lake.silver_events()))
    if not days:
        raise FileNotFoundError(
            f"no silver/events partitions in the {window_days or 'full'}-day window ending {run_date} under "
            f"{lake.silver_events()}: run clean for these days first"
        )
    events = read_days(spark, lake.silver_events(), days, BRONZE_EVENT_SCHEMA)
    catalogue = read_table(spark, lake.silver_items(), ITEM_SCHEMA)
    end_ts = day_start(run_date + dt.timedelta(days=1))
    weights = dict(cfg.events.weights)
    gold = build_gold(
        events,
        catalogue,
        weights=weights,
        half_life_days=cfg.events.half_life_days,
        end_ts=end_ts,
        max_len=cfg.sequences.max_len,
    )
    stats = gold.stats.cache()
    target = lake.gold(run_date)
    try:
        totals = stats.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(USER_COL).alias("users")).first()
        n_stats, n_users = int(totals["n"]), int(totals["users"])
        counts = {"interactions": n_stats, "users": n_users, "sequences": n_users}
        # The item count is known only once written; the interaction count sizes its files.
        file_rows = {name: counts.get(name, n_stats) for name in GOLD_TABLES}
        write_tables_atomic(gold.tables, target, rows=file_rows)
    finally:
        stats.unpersist()
    counts["items"] = spark.read.parquet(str(target / "items")).count()
    report = {
        "stage": "features",
        "run_date": run_date.isoformat(),
        "window_days": window_days,
        "days": [d.isoformat() for d in days],
        "end_ts": end_ts.isoformat() + "Z",
        "weights": weights,
        "half_life_days": cfg.events.half_life_days,
        "rows": counts,
    }
    write_report(lake, run_date, "features", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(run, "Build the gold feature tables of one run date.", "mercato-features", None, argv)


if __name__ == "__main__":
    raise SystemExit(main())
