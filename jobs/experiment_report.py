"""Experiment report, the Spark part: per-unit outcomes of one experiment and their per-variant moments.

From the experiment's start to the run date it reads silver exposures (the arm each unit was shown),
the attributed events (``jobs.attribution``: clicks, add-to-carts and purchases that followed those
exposures) and, for CUPED, each unit's silver events in the ``pre_days`` before the start. One row per
unit (``unit_id`` = user, else session, as the API assigns arms):

``exposures`` responses shown · ``clicks``, ``add_to_carts``, ``purchases`` attributed to them ·
``purchaser`` (1 when any) · ``revenue`` (Σ price × quantity of attributed purchases) · ``user_ctr``
(clicks / exposures) · ``pre_clicks``, ``pre_add_to_carts``, ``pre_purchaser``, ``pre_revenue`` (all the
unit's events of those types before the start: there were no exposures to attribute them to).

A unit seen in more than one variant (a salt changed, the document was rewritten) is left out and
counted. The statistics need only each variant's moments of those columns (``n``, ``Σx``, ``Σxxᵀ``),
aggregated here so that a few numbers reach the driver; ``evaluation.online`` reads them (through
``training.experiment_report``: jobs import no statistics). An interleaving experiment yields instead
per-request wins / losses / ties of the treatment's team (clicks on the items each team placed), the
first-slot team per request, and each unit's mean preference.

``run`` writes the unit table to ``gold/experiments/<name>/dt=<run_date>/`` with the aggregates in its
``_AGGREGATES.json``, and returns the aggregates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.config import Config
from core.contract import EVENT_TYPE_COL, PRICE_COL, QUANTITY_COL, TS_COL, USER_COL
from core.experiments import AB, CONTROL, EXPERIMENT_TYPES, INTERLEAVED, INTERLEAVING
from core.lake import Lake
from core.online import (
    ADD_TO_CARTS,
    AGGREGATES_FILE,
    ATTRIBUTION_COL,
    CLICKS,
    EXPERIMENT_COL,
    EXPOSURE_REQUEST_COL,
    EXPOSURES,
    ITEMS_COL,
    POSITION_COL,
    PRE_ADD_TO_CARTS,
    PRE_CLICKS,
    PRE_PURCHASER,
    PRE_REVENUE,
    PREFERENCE,
    PURCHASER,
    PURCHASES,
    REPORT_DEFAULTS,
    REQUEST_ID_COL,
    REVENUE,
    TEAM_COL,
    UNIT_COL,
    UNIT_METRIC_COLUMNS,
    USER_CTR,
    VARIANT_COL,
    attributed_events,
    experiment_units,
    silver_exposures,
)
from jobs.attribution import read_silver_events
from jobs.common import run_job_main, write_atomic, write_report
from jobs.exposures import SILVER_EXPOSURE_SCHEMA, exposure_items

_EMPTY_ATTRIBUTED = (
    f"{EXPERIMENT_COL} string, {VARIANT_COL} string, {ATTRIBUTION_COL} string, {UNIT_COL} string, "
    f"{EVENT_TYPE_COL} string, {PRICE_COL} double, {QUANTITY_COL} int, {EXPOSURE_REQUEST_COL} string, "
    f"{TEAM_COL} string"
)
_EMPTY_EVENTS = (
    f"{USER_COL} string, {EVENT_TYPE_COL} string, {TS_COL} timestamp, {PRICE_COL} double, {QUANTITY_COL} int"
)


def _count(event_type: str) -> Column:
    return F.sum(F.when(F.col(EVENT_TYPE_COL) == event_type, 1).otherwise(0))


def _revenue() -> Column:
    value = F.coalesce(F.col(PRICE_COL), F.lit(0.0)) * F.coalesce(F.col(QUANTITY_COL), F.lit(1)).cast("double")
    return F.sum(F.when(F.col(EVENT_TYPE_COL) == "purchase", value).otherwise(0.0))


def exposed_units(exposures: DataFrame, experiment: str) -> DataFrame:
    """``unit_id, variant, exposures, first_exposure`` of the experiment's units; ``variants`` > 1 marks a unit
    seen in several arms (its ``variant`` is then null)."""
    mine = exposures.filter((F.col(EXPERIMENT_COL) == experiment) & F.col(UNIT_COL).isNotNull())
    mine = mine.dropDuplicates([REQUEST_ID_COL])
    return (
        mine.groupBy(UNIT_COL)
        .agg(
            F.countDistinct(VARIANT_COL).alias("variants"),
            F.min(VARIANT_COL).alias("_variant"),
            F.count(F.lit(1)).cast("double").alias(EXPOSURES),
            F.min(TS_COL).alias("first_exposure"),
        )
        .select(
            UNIT_COL,
            F.when(F.col("variants") == 1, F.col("_variant")).alias(VARIANT_COL),
            "variants",
            EXPOSURES,
            "first_exposure",
        )
    )


def unit_outcomes(attributed: DataFrame, experiment: str) -> DataFrame:
    """Per unit: ``clicks, add_to_carts, purchases, revenue`` of its attributed events in the experiment."""
    mine = attributed.filter((F.col(EXPERIMENT_COL) == experiment) & F.col(ATTRIBUTION_COL).isNotNull())
    return mine.groupBy(UNIT_COL).agg(
        _count("click").cast("double").alias(CLICKS),
        _count("add_to_cart").cast("double").alias(ADD_TO_CARTS),
        _count("purchase").cast("double").alias(PURCHASES),
        _revenue().alias(REVENUE),
    )


def pre_period(events: DataFrame, start: dt.datetime, pre_days: int) -> DataFrame:
    """Per user: ``pre_clicks, pre_add_to_carts, pre_purchaser, pre_revenue`` of events in ``[start - pre_days, start)``."""
    since = start - dt.timedelta(days=pre_days)
    before = events.filter((F.col(TS_COL) >= F.lit(since)) & (F.col(TS_COL) < F.lit(start)))
    return before.groupBy(F.col(USER_COL).alias(UNIT_COL)).agg(
        _count("click").cast("double").alias(PRE_CLICKS),
        _count("add_to_cart").cast("double").alias(PRE_ADD_TO_CARTS),
        (_count("purchase") > 0).cast("double").alias(PRE_PURCHASER),
        _revenue().alias(PRE_REVENUE),
    )


def unit_table(
    exposures: DataFrame, attributed: DataFrame, events: DataFrame, experiment: str, start: dt.datetime, pre_days: int
) -> DataFrame:
    """One row per unit of ``experiment``: ``unit_id, variant, variants`` and every :data:`UNIT_METRIC_COLUMNS`
    column (zeros where a unit had no events)."""
    units = exposed_units(exposures, experiment)
    joined = units.join(unit_outcomes(attributed, experiment), UNIT_COL, "left").join(
        pre_period(events, start, pre_days), UNIT_COL, "left"
    )
    filled = joined.fillna(0.0, subset=[c for c in UNIT_METRIC_COLUMNS if c not in (EXPOSURES, USER_CTR, PURCHASER)])
    return filled.select(
        UNIT_COL,
        VARIANT_COL,
        "variants",
        F.col(EXPOSURES),
        F.col(CLICKS),
        F.col(ADD_TO_CARTS),
        F.col(PURCHASES),
        (F.col(PURCHASES) > 0).cast("double").alias(PURCHASER),
        F.col(REVENUE),
        (F.col(CLICKS) / F.col(EXPOSURES)).alias(USER_CTR),
        F.col(PRE_CLICKS),
        F.col(PRE_ADD_TO_CARTS),
        F.col(PRE_PURCHASER),
        F.col(PRE_REVENUE),
    )


def moment_aggregates(units: DataFrame, columns: tuple[str, ...] = UNIT_METRIC_COLUMNS) -> dict[str, dict[str, Any]]:
    """Per variant: ``{"columns", "n", "sums", "cross"}`` (``Σx_j``, ``Σx_j x_k``) over units with one variant."""
    aggs = [F.count(F.lit(1)).alias("n")]
    aggs += [F.sum(F.col(c)).alias(f"s{i}") for i, c in enumerate(columns)]
    pairs = [(i, j) for i in range(len(columns)) for j in range(i, len(columns))]
    aggs += [F.sum(F.col(columns[i]) * F.col(columns[j])).alias(f"c{i}_{j}") for i, j in pairs]
    out: dict[str, dict[str, Any]] = {}
    for row in units.filter(F.col(VARIANT_COL).isNotNull()).groupBy(VARIANT_COL).agg(*aggs).collect():
        cross = [[0.0] * len(columns) for _ in columns]
        for i, j in pairs:
            cross[i][j] = cross[j][i] = float(row[f"c{i}_{j}"] or 0.0)
        out[row[VARIANT_COL]] = {
            "columns": list(columns),
            "n": int(row["n"]),
            "sums": [float(row[f"s{i}"] or 0.0) for i in range(len(columns))],
            "cross": cross,
        }
    return dict(sorted(out.items()))


def interleaving_units(
    exposures: DataFrame, attributed: DataFrame, experiment: str
) -> tuple[DataFrame, dict[str, Any]]:
    """Team-draft credit per interleaved request with an attributed click: a win for the treatment's team when its
    items got more clicks than the control's, a loss when fewer, else a tie. Returns one row per unit
    (``unit_id, wins, losses, ties, preference``; preference ``(w - l) / (w + l + t)``, 0 without a clicked
    request) and the teams, the number of requests and the team of the first slot per request."""
    requests = exposures.filter(
        (F.col(EXPERIMENT_COL) == experiment) & (F.col(VARIANT_COL) == INTERLEAVED) & F.col(UNIT_COL).isNotNull()
    ).dropDuplicates([REQUEST_ID_COL])
    items = exposure_items(requests.select(REQUEST_ID_COL, UNIT_COL, ITEMS_COL))
    teams = sorted(r[TEAM_COL] for r in items.select(TEAM_COL).distinct().collect() if r[TEAM_COL] is not None)
    treatment = next((t for t in teams if t != CONTROL), "treatment")
    first = items.filter(F.col(POSITION_COL) == 1).groupBy(TEAM_COL).count().collect()
    clicks = (
        attributed.filter(
            (F.col(EXPERIMENT_COL) == experiment)
            & (F.col(VARIANT_COL) == INTERLEAVED)
            & F.col(ATTRIBUTION_COL).isNotNull()
            & (F.col(EVENT_TYPE_COL) == "click")
        )
        .groupBy(F.col(EXPOSURE_REQUEST_COL).alias(REQUEST_ID_COL))
        .agg(
            F.sum(F.when(F.col(TEAM_COL) == CONTROL, 1).otherwise(0)).alias("_c"),
            F.sum(F.when(F.col(TEAM_COL) == treatment, 1).otherwise(0)).alias("_t"),
        )
        .filter((F.col("_c") + F.col("_t")) > 0)
    )
    per_request = requests.select(REQUEST_ID_COL, UNIT_COL).join(clicks, REQUEST_ID_COL, "left")
    decided = F.col("_c").isNotNull()
    per_unit = per_request.groupBy(UNIT_COL).agg(
        F.sum(F.when(decided & (F.col("_t") > F.col("_c")), 1).otherwise(0)).cast("double").alias("wins"),
        F.sum(F.when(decided & (F.col("_t") < F.col("_c")), 1).otherwise(0)).cast("double").alias("losses"),
        F.sum(F.when(decided & (F.col("_t") == F.col("_c")), 1).otherwise(0)).cast("double").alias("ties"),
    )
    total = F.col("wins") + F.col("losses") + F.col("ties")
    per_unit = per_unit.withColumn(
        PREFERENCE, F.when(total > 0, (F.col("wins") - F.col("losses")) / total).otherwise(0.0)
    )
    meta = {
        "teams": {"control": CONTROL, "treatment": treatment},
        "requests": requests.count(),
        "first_pick": {r[TEAM_COL]: int(r["count"]) for r in first if r[TEAM_COL] is not None},
    }
    return per_unit, meta


# ---- run ---------------------------------------------------------------------------------------------
def _start_of(start: dt.datetime | str | None, run_date: dt.date, window_days: int | None) -> dt.datetime:
    if isinstance(start, str) and start:
        start = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    if isinstance(start, dt.datetime):
        return start.astimezone(dt.UTC).replace(tzinfo=None) if start.tzinfo else start
    days = window_days or 1
    return dt.datetime.combine(run_date - dt.timedelta(days=days - 1), dt.time())


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = None,
    *,
    experiment: str,
    start: dt.datetime | str | None = None,
    kind: str = AB,
    pre_days: int = REPORT_DEFAULTS.cuped_pre_days,
) -> dict[str, Any]:
    """Aggregate ``experiment`` from ``start`` (else the first day of ``window_days`` ending at ``run_date``) to
    ``run_date``; write the unit table and ``_AGGREGATES.json``; return the aggregates (JSON-safe)."""
    if kind not in EXPERIMENT_TYPES:
        raise ValueError(f"kind={kind!r} must be one of {list(EXPERIMENT_TYPES)}")
    lake = Lake(lake_root)
    begin = _start_of(start, run_date, window_days)
    days = [d for d in Lake.partition_days(silver_exposures(lake)) if begin.date() <= d <= run_date]
    if not days:
        raise FileNotFoundError(
            f"no silver exposures between {begin.date()} and {run_date} under {silver_exposures(lake)}: "
            "run jobs.exposures for those days first"
        )
    exposures = (
        spark.read.schema(SILVER_EXPOSURE_SCHEMA)
        .option("basePath", str(silver_exposures(lake)))
        .parquet(*[str(silver_exposures(lake, d)) for d in days])
        .filter(F.col(TS_COL) >= F.lit(begin))
    )
    attributed_days = [d for d in Lake.partition_days(attributed_events(lake)) if begin.date() <= d <= run_date]
    missing = [d.isoformat() for d in days if d not in set(attributed_days)]
    attributed = (
        spark.read.option("basePath", str(attributed_events(lake))).parquet(
            *[str(attributed_events(lake, d)) for d in attributed_days]
        )
        if attributed_days
        else None
    )
    aggregates: dict[str, Any] = {
        "experiment": experiment,
        "kind": kind,
        "run_date": run_date.isoformat(),
        "start": begin.isoformat() + "Z",
        "exposure_days": [days[0].isoformat(), days[-1].isoformat()],
        "missing_attribution_days": missing,
        "pre_days": pre_days,
    }
    if attributed is None:
        attributed = spark.createDataFrame([], _EMPTY_ATTRIBUTED)
    target = experiment_units(lake, experiment, run_date)
    if kind == INTERLEAVING:
        units, meta = interleaving_units(exposures, attributed, experiment)
        units = units.cache()
        try:
            totals = units.agg(
                *[F.sum(c).alias(c) for c in ("wins", "losses", "ties")], F.count(F.lit(1)).alias("n")
            ).first()
            scores = moment_aggregates(units.withColumn(VARIANT_COL, F.lit(INTERLEAVED)), (PREFERENCE,))
            aggregates["units"] = {"total": int(totals["n"]) if totals else 0, "in_several_variants": 0}
            aggregates["arms"] = {}
            aggregates["interleaving"] = {
                **meta,
                **{c: int(totals[c] or 0) if totals else 0 for c in ("wins", "losses", "ties")},
                "units": scores.get(INTERLEAVED),
            }
            write_atomic(units, target, rows=aggregates["units"]["total"], json_files={AGGREGATES_FILE: aggregates})
        finally:
            units.unpersist()
    else:
        late = dt.timedelta(days=cfg.events.late_after_days)
        pre_read = [
            d
            for d in Lake.partition_days(lake.silver_events())
            if begin.date() - dt.timedelta(days=pre_days) <= d <= min(run_date, begin.date() + late)
        ]
        events = read_silver_events(spark, lake, pre_read) if pre_read else spark.createDataFrame([], _EMPTY_EVENTS)
        units = unit_table(exposures, attributed, events, experiment, begin, pre_days).cache()
        try:
            counts = units.agg(
                F.count(F.lit(1)).alias("units"), F.sum(F.when(F.col("variants") > 1, 1).otherwise(0)).alias("mixed")
            ).first()
            aggregates["units"] = {
                "total": int(counts["units"]) if counts else 0,
                "in_several_variants": int(counts["mixed"] or 0) if counts else 0,
            }
            aggregates["arms"] = moment_aggregates(units)
            write_atomic(units, target, rows=aggregates["units"]["total"], json_files={AGGREGATES_FILE: aggregates})
        finally:
            units.unpersist()
    stage = {k: v for k, v in aggregates.items() if k not in ("arms", "interleaving")}
    stage["units_per_variant"] = {v: arm["n"] for v, arm in aggregates["arms"].items()}
    write_report(lake, run_date, f"experiment_units_{experiment}", stage)
    return aggregates


def main(argv: list[str] | None = None) -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--experiment", required=True, help="the experiment's name")
        parser.add_argument("--start", default=None, help="its start, ISO-8601 (default: the window's first day)")
        parser.add_argument("--kind", default=AB, choices=EXPERIMENT_TYPES)
        parser.add_argument(
            "--pre-days",
            type=int,
            default=REPORT_DEFAULTS.cuped_pre_days,
            help=f"days before the start for CUPED (default {REPORT_DEFAULTS.cuped_pre_days})",
        )

    return run_job_main(
        run,
        "Aggregate one experiment's units (exposures, attributed events, pre-period) per variant.",
        "mercato-experiment-report",
        REPORT_DEFAULTS.window_days_without_start,
        argv,
        add_arguments=options,
    )


if __name__ == "__main__":
    raise SystemExit(main())
