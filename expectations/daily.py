"""Day-level facts of the raw feed that no row-level expectation can see, as a table GX validates.

For every day the raw gate checks, one row: ``events`` (bronze rows that day, 0 when it has no
partition); the day's own shares of what the row-level suite tolerates up to a fraction
(``unknown_event_type_share``, ``missing_price_share``, ``unknown_item_share``), so that a bad day
is not passed for being judged together with good ones; ``trailing_median`` and ``volume_ratio`` (events ÷ the median of the previous
``volume_lookback_days`` days with data, once ``volume_min_history_days`` of them exist; null for a
day without events, which ``events`` ≥ ``min_day_events`` already fails), and the
drift of that day against its *baseline*, the previous day with data (within the look-back) that
passed its gate or is judged in the same run: ``psi_event_type`` (event-type mix) and
``psi_item_popularity`` (the baseline's ``drift_top_items`` items plus one bin for all others),
both null when either day has fewer than ``drift_min_events`` events. The suite
``raw_days`` (``expectations.suites``) holds each column to its ``[validation]`` bounds; a null is
"not judged", which GX leaves out.

Population stability index, over bins ``i`` with shares ``e_i`` (baseline) and ``a_i`` (day), each
floored at ``PSI_EPSILON`` so an empty bin stays finite::

    PSI = Σ_i (a_i − e_i) · ln(a_i / e_i)

(< 0.1 little change, 0.1–0.25 some, > 0.25 a shift, by the usual reading).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import ValidationConfig
from core.contract import DT_COL, EVENT_TYPE_COL, EVENT_TYPES, ITEM_COL, PRICE_COL
from expectations.suites import UNKNOWN_ITEM_COL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PSI_EPSILON = 1e-4
OTHER_BIN = "(other)"
NULL_BIN = "(null)"

#: Per-day shares of the day table and the fact (``day_facts``) each one divides by the day's events.
SHARES: dict[str, str] = {
    "unknown_event_type_share": "unknown_event_type",
    "missing_price_share": "missing_price",
    "unknown_item_share": "unknown_item",
}

#: Columns of the day table (one row per checked day), in order.
DAY_COLUMNS: tuple[str, ...] = (
    "dt",
    "events",
    *SHARES,
    "trailing_median",
    "volume_ratio",
    "baseline_day",
    "psi_event_type",
    "psi_item_popularity",
)


def psi(expected: Mapping[str, float], actual: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or shares per bin; bins = union)."""
    total_e, total_a = sum(expected.values()), sum(actual.values())
    if total_e <= 0 or total_a <= 0:
        raise ValueError("psi needs a positive total on both sides")
    value = 0.0
    for key in set(expected) | set(actual):
        e = max(expected.get(key, 0) / total_e, epsilon)
        a = max(actual.get(key, 0) / total_a, epsilon)
        value += (a - e) * math.log(a / e)
    return value


def item_bins(top_items: Mapping[str, int], total: int, counts: Mapping[str, int]) -> dict[str, int]:
    """Counts over the bins ``top_items`` + ``(other)``: ``counts`` of those items, the rest of ``total`` as other."""
    bins = {item: int(counts.get(item, 0)) for item in top_items}
    bins[OTHER_BIN] = max(int(total) - sum(bins.values()), 0)
    return bins


def trailing_median(day: dt.date, events: Mapping[dt.date, int], lookback: int, min_history: int) -> float | None:
    """Median events of the previous ``lookback`` days that have any, or None with fewer than ``min_history``."""
    history = [events[d] for d in (day - dt.timedelta(days=k) for k in range(1, lookback + 1)) if events.get(d, 0) > 0]
    return float(statistics.median(history)) if len(history) >= min_history else None


def find_baseline(day: dt.date, lookback: int, has_distribution: Callable[[dt.date], bool]) -> dt.date | None:
    """The nearest earlier day within ``lookback`` whose distribution may serve as baseline."""
    for k in range(1, lookback + 1):
        candidate = day - dt.timedelta(days=k)
        if has_distribution(candidate):
            return candidate
    return None


def day_rows(
    days: list[dt.date],
    facts: Mapping[dt.date, Mapping[str, int]],
    v: ValidationConfig,
    events: Mapping[dt.date, int] | None = None,
    distributions: Mapping[dt.date, Mapping[str, Any]] | None = None,
    current_items: Mapping[dt.date, Mapping[str, int]] | None = None,
    baselines: Mapping[dt.date, dt.date | None] | None = None,
) -> list[dict[str, Any]]:
    """One row of ``DAY_COLUMNS`` per day: its shares, volume against the trailing median, PSI against the baseline.

    ``facts[d]`` is :func:`day_facts` of day ``d``; ``events`` the rows of every day of the look-back
    (volume; None = not judged); ``distributions[d]`` is ``{"events", "event_types", "top_items"}`` of
    day ``d`` (checked days and baselines); ``current_items[d]`` holds day ``d``'s counts of its
    baseline's top items (drift; None = not judged).
    """
    rows = []
    for day in days:
        fact = facts.get(day, {})
        n = int(fact.get("rows", 0))
        median = trailing_median(day, events, v.volume_lookback_days, v.volume_min_history_days) if events else None
        row: dict[str, Any] = {
            "dt": day.isoformat(),
            "events": n,
            **{share: (fact.get(name, 0) / n if n else None) for share, name in SHARES.items()},
            "trailing_median": median,
            "volume_ratio": (n / median) if median and n > 0 else None,
            "baseline_day": None,
            "psi_event_type": None,
            "psi_item_popularity": None,
        }
        base_day = (baselines or {}).get(day)
        current = (distributions or {}).get(day)
        if base_day is not None and current is not None and distributions is not None:
            base = distributions[base_day]
            row["baseline_day"] = base_day.isoformat()
            if min(int(base["events"]), int(current["events"])) >= max(v.drift_min_events, 1):
                row["psi_event_type"] = psi(base["event_types"], current["event_types"])
                expected = item_bins(base["top_items"], base["events"], base["top_items"])
                actual = item_bins(base["top_items"], current["events"], (current_items or {}).get(day, {}))
                row["psi_item_popularity"] = psi(expected, actual)
        rows.append(row)
    return rows


def bronze_day_counts(spark: SparkSession, base: Path, days: list[dt.date]) -> dict[dt.date, int]:
    """Rows per ``dt`` partition of ``base`` among ``days`` (absent partitions are left out)."""
    from pyspark.sql import functions as F

    paths = [str(base / f"dt={d.isoformat()}") for d in days if (base / f"dt={d.isoformat()}").is_dir()]
    if not paths:
        return {}
    frame = spark.read.option("basePath", str(base)).option("mergeSchema", "true").parquet(*paths)
    rows = frame.groupBy(F.col(DT_COL).cast("string").alias("d")).count().collect()
    return {dt.date.fromisoformat(r["d"]): int(r["count"]) for r in rows}


def day_facts(frame: DataFrame, event_types: tuple[str, ...] = EVENT_TYPES) -> dict[dt.date, dict[str, int]]:
    """Per day of ``frame`` (bronze with ``dt``): rows, and rows with an unknown or missing event type, a
    missing price, an item the catalogue does not list (when ``unknown_item`` is there)."""
    from pyspark.sql import functions as F

    def count(condition: Any) -> Any:
        return F.sum(F.when(condition, 1).otherwise(0))

    etype = F.col(EVENT_TYPE_COL)
    aggregates = [
        F.count(F.lit(1)).alias("rows"),
        count(etype.isNull() | ~etype.isin(list(event_types))).alias("unknown_event_type"),
        count(F.col(PRICE_COL).isNull()).alias("missing_price"),
    ]
    if UNKNOWN_ITEM_COL in frame.columns:
        aggregates.append(count(F.col(UNKNOWN_ITEM_COL).isNotNull()).alias("unknown_item"))
    out = {}
    for r in frame.groupBy(F.col(DT_COL).cast("string").alias("d")).agg(*aggregates).collect():
        out[dt.date.fromisoformat(r["d"])] = {k: int(v or 0) for k, v in r.asDict().items() if k != "d"}
    return out


def distributions_of(frame: DataFrame, top_k: int) -> tuple[dict[dt.date, dict[str, Any]], DataFrame]:
    """Per day of ``frame`` (bronze with ``dt``): event count, event-type counts, the ``top_k`` items.

    Also returns the cached per-(day, item) counts, for :func:`counts_of_items`; unpersist it when done.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    day = F.col(DT_COL).cast("string").alias("d")
    out: dict[dt.date, dict[str, Any]] = {}
    types = frame.groupBy(day, F.coalesce(F.col(EVENT_TYPE_COL), F.lit(NULL_BIN)).alias("k")).count().collect()
    for r in types:
        entry = out.setdefault(dt.date.fromisoformat(r["d"]), {"events": 0, "event_types": {}, "top_items": {}})
        entry["event_types"][r["k"]] = int(r["count"])
        entry["events"] += int(r["count"])
    items = frame.where(F.col(ITEM_COL).isNotNull()).groupBy(day, F.col(ITEM_COL).alias("k")).count().cache()
    rank = F.row_number().over(Window.partitionBy("d").orderBy(F.col("count").desc(), F.col("k")))
    for r in items.withColumn("_rank", rank).where(F.col("_rank") <= top_k).collect():
        out[dt.date.fromisoformat(r["d"])]["top_items"][r["k"]] = int(r["count"])
    return out, items


def counts_of_items(
    spark: SparkSession, item_counts: DataFrame, wanted: Mapping[dt.date, list[str]]
) -> dict[dt.date, dict[str, int]]:
    """Each day's counts of the items listed for it (0 when the day never saw an item)."""
    pairs = [(d.isoformat(), item) for d, items in wanted.items() for item in items]
    out: dict[dt.date, dict[str, int]] = {d: {} for d in wanted}
    if not pairs:
        return out
    from pyspark.sql import functions as F

    wanted_df = spark.createDataFrame(pairs, "d string, k string")
    for r in item_counts.join(F.broadcast(wanted_df), ["d", "k"]).collect():
        out[dt.date.fromisoformat(r["d"])][r["k"]] = int(r["count"])
    return out
