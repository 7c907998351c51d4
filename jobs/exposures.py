"""Exposures: the scoring API's exposure log (``landing/exposures``) → bronze (typed) → silver (deduplicated).

One landing line is one recommendation response (contract: docs/ARCHITECTURE.md, "Data contracts";
written by ``serving.runtime.exposure_record``). Every field is read as text and cast, like events
(``jobs.ingest.parse_lines``). A line is quarantined in ``bronze/_rejected/exposures/dt=…`` with its
reason when it is not one JSON object (``not_json_object``), has no ``request_id``
(``missing_request_id``), no or an unparseable ``ts`` (``missing_ts`` / ``unparseable_ts``), or
``items`` that are not a list of objects each with an ``item_id`` and an integer ``position``
(``bad_items``); blank lines are counted, not kept. Everything else about a record (positions in
range and unique, model named, arm named when there is an experiment) is the exposure gate's job
(``expectations.exposures``), which sees it.

Grain: one row per response with the shown items nested (``items``: array of ``item_id, position,
score, team``, plus ``n_items``), so an empty response still counts as an exposure and
deduplication is by ``request_id`` alone; consumers explode ``items`` when they need item rows
(:func:`exposure_items`).

Bronze ``bronze/exposures/dt=D`` holds every typed line of landing day D with ``_SOURCE.json``
(landing file names, sizes, mtimes and counts): an unchanged landing day is skipped, like ingest.
Silver ``silver/exposures/dt=D`` is bronze D with ids trimmed and NFC-normalised (as silver events)
and one row per ``request_id``: the first copy (earliest ``ts``, then file) within the day, and none
whose ``request_id`` already landed on day D-1 (a flush that straddled midnight). ``_SILVER.json``
records the bronze partitions it came from (D and D-1); an unchanged pair is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import Config
from core.contract import DT_COL, ITEM_COL, SESSION_COL, TS_COL, USER_COL
from core.lake import Lake
from core.online import (
    EXPERIMENT_COL,
    EXPOSURE_FIELDS,
    FALLBACK_COL,
    FILTERS_COL,
    ITEMS_COL,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    N_ITEMS_COL,
    POSITION_COL,
    REQUEST_ID_COL,
    ROUTE_COL,
    SCORE_COL,
    TEAM_COL,
    UNIT_COL,
    VARIANT_COL,
    bronze_exposures,
    rejected_exposures,
    silver_exposures,
)
from jobs.common import SOURCE_FILE_COL, clean_id, read_days, run_job_main, window, write_atomic, write_report
from jobs.ingest import (
    BAD_TS,
    BLANK,
    RAW_COL,
    REASON_COL,
    SOURCE_MANIFEST,
    fingerprint,
    landing_files,
    parse_lines,
    previous_manifest,
    rejected,
)

SILVER_MANIFEST = "_SILVER.json"
MISSING_REQUEST_ID = "missing_request_id"
MISSING_TS = "missing_ts"
BAD_ITEMS = "bad_items"

EXPOSURE_ITEM_TYPE = T.StructType(
    [
        T.StructField(ITEM_COL, T.StringType()),
        T.StructField(POSITION_COL, T.IntegerType()),
        T.StructField(SCORE_COL, T.DoubleType()),
        T.StructField(TEAM_COL, T.StringType()),
    ]
)
#: Bronze exposures (silver adds ``n_items`` and ``unit_id`` and drops ``source_file``).
BRONZE_EXPOSURE_SCHEMA = T.StructType(
    [
        T.StructField(REQUEST_ID_COL, T.StringType()),
        T.StructField(TS_COL, T.TimestampType()),
        T.StructField(USER_COL, T.StringType()),
        T.StructField(SESSION_COL, T.StringType()),
        T.StructField(ROUTE_COL, T.StringType()),
        T.StructField(MODEL_NAME_COL, T.StringType()),
        T.StructField(MODEL_VERSION_COL, T.StringType()),
        T.StructField(EXPERIMENT_COL, T.StringType()),
        T.StructField(VARIANT_COL, T.StringType()),
        T.StructField(FALLBACK_COL, T.BooleanType()),
        T.StructField(FILTERS_COL, T.StringType()),
        T.StructField(ITEMS_COL, T.ArrayType(EXPOSURE_ITEM_TYPE)),
        T.StructField(SOURCE_FILE_COL, T.StringType()),
    ]
)
BRONZE_COLUMNS: tuple[str, ...] = tuple(f.name for f in BRONZE_EXPOSURE_SCHEMA.fields)
SILVER_EXPOSURE_SCHEMA = T.StructType(
    [
        *[f for f in BRONZE_EXPOSURE_SCHEMA.fields if f.name != SOURCE_FILE_COL],
        T.StructField(N_ITEMS_COL, T.IntegerType()),
        T.StructField(UNIT_COL, T.StringType()),
    ]
)
SILVER_COLUMNS: tuple[str, ...] = tuple(f.name for f in SILVER_EXPOSURE_SCHEMA.fields)
#: The items as the landing line holds them, every field as text (cast afterwards).
_RAW_ITEMS = T.ArrayType(T.StructType([T.StructField(f.name, T.StringType()) for f in EXPOSURE_ITEM_TYPE.fields]))


def _text(column: str) -> Column:
    """Trimmed text, empty → null."""
    trimmed = F.trim(F.col(column))
    return F.when(trimmed == "", F.lit(None).cast("string")).otherwise(trimmed)


def type_exposures(parsed: DataFrame) -> DataFrame:
    """Cast parsed exposure lines (``parse_lines`` output) to the bronze schema, labelling malformed ones.

    Keeps ``raw``, ``reject_reason`` and any provenance column (``source_file``).
    """
    ts_raw = _text(TS_COL)
    ts = F.try_to_timestamp(ts_raw)
    raw_items = F.from_json(F.col(ITEMS_COL), _RAW_ITEMS)
    raw_items = F.when(F.trim(F.col(ITEMS_COL)).startswith("["), raw_items)
    items = F.transform(
        raw_items,
        lambda x: F.struct(
            F.trim(x[ITEM_COL]).alias(ITEM_COL),
            x[POSITION_COL].try_cast("double").try_cast("int").alias(POSITION_COL),
            x[SCORE_COL].try_cast("double").alias(SCORE_COL),
            F.trim(x[TEAM_COL]).alias(TEAM_COL),
        ),
    )
    bad_item = F.exists(
        items, lambda x: x.isNull() | x[ITEM_COL].isNull() | (x[ITEM_COL] == "") | x[POSITION_COL].isNull()
    )
    reason = (
        F.when(F.col(REASON_COL).isNotNull(), F.col(REASON_COL))
        .when(_text(REQUEST_ID_COL).isNull(), F.lit(MISSING_REQUEST_ID))
        .when(ts_raw.isNull(), F.lit(MISSING_TS))
        .when(ts.isNull(), F.lit(BAD_TS))
        .when(items.isNull() | bad_item, F.lit(BAD_ITEMS))
    )
    others = [c for c in parsed.columns if c not in (*EXPOSURE_FIELDS, REASON_COL, RAW_COL)]
    return parsed.select(
        _text(REQUEST_ID_COL).alias(REQUEST_ID_COL),
        ts.alias(TS_COL),
        _text(USER_COL).alias(USER_COL),
        _text(SESSION_COL).alias(SESSION_COL),
        _text(ROUTE_COL).alias(ROUTE_COL),
        _text(MODEL_NAME_COL).alias(MODEL_NAME_COL),
        _text(MODEL_VERSION_COL).alias(MODEL_VERSION_COL),
        _text(EXPERIMENT_COL).alias(EXPERIMENT_COL),
        _text(VARIANT_COL).alias(VARIANT_COL),
        _text(FALLBACK_COL).try_cast("boolean").alias(FALLBACK_COL),
        F.col(FILTERS_COL),
        items.alias(ITEMS_COL),
        *others,
        F.when(reason.isNotNull(), F.col(RAW_COL)).alias(RAW_COL),
        reason.alias(REASON_COL),
    )


def ingest_exposures(lines: DataFrame, *, value_col: str = "value") -> DataFrame:
    """Text lines (``value`` + provenance columns) → typed exposures labelled with ``reject_reason``."""
    return type_exposures(parse_lines(lines, EXPOSURE_FIELDS, value_col=value_col))


def accepted_exposures(labelled: DataFrame) -> DataFrame:
    """The bronze rows of labelled lines (those without a reject reason)."""
    return labelled.filter(F.col(REASON_COL).isNull()).select(*BRONZE_COLUMNS)


def dedupe_exposures(bronze: DataFrame, day: dt.date) -> DataFrame:
    """Silver rows of ``day`` from bronze rows of ``day`` and the day before (``dt`` column): ids trimmed and
    NFC-normalised, one row per ``request_id`` — the earliest copy (landing day, ``ts``, file) — and only the
    requests whose earliest copy landed on ``day``. Adds ``n_items`` and ``unit_id`` (user, else session)."""
    first = Window.partitionBy(REQUEST_ID_COL).orderBy(
        F.col(DT_COL), F.col(TS_COL), F.col(SOURCE_FILE_COL).asc_nulls_last()
    )
    items = F.transform(
        F.col(ITEMS_COL),
        lambda x: F.struct(
            clean_id(x[ITEM_COL]).alias(ITEM_COL),
            x[POSITION_COL].alias(POSITION_COL),
            x[SCORE_COL].alias(SCORE_COL),
            x[TEAM_COL].alias(TEAM_COL),
        ),
    )
    normalised = bronze.select(
        clean_id(REQUEST_ID_COL).alias(REQUEST_ID_COL),
        F.col(TS_COL),
        clean_id(USER_COL).alias(USER_COL),
        clean_id(SESSION_COL).alias(SESSION_COL),
        *[F.col(c) for c in (ROUTE_COL, MODEL_NAME_COL, MODEL_VERSION_COL, EXPERIMENT_COL, VARIANT_COL)],
        F.col(FALLBACK_COL),
        F.col(FILTERS_COL),
        items.alias(ITEMS_COL),
        F.col(SOURCE_FILE_COL),
        F.col(DT_COL),
    )
    ranked = normalised.withColumn("_copy", F.row_number().over(first))
    kept = ranked.filter((F.col("_copy") == 1) & (F.col(DT_COL) == F.lit(day)))
    return kept.select(
        *[c for c in SILVER_COLUMNS if c not in (N_ITEMS_COL, UNIT_COL)],
        F.size(ITEMS_COL).cast("int").alias(N_ITEMS_COL),
        F.coalesce(F.col(USER_COL), F.col(SESSION_COL)).alias(UNIT_COL),
    )


def exposure_items(exposures: DataFrame) -> DataFrame:
    """One row per shown item: every exposure column but ``items``, plus ``item_id, position, score, team``."""
    keep = [c for c in exposures.columns if c != ITEMS_COL]
    return exposures.select(*keep, F.explode(ITEMS_COL).alias("_item")).select(
        *keep, *[F.col(f"_item.{f.name}").alias(f.name) for f in EXPOSURE_ITEM_TYPE.fields]
    )


# ---- run ---------------------------------------------------------------------------------------------
def partition_fingerprint(folder: Path) -> list[dict[str, Any]]:
    """Names, sizes and mtimes of a partition's files: a rewrite of the partition changes it."""
    if not folder.is_dir():
        return []
    return fingerprint(sorted(p for p in folder.iterdir() if p.is_file()))


def _read_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    return spark.read.text([str(p) for p in files]).select(
        F.col("value"), F.col("_metadata.file_name").alias(SOURCE_FILE_COL)
    )


def _ingest_day(spark: SparkSession, lake: Lake, day: dt.date, files: list[Path]) -> dict[str, Any]:
    labelled = ingest_exposures(_read_lines(spark, files)).cache()
    try:
        by_reason = {
            r[REASON_COL]: int(r["n"])
            for r in labelled.groupBy(REASON_COL).count().withColumnRenamed("count", "n").collect()
        }
        rows_out = by_reason.pop(None, 0)
        blank = by_reason.pop(BLANK, 0)
        n_rejected = sum(by_reason.values())
        counts = {
            "rows_in": rows_out + n_rejected,
            "rows_out": rows_out,
            "rejected": n_rejected,
            "rejected_by_reason": by_reason,
            "blank_lines": blank,
        }
        manifest = {"files": fingerprint(files), "counts": counts, "written_at": dt.datetime.now(dt.UTC).isoformat()}
        write_atomic(
            accepted_exposures(labelled),
            bronze_exposures(lake, day),
            rows=rows_out,
            json_files={SOURCE_MANIFEST: manifest},
        )
        quarantine = rejected_exposures(lake, day)
        if n_rejected:
            write_atomic(rejected(labelled).select(RAW_COL, "reason", SOURCE_FILE_COL), quarantine, rows=n_rejected)
        elif quarantine.exists():
            shutil.rmtree(quarantine)
    finally:
        labelled.unpersist()
    return {"status": "ingested", **counts}


def _silver_day(spark: SparkSession, lake: Lake, day: dt.date, force: bool) -> dict[str, Any]:
    previous = day - dt.timedelta(days=1)
    sources = {d.isoformat(): partition_fingerprint(bronze_exposures(lake, d)) for d in (previous, day)}
    target = silver_exposures(lake, day)
    manifest = read_manifest(target / SILVER_MANIFEST)
    if not force and manifest is not None and manifest.get("sources") == sources:
        return {"status": "skipped", **manifest.get("counts", {})}
    present = [d for d in (previous, day) if sources[d.isoformat()]]
    bronze = read_days(spark, bronze_exposures(lake), present, BRONZE_EXPOSURE_SCHEMA)
    silver = dedupe_exposures(bronze, day).cache()
    try:
        rows = silver.count()
        stats = (
            bronze.filter(F.col(DT_COL) == F.lit(day))
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(REQUEST_ID_COL).alias("requests"))
            .first()
        )
        rows_in = int(stats["rows"]) if stats else 0
        distinct = int(stats["requests"]) if stats else 0
        counts = {
            "rows_in": rows_in,
            "rows_out": rows,
            "duplicates_in_day": rows_in - distinct,
            "duplicates_of_previous_day": distinct - rows,
        }
        payload = {"sources": sources, "counts": counts, "written_at": dt.datetime.now(dt.UTC).isoformat()}
        write_atomic(silver, target, rows=rows, json_files={SILVER_MANIFEST: payload})
    finally:
        silver.unpersist()
    return {"status": "written", **counts}


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path`` (a partition's manifest), or None when absent or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = 1,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Ingest the landing exposure days of ``[run_date - window_days + 1, run_date]`` into bronze and silver.

    Unchanged landing days (bronze) and unchanged bronze pairs (silver) are skipped unless ``force``.
    Returns (and writes as ``reports/<run_date>/exposures.json``) per day counts; ``cfg`` is accepted for
    the jobs' uniform signature.
    """
    lake = Lake(lake_root)
    days = window(run_date, window_days, Lake.partition_days(lake.landing_exposures()))
    expected = window(run_date, window_days, [run_date - dt.timedelta(days=i) for i in range(window_days or 0)])
    bronze: dict[str, dict[str, Any]] = {}
    for day in days:
        files = landing_files(lake.landing_exposures(day))
        previous = previous_manifest(bronze_exposures(lake, day))
        if not files:
            bronze[day.isoformat()] = {"status": "empty", "rows_in": 0, "rows_out": 0, "rejected": 0}
        elif not force and previous is not None and previous.get("files") == fingerprint(files):
            bronze[day.isoformat()] = {"status": "skipped", **previous.get("counts", {})}
        else:
            bronze[day.isoformat()] = _ingest_day(spark, lake, day, files)
    silver = {
        day.isoformat(): _silver_day(spark, lake, day, force) for day in days if bronze_exposures(lake, day).is_dir()
    }
    report: dict[str, Any] = {
        "stage": "exposures",
        "run_date": run_date.isoformat(),
        "window_days": window_days,
        "bronze": bronze,
        "silver": silver,
        "ingested_days": [d for d, r in bronze.items() if r["status"] == "ingested"],
        "skipped_days": [d for d, r in bronze.items() if r["status"] == "skipped"],
        "missing_days": [d.isoformat() for d in expected if d not in set(days)],
        "rows_in": sum(r.get("rows_in", 0) for r in bronze.values()),
        "rows_out": sum(r.get("rows_out", 0) for r in bronze.values()),
        "rejected": sum(r.get("rejected", 0) for r in bronze.values()),
        "exposures": sum(r.get("rows_out", 0) for r in silver.values()),
        "duplicates": sum(
            r.get("duplicates_in_day", 0) + r.get("duplicates_of_previous_day", 0) for r in silver.values()
        ),
    }
    write_report(lake, run_date, "exposures", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(
        run,
        "Ingest the scoring API's exposure log into bronze and silver Parquet.",
        "mercato-exposures",
        1,
        argv,
        force_help="re-ingest days whose landing files are unchanged",
    )


if __name__ == "__main__":
    raise SystemExit(main())
