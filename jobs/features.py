"""Features: silver days of the window → ``gold/<run_date>/{interactions, users, items, sequences}``.

* ``interactions``: one row per (user, item); ``weight`` = Σ event weight × 0.5^(age_days /
  half_life_days) with age measured to the end of ``run_date`` (midnight UTC after it) and clipped
  at 0, ``n_events``, ``first_ts``, ``last_ts``.
* ``users``: ``n_events, n_items, n_purchases, first_ts, last_ts, avg_price`` (mean of known prices).
* ``items``: every silver item plus any item seen in events; ``price_band`` = ``ntile(5) over (order
  by price, item_id)`` among items with a price, 0 without; ``popularity`` = distinct users.
* ``sequences``: per user, distinct items ordered by ``(first_ts, item_id)``, the last ``max_len``.

Incremental: the decayed weight factorises (Σ w·0.5^((end−t)/h) = 0.5^((end−a)/h)·Σ w·0.5^((a−t)/h)),
so each silver day is summed once into per (user, item) rows anchored at the pair's last event of
that day (``silver/interactions_daily/dt=…``, with ``_FEATURES.json`` naming the silver partition's
files and the parameters it was built with). A run date rebuilds only the days whose silver
partition changed and reads every window day's small aggregates in one read; a day holding an event
after the run's end (where the age is clipped) is summed from its events instead.

Atomicity: the four tables are written into one staging folder that replaces ``gold/<run_date>``
in a single rename, so a rerun also removes that date's stale ``split=*`` tables: run split after.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import Config
from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    BRAND_COL,
    CATEGORY_COL,
    DT_COL,
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
    folder_fingerprint,
    read_days,
    read_json,
    read_table,
    run_job_main,
    window,
    write_partitions_atomic,
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
#: The per (user, item) columns the gold tables are built from.
STATS_COLUMNS = (
    USER_COL,
    ITEM_COL,
    WEIGHT_COL,
    "n_events",
    "first_ts",
    "last_ts",
    "n_purchases",
    "_price_sum",
    "_price_n",
)
ANCHOR_WEIGHT_COL = "anchor_weight"
DAILY_MANIFEST = "_FEATURES.json"
#: Part of the daily aggregates' parameters: bump it when their columns or meaning change.
DAILY_FORMAT = 1
DAILY_SCHEMA = T.StructType(
    [
        T.StructField(USER_COL, T.StringType()),
        T.StructField(ITEM_COL, T.StringType()),
        T.StructField(ANCHOR_WEIGHT_COL, T.DoubleType()),
        T.StructField("n_events", T.LongType()),
        T.StructField("first_ts", T.TimestampType()),
        T.StructField("last_ts", T.TimestampType()),
        T.StructField("n_purchases", T.LongType()),
        T.StructField("_price_sum", T.DoubleType()),
        T.StructField("_price_n", T.LongType()),
    ]
)


MICROS_PER_DAY = 86_400_000_000.0


def _decay(weights: Mapping[str, float], half_life_days: float, age_days: Column, *, type_col: str) -> Column:
    if half_life_days <= 0:
        raise ValueError(f"events.half_life_days must be positive, got {half_life_days}")
    base = F.create_map(*[x for k, v in weights.items() for x in (F.lit(k), F.lit(float(v)))])
    return base[F.col(type_col)] * F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))


def _micros(ts: dt.datetime) -> int:
    return int((ts - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000


def decayed_weight(
    weights: Mapping[str, float],
    half_life_days: float,
    end_ts: dt.datetime,
    *,
    type_col: str = EVENT_TYPE_COL,
    ts_col: str = TS_COL,
) -> Column:
    """Event weight × 0.5^(age_days / half_life_days), age to ``end_ts`` (naive UTC) clipped at 0."""
    age_us = F.greatest(F.lit(_micros(end_ts)) - F.unix_micros(F.col(ts_col)), F.lit(0))
    return _decay(weights, half_life_days, age_us / F.lit(MICROS_PER_DAY), type_col=type_col)


def _check_weights(weights: Mapping[str, float]) -> None:
    unknown = sorted(set(EVENT_TYPES) - set(weights))
    if unknown:
        raise ValueError(f"events.weights lacks event type(s) {unknown}: add them to config/recsys.toml [events]")


def user_item_stats(
    events: DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float,
    end_ts: dt.datetime,
    purchase_type: str = PURCHASE,
) -> DataFrame:
    """One row per (user, item): the interaction columns plus purchase and price sums for users/items."""
    _check_weights(weights)
    w = decayed_weight(weights, half_life_days, end_ts)
    return events.groupBy(USER_COL, ITEM_COL).agg(F.sum(w).alias(WEIGHT_COL), *_event_sums(purchase_type))


def _event_sums(purchase_type: str) -> list[Column]:
    return [
        F.count(F.lit(1)).alias("n_events"),
        F.min(TS_COL).alias("first_ts"),
        F.max(TS_COL).alias("last_ts"),
        F.sum(F.when(F.col(EVENT_TYPE_COL) == purchase_type, 1).otherwise(0)).alias("n_purchases"),
        F.sum(PRICE_COL).alias("_price_sum"),
        F.count(PRICE_COL).alias("_price_n"),
    ]


def daily_user_item_stats(
    events: DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float,
    purchase_type: str = PURCHASE,
    day_col: str = DT_COL,
) -> DataFrame:
    """Per landing day and (user, item): :func:`user_item_stats` with the weight decayed to the pair's ``last_ts``.

    ``anchor_weight`` = Σ w·0.5^((last_ts − t)/h) over the day's events of the pair (every factor
    ≤ 1). The decay factorises, so at any ``end_ts ≥ last_ts`` the pair's weight from that day is
    ``anchor_weight · 0.5^((end_ts − last_ts)/h)`` (:func:`stats_at`): a run date reuses the day's
    rows instead of its events.
    """
    _check_weights(weights)
    anchored = events.withColumn("_anchor", F.max(TS_COL).over(Window.partitionBy(day_col, USER_COL, ITEM_COL)))
    age_days = (F.unix_micros(F.col("_anchor")) - F.unix_micros(F.col(TS_COL))) / F.lit(MICROS_PER_DAY)
    w = _decay(weights, half_life_days, age_days, type_col=EVENT_TYPE_COL)
    return anchored.groupBy(day_col, USER_COL, ITEM_COL).agg(
        F.sum(w).alias(ANCHOR_WEIGHT_COL), *_event_sums(purchase_type)
    )


def stats_at(daily: DataFrame, *, half_life_days: float, end_ts: dt.datetime) -> DataFrame:
    """Daily rows (``last_ts ≤ end_ts``) as partial :func:`user_item_stats` rows at ``end_ts`` (merge them with :func:`merge_stats`)."""
    if half_life_days <= 0:
        raise ValueError(f"events.half_life_days must be positive, got {half_life_days}")
    age_days = (F.lit(_micros(end_ts)) - F.unix_micros(F.col("last_ts"))) / F.lit(MICROS_PER_DAY)
    factor = F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))
    return daily.select(USER_COL, ITEM_COL, (F.col(ANCHOR_WEIGHT_COL) * factor).alias(WEIGHT_COL), *STATS_COLUMNS[3:])


def merge_stats(partials: DataFrame) -> DataFrame:
    """Partial :func:`user_item_stats` rows of the same pairs (from different days) merged into one row per pair."""
    return partials.groupBy(USER_COL, ITEM_COL).agg(
        F.sum(WEIGHT_COL).alias(WEIGHT_COL),
        F.sum("n_events").alias("n_events"),
        F.min("first_ts").alias("first_ts"),
        F.max("last_ts").alias("last_ts"),
        F.sum("n_purchases").alias("n_purchases"),
        F.sum("_price_sum").alias("_price_sum"),
        F.sum("_price_n").alias("_price_n"),
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
    return gold_tables(stats, catalogue, max_len=max_len)


def gold_tables(stats: DataFrame, catalogue: DataFrame, *, max_len: int) -> GoldTables:
    """The gold tables from the per (user, item) ``stats`` (:func:`user_item_stats` or merged daily rows)."""
    interaction_rows = interactions(stats)
    tables = {
        "interactions": interaction_rows,
        "users": users(stats),
        "items": gold_items(catalogue, stats),
        "sequences": sequences(interaction_rows, max_len=max_len),
    }
    return GoldTables(stats=stats, tables=tables)


@dataclass(frozen=True)
class DailyCache:
    """Where each window day's daily aggregates stand: built this run, reused, or not usable at this run date."""

    aggregated: list[dt.date]
    reused: list[dt.date]
    from_events: list[dt.date]
    manifests: dict[dt.date, dict[str, Any]]


def daily_params(weights: Mapping[str, float], half_life_days: float) -> dict[str, Any]:
    """What daily aggregates depend on besides their silver day (a change rebuilds them all)."""
    return {
        "format": DAILY_FORMAT,
        "weights": {k: float(v) for k, v in sorted(weights.items())},
        "half_life_days": float(half_life_days),
        "purchase_type": PURCHASE,
    }


def refresh_daily(
    spark: SparkSession, lake: Lake, days: list[dt.date], params: dict[str, Any], *, force: bool = False
) -> DailyCache:
    """Build the daily aggregates of the ``days`` whose silver partition or ``params`` changed (one read, one write).

    Each ``silver/interactions_daily/dt=…`` holds ``_FEATURES.json``: the silver partition's file
    fingerprint it was built from, ``params``, its row and event counts and its latest ``ts``.
    """
    sources = {day: folder_fingerprint(lake.silver_events(day)) for day in days}
    manifests: dict[dt.date, dict[str, Any]] = {}
    stale = []
    for day in days:
        manifest = read_json(lake.daily_interactions(day) / DAILY_MANIFEST)
        if force or manifest is None or manifest.get("source") != sources[day] or manifest.get("params") != params:
            stale.append(day)
        else:
            manifests[day] = manifest
    if stale:
        events = read_days(spark, lake.silver_events(), stale, BRONZE_EVENT_SCHEMA)
        daily = daily_user_item_stats(
            events, weights=params["weights"], half_life_days=params["half_life_days"]
        ).cache()
        try:
            totals = (
                daily.groupBy(DT_COL)
                .agg(
                    F.count(F.lit(1)).alias("rows"),
                    F.sum("n_events").alias("events"),
                    F.unix_micros(F.max("last_ts")).alias("max_ts_us"),
                )
                .collect()
            )
            found = {r[DT_COL]: r for r in totals}
            built_at = dt.datetime.now(dt.UTC).isoformat()
            for day in stale:
                r = found.get(day)
                manifests[day] = {
                    "source": sources[day],
                    "params": params,
                    "rows": int(r["rows"]) if r else 0,
                    "events": int(r["events"]) if r else 0,
                    "max_ts_us": int(r["max_ts_us"]) if r else None,
                    "built_at": built_at,
                }
            write_partitions_atomic(
                daily,
                DT_COL,
                {day.isoformat(): lake.daily_interactions(day) for day in stale},
                json_files={day.isoformat(): {DAILY_MANIFEST: manifests[day]} for day in stale},
            )
        finally:
            daily.unpersist()
    return DailyCache(
        aggregated=stale,
        reused=[day for day in days if day not in set(stale)],
        from_events=[],
        manifests=manifests,
    )


def window_stats(
    spark: SparkSession, lake: Lake, days: list[dt.date], params: dict[str, Any], end_ts: dt.datetime, cache: DailyCache
) -> tuple[DataFrame, DailyCache]:
    """Per (user, item) stats of the window at ``end_ts`` from the daily aggregates in one read.

    A day holding an event after ``end_ts`` (its age is clipped at 0, which does not factorise) is
    summed from its silver events instead.
    """
    end_us = _micros(end_ts)
    late = [day for day in days if (cache.manifests[day].get("max_ts_us") or 0) > end_us]
    reusable = [day for day in days if day not in set(late)]
    partials = stats_at(
        read_days(spark, lake.daily_interactions(), reusable, DAILY_SCHEMA),
        half_life_days=params["half_life_days"],
        end_ts=end_ts,
    )
    if late:
        events = read_days(spark, lake.silver_events(), late, BRONZE_EVENT_SCHEMA)
        direct = user_item_stats(
            events, weights=params["weights"], half_life_days=params["half_life_days"], end_ts=end_ts
        )
        partials = partials.unionByName(direct.select(*STATS_COLUMNS))
    return merge_stats(partials), replace(cache, from_events=late)


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Build ``gold/<run_date>`` from the silver days in the window (``None``: every day up to run_date).

    The window is summed from per-day (user, item) aggregates kept beside silver
    (``silver/interactions_daily``): only the days whose silver partition changed since their
    aggregate was built are read as events (``aggregated_days``); the others are reused
    (``reused_days``). ``force`` rebuilds every day's aggregate.
    """
    lake = Lake(lake_root)
    days = window(run_date, window_days, Lake.partition_days(lake.silver_events()))
    if not days:
        raise FileNotFoundError(
            f"no silver/events partitions in the {window_days or 'full'}-day window ending {run_date} under "
            f"{lake.silver_events()}: run clean for these days first"
        )
    end_ts = day_start(run_date + dt.timedelta(days=1))
    weights = dict(cfg.events.weights)
    params = daily_params(weights, cfg.events.half_life_days)
    daily = refresh_daily(spark, lake, days, params, force=force)
    stats_rows, daily = window_stats(spark, lake, days, params, end_ts, daily)
    catalogue = read_table(spark, lake.silver_items(), ITEM_SCHEMA)
    gold = gold_tables(stats_rows, catalogue, max_len=cfg.sequences.max_len)
    stats = gold.stats.cache()
    target = lake.gold(run_date)
    try:
        totals = stats.agg(
            F.count(F.lit(1)).alias("n"), F.countDistinct(USER_COL).alias("users"), F.sum("n_events").alias("events")
        ).first()
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
        "aggregated_days": [d.isoformat() for d in daily.aggregated],
        "reused_days": [d.isoformat() for d in daily.reused],
        "days_from_events": [d.isoformat() for d in daily.from_events],
        "events": int(totals["events"] or 0),
        "end_ts": end_ts.isoformat() + "Z",
        "weights": weights,
        "half_life_days": cfg.events.half_life_days,
        "rows": counts,
    }
    write_report(lake, run_date, "features", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(
        run,
        "Build the gold feature tables of one run date.",
        "mercato-features",
        None,
        argv,
        force_help="rebuild every day's (user, item) aggregates",
    )


if __name__ == "__main__":
    raise SystemExit(main())
