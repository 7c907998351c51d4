"""Attribution: tie each clean event to the recommendation exposure it followed (silver events × silver exposures).

Rules (``[attribution] window_minutes`` = W), in order:

1. **By request.** An event that carries a ``request_id`` naming an exposure that showed the event's
   item counts for that exposure when it happens at most W after it (``request_status = matched``;
   an earlier timestamp is the shop's clock, not a cause: the id proves the link). Later than W it is
   ``late`` and not attributed (the event itself says which exposure it followed).
2. **By window (last touch).** Any other event — no ``request_id``, one that names no known exposure
   (``unknown_request``), or one whose exposure did not show the item (``item_not_in_request``) — counts
   for the latest exposure of the same user and item at or before it, when that is at most W earlier.
   Exposures are matched on ``user_id``: an anonymous (session-only) exposure is reached by request only.
3. Otherwise the event is not attributed: ``late`` when the user was shown the item earlier than W
   before, ``unexposed`` when never (within the exposures read).

Every event stays in the output with its ``attribution_status`` (``attributed | late | unexposed``) and,
when it carried a request id, its ``request_status`` (``matched | late | unknown_request |
item_not_in_request``): unknown request ids are counted in the report, never dropped. Attributed rows
carry the exposure: ``exposure_request_id, exposure_ts, unit_id, experiment, variant, model_name,
model_version, exposed_position, team, fallback``.

``run`` attributes silver event day D (a landing day) against the silver exposure days
``[D - lookback, D + 1]`` (lookback = ceil(W / 1 day) + ``[events] late_after_days``: events land
late; D + 1: a response served just before midnight can land after it), writes
``silver/attributed_events/dt=D`` with ``_ATTRIBUTION.json`` (the partitions it read and W), and skips a
day whose inputs are unchanged, so day D is redone once D + 1's exposures arrive.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.config import Config
from core.contract import DT_COL, EVENT_COLUMNS, EVENT_TYPE_COL, ITEM_COL, TS_COL, USER_COL
from core.lake import Lake
from core.online import (
    ATTRIBUTED,
    ATTRIBUTION_COL,
    ATTRIBUTION_STATUS_COL,
    BY_REQUEST,
    BY_WINDOW,
    EXPERIMENT_COL,
    EXPOSED_POSITION_COL,
    EXPOSURE_REQUEST_COL,
    EXPOSURE_TS_COL,
    FALLBACK_COL,
    ITEM_NOT_IN_REQUEST,
    LATE,
    MATCHED,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    POSITION_COL,
    REQUEST_ID_COL,
    REQUEST_STATUS_COL,
    TEAM_COL,
    UNEXPOSED,
    UNIT_COL,
    UNKNOWN_REQUEST,
    VARIANT_COL,
    attributed_events,
    silver_exposures,
)
from jobs.common import read_days, run_job_main, window, write_atomic, write_report
from jobs.exposures import SILVER_EXPOSURE_SCHEMA, exposure_items, partition_fingerprint, read_manifest

ATTRIBUTION_MANIFEST = "_ATTRIBUTION.json"
#: Silver events as attribution reads them: the contract columns plus the request the shop said the event followed.
EVENT_INPUT_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, REQUEST_ID_COL, POSITION_COL)
#: The exposure columns an attributed event carries.
EXPOSURE_OUTPUT_COLUMNS: tuple[str, ...] = (
    EXPOSURE_REQUEST_COL,
    EXPOSURE_TS_COL,
    UNIT_COL,
    EXPERIMENT_COL,
    VARIANT_COL,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    EXPOSED_POSITION_COL,
    TEAM_COL,
    FALLBACK_COL,
)
OUTPUT_COLUMNS: tuple[str, ...] = (
    *EVENT_INPUT_COLUMNS,
    ATTRIBUTION_COL,
    ATTRIBUTION_STATUS_COL,
    REQUEST_STATUS_COL,
    *EXPOSURE_OUTPUT_COLUMNS,
)
_ROW = "_row"
_FIELDS = {  # output column -> exposure-item column
    EXPOSURE_REQUEST_COL: REQUEST_ID_COL,
    EXPOSURE_TS_COL: TS_COL,
    UNIT_COL: UNIT_COL,
    EXPERIMENT_COL: EXPERIMENT_COL,
    VARIANT_COL: VARIANT_COL,
    MODEL_NAME_COL: MODEL_NAME_COL,
    MODEL_VERSION_COL: MODEL_VERSION_COL,
    EXPOSED_POSITION_COL: POSITION_COL,
    TEAM_COL: TEAM_COL,
    FALLBACK_COL: FALLBACK_COL,
}


def with_request_columns(events: DataFrame) -> DataFrame:
    """Silver events with ``request_id`` (string) and ``position`` (int), null where the feed has none (``ts`` as a
    UTC timestamp, whichever Parquet timestamp flavour the partition holds)."""
    extra = {
        REQUEST_ID_COL: F.col(REQUEST_ID_COL).cast("string")
        if REQUEST_ID_COL in events.columns
        else F.lit(None).cast("string"),
        POSITION_COL: F.col(POSITION_COL).cast("int") if POSITION_COL in events.columns else F.lit(None).cast("int"),
    }
    contract = [F.col(TS_COL).cast("timestamp").alias(TS_COL) if c == TS_COL else F.col(c) for c in EVENT_COLUMNS]
    return events.select(*contract, *[col.alias(name) for name, col in extra.items()])


def _prefixed(items: DataFrame, prefix: str) -> DataFrame:
    return items.select(
        *[F.col(src).alias(prefix + out) for out, src in _FIELDS.items()],
        F.col(ITEM_COL).alias(prefix + ITEM_COL),
        F.col(USER_COL).alias(prefix + USER_COL),
    )


def _seconds_between(later: Column, earlier: Column) -> Column:
    return later.cast("double") - earlier.cast("double")


def attribute_events(events: DataFrame, exposures: DataFrame, window_minutes: int) -> DataFrame:
    """Every event of ``events`` with its attribution to one of ``exposures`` (silver, items nested); rules in the
    module docstring. Columns: :data:`OUTPUT_COLUMNS`."""
    if window_minutes <= 0:
        raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
    limit = float(window_minutes * 60)
    items = exposure_items(exposures)
    items = items.withColumn(
        "_first", F.row_number().over(Window.partitionBy(REQUEST_ID_COL, ITEM_COL).orderBy(POSITION_COL, TS_COL))
    ).filter(F.col("_first") == 1)
    ev = with_request_columns(events).withColumn(_ROW, F.monotonically_increasing_id())

    known = exposures.groupBy(F.col(REQUEST_ID_COL).alias("_k_request")).agg(F.lit(True).alias("_known"))
    by_request = _prefixed(items, "_r_")
    ev = ev.join(known, ev[REQUEST_ID_COL] == F.col("_k_request"), "left").join(
        by_request,
        (ev[REQUEST_ID_COL] == F.col("_r_" + EXPOSURE_REQUEST_COL)) & (ev[ITEM_COL] == F.col("_r_" + ITEM_COL)),
        "left",
    )
    r_ts = F.col("_r_" + EXPOSURE_TS_COL)
    request_status = (
        F.when(F.col(REQUEST_ID_COL).isNull(), F.lit(None).cast("string"))
        .when(F.col("_known").isNull(), F.lit(UNKNOWN_REQUEST))
        .when(r_ts.isNull(), F.lit(ITEM_NOT_IN_REQUEST))
        .when(_seconds_between(F.col(TS_COL), r_ts) > limit, F.lit(LATE))
        .otherwise(F.lit(MATCHED))
    )
    ev = ev.withColumn(REQUEST_STATUS_COL, request_status)

    by_request_path = F.col(REQUEST_STATUS_COL).isin(MATCHED, LATE)
    candidates = ev.filter(~by_request_path | F.col(REQUEST_STATUS_COL).isNull()).select(
        _ROW, USER_COL, ITEM_COL, TS_COL
    )
    by_window = _prefixed(items.filter(F.col(USER_COL).isNotNull()), "_w_")
    w_ts = F.col("_w_" + EXPOSURE_TS_COL)
    latest = Window.partitionBy(_ROW).orderBy(w_ts.desc(), F.col("_w_" + EXPOSURE_REQUEST_COL).desc())
    last_touch = (
        candidates.join(
            by_window,
            (candidates[USER_COL] == F.col("_w_" + USER_COL))
            & (candidates[ITEM_COL] == F.col("_w_" + ITEM_COL))
            & (w_ts <= candidates[TS_COL]),
        )
        .withColumn("_touch", F.row_number().over(latest))
        .filter(F.col("_touch") == 1)
        .select(F.col(_ROW).alias("_w_row"), *[F.col("_w_" + c) for c in _FIELDS])
    )
    ev = ev.join(last_touch, ev[_ROW] == F.col("_w_row"), "left")

    in_window = w_ts.isNotNull() & (_seconds_between(F.col(TS_COL), w_ts) <= limit)
    method = (
        F.when(F.col(REQUEST_STATUS_COL) == MATCHED, F.lit(BY_REQUEST))
        .when(~F.coalesce(by_request_path, F.lit(False)) & in_window, F.lit(BY_WINDOW))
        .otherwise(F.lit(None).cast("string"))
    )
    ev = ev.withColumn(ATTRIBUTION_COL, method)
    status = (
        F.when(F.col(ATTRIBUTION_COL).isNotNull(), F.lit(ATTRIBUTED))
        .when((F.col(REQUEST_STATUS_COL) == LATE) | w_ts.isNotNull(), F.lit(LATE))
        .otherwise(F.lit(UNEXPOSED))
    )
    exposure = [
        F.when(F.col(ATTRIBUTION_COL) == BY_REQUEST, F.col("_r_" + c))
        .when(F.col(ATTRIBUTION_COL) == BY_WINDOW, F.col("_w_" + c))
        .alias(c)
        for c in _FIELDS
    ]
    return ev.select(
        *EVENT_INPUT_COLUMNS, ATTRIBUTION_COL, status.alias(ATTRIBUTION_STATUS_COL), REQUEST_STATUS_COL, *exposure
    )


def summarise(attributed: DataFrame) -> dict[str, Any]:
    """Counts of an attribution: events, by status, by method, by request status, attributed by experiment arm."""
    rows = (
        attributed.groupBy(ATTRIBUTION_STATUS_COL, ATTRIBUTION_COL, REQUEST_STATUS_COL, EVENT_TYPE_COL)
        .count()
        .collect()
    )
    arms = attributed.filter(F.col(EXPERIMENT_COL).isNotNull()).groupBy(EXPERIMENT_COL, VARIANT_COL).count().collect()

    def total(**match: Any) -> int:
        return sum(int(r["count"]) for r in rows if all(r[k] == v for k, v in match.items()))

    by_request_status = {
        s: total(**{REQUEST_STATUS_COL: s}) for s in (MATCHED, LATE, UNKNOWN_REQUEST, ITEM_NOT_IN_REQUEST)
    }
    return {
        "events": total(),
        "attributed": total(**{ATTRIBUTION_STATUS_COL: ATTRIBUTED}),
        "late": total(**{ATTRIBUTION_STATUS_COL: LATE}),
        "unexposed": total(**{ATTRIBUTION_STATUS_COL: UNEXPOSED}),
        "by_method": {m: total(**{ATTRIBUTION_COL: m}) for m in (BY_REQUEST, BY_WINDOW)},
        "with_request_id": sum(by_request_status.values()),
        "by_request_status": by_request_status,
        "attributed_by_event_type": {
            t: total(**{ATTRIBUTION_STATUS_COL: ATTRIBUTED, EVENT_TYPE_COL: t})
            for t in sorted({r[EVENT_TYPE_COL] for r in rows if r[ATTRIBUTION_STATUS_COL] == ATTRIBUTED})
        },
        "attributed_by_arm": {f"{r[EXPERIMENT_COL]}/{r[VARIANT_COL]}": int(r["count"]) for r in arms},
    }


# ---- run ---------------------------------------------------------------------------------------------
def lookback_days(cfg: Config) -> int:
    """Exposure days read before an event's landing day: the window in days (rounded up) + ``late_after_days``."""
    return math.ceil(cfg.attribution.window_minutes / (24 * 60)) + cfg.events.late_after_days


def read_silver_events(spark: SparkSession, lake: Lake, days: list[dt.date]) -> DataFrame:
    """Silver event days with ``request_id``/``position`` (null when the partitions predate them)."""
    paths = [str(lake.silver_events(d)) for d in days]
    frame = spark.read.option("basePath", str(lake.silver_events())).parquet(*paths)
    return with_request_columns(frame)


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = 1,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Attribute the silver event days of ``[run_date - window_days + 1, run_date]``; skip unchanged days.

    Returns (and writes as ``reports/<run_date>/attribution.json``) the counts per day and in total.
    """
    lake = Lake(lake_root)
    days = window(run_date, window_days, Lake.partition_days(lake.silver_events()))
    exposure_days = set(Lake.partition_days(silver_exposures(lake)))
    minutes = cfg.attribution.window_minutes
    back = lookback_days(cfg)
    per_day: dict[str, dict[str, Any]] = {}
    for day in days:
        wanted = [day + dt.timedelta(days=k) for k in range(-back, 2)]
        reads = [d for d in wanted if d in exposure_days]
        sources = {
            "window_minutes": minutes,
            "events": partition_fingerprint(lake.silver_events(day)),
            "exposures": {d.isoformat(): partition_fingerprint(silver_exposures(lake, d)) for d in reads},
        }
        target = attributed_events(lake, day)
        manifest = read_manifest(target / ATTRIBUTION_MANIFEST)
        if not force and manifest is not None and manifest.get("sources") == sources:
            per_day[day.isoformat()] = {"status": "skipped", **manifest.get("counts", {})}
            continue
        events = read_silver_events(spark, lake, [day])
        exposures = read_days(spark, silver_exposures(lake), reads, SILVER_EXPOSURE_SCHEMA).drop(DT_COL)
        attributed = attribute_events(events, exposures, minutes).cache()
        try:
            counts = summarise(attributed)
            payload = {"sources": sources, "counts": counts, "written_at": dt.datetime.now(dt.UTC).isoformat()}
            write_atomic(attributed, target, rows=counts["events"], json_files={ATTRIBUTION_MANIFEST: payload})
        finally:
            attributed.unpersist()
        per_day[day.isoformat()] = {"status": "attributed", "exposure_days": [d.isoformat() for d in reads], **counts}
    keys = ("events", "attributed", "late", "unexposed", "with_request_id")
    report: dict[str, Any] = {
        "stage": "attribution",
        "run_date": run_date.isoformat(),
        "window_days": window_days,
        "window_minutes": minutes,
        "days": per_day,
        "attributed_days": [d for d, r in per_day.items() if r["status"] == "attributed"],
        "skipped_days": [d for d, r in per_day.items() if r["status"] == "skipped"],
        **{k: sum(int(r.get(k, 0)) for r in per_day.values()) for k in keys},
        "unknown_request": sum(r.get("by_request_status", {}).get(UNKNOWN_REQUEST, 0) for r in per_day.values()),
        "item_not_in_request": sum(
            r.get("by_request_status", {}).get(ITEM_NOT_IN_REQUEST, 0) for r in per_day.values()
        ),
    }
    write_report(lake, run_date, "attribution", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(
        run,
        "Attribute silver events to recommendation exposures.",
        "mercato-attribution",
        1,
        argv,
        force_help="re-attribute days whose inputs are unchanged",
    )


if __name__ == "__main__":
    raise SystemExit(main())
