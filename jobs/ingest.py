"""Ingest: landing JSONL → bronze Parquet, typed, with unreadable lines quarantined.

For each landing day ``dt`` in the window, every ``*.jsonl`` line is parsed against an explicit
schema (all fields read as text, then cast, so ``"12.5"`` and ``12.5`` both give a price).
A line that is not a JSON object, or whose ``ts`` is present but not an ISO-8601 timestamp, goes to
``bronze/_rejected/dt=…`` with the reason; a price or quantity that does not cast becomes null and
is counted. ``event_id`` is kept when given, else ``sha1(user|item|type|ts|session)`` with ``ts``
rendered as ``yyyy-MM-ddTHH:mm:ss.ffffffZ`` (UTC) and a missing part as the empty string.

Each bronze day partition holds ``_SOURCE.json`` (file names, sizes, mtimes of the landing files it
came from, and its counts); a day whose landing files are unchanged is skipped and reported. The
changed days are parsed in one pass and written in one Spark job (partitioned by day into a staging
folder), then each day's folder replaces its partition together with its ``_SOURCE.json``.
``landing/items`` → ``bronze/items`` the same way, with the source file, its mtime and the line
order kept so that clean can let the last drop win.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import Config
from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    BRAND_COL,
    CATEGORY_COL,
    EVENT_COLUMNS,
    EVENT_ID_COL,
    EVENT_TYPE_COL,
    ITEM_COL,
    ITEM_COLUMNS,
    PRICE_COL,
    QUANTITY_COL,
    SESSION_COL,
    TITLE_COL,
    TS_COL,
    USER_COL,
)
from core.lake import Lake
from core.online import POSITION_COL, REQUEST_ID_COL
from jobs.common import (
    REQUEST_EVENT_COLUMNS,
    SOURCE_FILE_COL,
    SOURCE_MTIME_COL,
    SOURCE_SEQ_COL,
    bronze_items_path,
    rejected_path,
    run_job_main,
    window,
    write_partitions_atomic,
    write_report,
)

SOURCE_MANIFEST = "_SOURCE.json"
LANDING_SUFFIXES = (".jsonl", ".jsonl.gz")
CORRUPT_COL = "_corrupt_record"
RAW_COL = "raw"
REASON_COL = "reject_reason"
BLANK = "blank_line"
NOT_OBJECT = "not_json_object"
BAD_TS = "unparseable_ts"
#: Counted, never written: an empty line is not a record.
NOT_RECORDS = (BLANK,)

RAW_EVENT_FIELDS = (*EVENT_COLUMNS, *REQUEST_EVENT_COLUMNS)
#: What bronze keeps of an event: the contract's columns, then the request it followed.
BRONZE_EVENT_COLUMNS = (*EVENT_COLUMNS, *REQUEST_EVENT_COLUMNS)
RAW_ITEM_FIELDS = (ITEM_COL, CATEGORY_COL, BRAND_COL, PRICE_COL, AVAILABLE_COL, TITLE_COL, ATTRIBUTES_COL)


def raw_schema(fields: tuple[str, ...]) -> T.StructType:
    """Every field as text (Spark keeps a number's or list's JSON text), plus the corrupt-record column."""
    return T.StructType(
        [T.StructField(f, T.StringType()) for f in fields] + [T.StructField(CORRUPT_COL, T.StringType())]
    )


def _blank_to_null(col: Column) -> Column:
    return F.when(F.trim(col) == "", F.lit(None).cast("string")).otherwise(col)


def _coerced(raw: Column, typed: Column) -> Column:
    """1 when a value was given but did not cast (so it was nulled), else 0."""
    return F.when(_blank_to_null(raw).isNotNull() & typed.isNull(), 1).otherwise(0)


def parse_lines(lines: DataFrame, fields: tuple[str, ...], *, value_col: str = "value") -> DataFrame:
    """Parse text lines as JSON objects: ``raw``, one text column per field and ``reject_reason``.

    Blank lines get ``blank_line``; anything that is not one JSON object (bad JSON, arrays, scalars)
    gets ``not_json_object``.
    """
    others = [c for c in lines.columns if c != value_col]
    with_json = lines.select(
        F.col(value_col).alias(RAW_COL),
        *others,
        F.from_json(F.col(value_col), raw_schema(fields), {"columnNameOfCorruptRecord": CORRUPT_COL}).alias("_json"),
    )
    parsed = F.col("_json")
    stripped = F.trim(F.col(RAW_COL))
    reason = (
        F.when(stripped == "", F.lit(BLANK))
        .when(~stripped.startswith("{") | parsed.isNull() | parsed[CORRUPT_COL].isNotNull(), F.lit(NOT_OBJECT))
        .otherwise(F.lit(None).cast("string"))
    )
    return with_json.select(
        F.col(RAW_COL),
        *others,
        *[F.when(reason.isNull(), parsed[f]).alias(f) for f in fields],
        reason.alias(REASON_COL),
    )


def event_id_expr(
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
    type_col: str = EVENT_TYPE_COL,
    ts_col: str = TS_COL,
    session_col: str = SESSION_COL,
) -> Column:
    """sha1 of ``user|item|type|ts|session`` (ts as UTC ``yyyy-MM-ddTHH:mm:ss.ffffffZ``, missing → "")."""
    ts_text = F.date_format(F.col(ts_col), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    parts = [
        F.trim(F.col(user_col)),
        F.trim(F.col(item_col)),
        F.trim(F.col(type_col)),
        ts_text,
        F.trim(F.col(session_col)),
    ]
    return F.sha1(F.concat_ws("|", *[F.coalesce(p, F.lit("")) for p in parts]))


def type_events(parsed: DataFrame) -> DataFrame:
    """Cast parsed event lines to the bronze schema; a present but unparseable ``ts`` is rejected.

    Adds ``price_invalid``/``quantity_invalid`` (1 when a given value did not cast) for the report. The
    request columns are kept: ``request_id`` trimmed (blank → null), ``position`` an integer >= 1, else null.
    """
    ts_raw = _blank_to_null(F.col(TS_COL))
    ts = F.try_to_timestamp(ts_raw)
    price = F.expr(f"try_cast({PRICE_COL} as double)")
    quantity = F.expr(f"try_cast(try_cast({QUANTITY_COL} as double) as int)")
    reason = F.when(F.col(REASON_COL).isNull() & ts_raw.isNotNull() & ts.isNull(), F.lit(BAD_TS)).otherwise(
        F.col(REASON_COL)
    )
    typed = parsed.select(
        "*",
        ts.alias("_ts"),
        price.alias("_price"),
        quantity.alias("_quantity"),
        reason.alias("_reason"),
        _coerced(F.col(PRICE_COL), price).alias("price_invalid"),
        _coerced(F.col(QUANTITY_COL), quantity).alias("quantity_invalid"),
    )
    typed = (
        typed.drop(TS_COL, PRICE_COL, QUANTITY_COL, REASON_COL)
        .withColumnsRenamed({"_ts": TS_COL, "_price": PRICE_COL, "_quantity": QUANTITY_COL, "_reason": REASON_COL})
        .withColumn(EVENT_ID_COL, F.coalesce(F.trim(_blank_to_null(F.col(EVENT_ID_COL))), event_id_expr()))
    )
    if REQUEST_ID_COL in typed.columns:
        position = F.expr(f"try_cast(try_cast({POSITION_COL} as double) as int)")
        typed = typed.withColumns(
            {
                REQUEST_ID_COL: F.trim(_blank_to_null(F.col(REQUEST_ID_COL))),
                POSITION_COL: F.when(position >= 1, position).otherwise(F.lit(None).cast("int")),
            }
        )
    columns = [c for c in BRONZE_EVENT_COLUMNS if c in typed.columns]
    return typed.select(*columns, *[c for c in typed.columns if c not in columns])


def _raw_only_if_rejected(labelled: DataFrame) -> DataFrame:
    """Keep the raw line only where it will be quarantined (keeps cached rows small)."""
    return labelled.withColumn(RAW_COL, F.when(F.col(REASON_COL).isNotNull(), F.col(RAW_COL)))


def ingest_events(lines: DataFrame, *, value_col: str = "value") -> DataFrame:
    """Text lines (``value`` + any provenance columns) → typed events labelled with ``reject_reason``."""
    return _raw_only_if_rejected(type_events(parse_lines(lines, RAW_EVENT_FIELDS, value_col=value_col)))


def type_items(parsed: DataFrame) -> DataFrame:
    """Cast parsed catalogue lines to the item schema (``attributes`` a list of strings)."""
    price = F.expr(f"try_cast({PRICE_COL} as double)")
    available = F.expr(f"try_cast({AVAILABLE_COL} as boolean)")
    attributes = F.from_json(F.col(ATTRIBUTES_COL), T.ArrayType(T.StringType()))
    attributes = F.when(F.trim(F.col(ATTRIBUTES_COL)).startswith("["), attributes)
    return parsed.select(
        F.col(ITEM_COL),
        F.col(CATEGORY_COL),
        F.col(BRAND_COL),
        price.alias(PRICE_COL),
        available.alias(AVAILABLE_COL),
        F.col(TITLE_COL),
        attributes.alias(ATTRIBUTES_COL),
        *[c for c in parsed.columns if c not in RAW_ITEM_FIELDS],
        _coerced(F.col(PRICE_COL), price).alias("price_invalid"),
        _coerced(F.col(AVAILABLE_COL), available).alias("available_invalid"),
        _coerced(F.col(ATTRIBUTES_COL), attributes).alias("attributes_invalid"),
    )


def ingest_items(lines: DataFrame, *, value_col: str = "value") -> DataFrame:
    """Catalogue text lines → typed items labelled with ``reject_reason``."""
    return _raw_only_if_rejected(type_items(parse_lines(lines, RAW_ITEM_FIELDS, value_col=value_col)))


def accepted(labelled: DataFrame, columns: tuple[str, ...]) -> DataFrame:
    return labelled.filter(F.col(REASON_COL).isNull()).select(*columns)


def rejected(labelled: DataFrame, *, keep: Sequence[str] = ()) -> DataFrame:
    """Rows to quarantine: raw line, reason, source file (and the ``keep`` columns)."""
    return labelled.filter(F.col(REASON_COL).isNotNull() & ~F.col(REASON_COL).isin(*NOT_RECORDS)).select(
        F.col(RAW_COL), F.col(REASON_COL).alias("reason"), F.col(SOURCE_FILE_COL), *keep
    )


def landing_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(LANDING_SUFFIXES))


def fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    """Names, sizes and mtimes of the landing files: equal fingerprints mean nothing new landed."""
    out = []
    for path in files:
        st = path.stat()
        out.append({"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def previous_manifest(partition: Path) -> dict[str, Any] | None:
    try:
        return json.loads((partition / SOURCE_MANIFEST).read_text())
    except (OSError, ValueError):
        return None


UNIT_COL = "_unit"


@dataclass(frozen=True)
class _Unit:
    """One output partition: its landing files (all in one folder, named ``key``) and where it goes."""

    key: str
    files: list[Path]
    target: Path
    reject_target: Path


def _read_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    return spark.read.text([str(p) for p in files]).select(
        F.col("value"),
        F.col("_metadata.file_name").alias(SOURCE_FILE_COL),
        F.col("_metadata.file_modification_time").alias(SOURCE_MTIME_COL),
        F.regexp_extract(F.col("_metadata.file_path"), r"([^/]+)/[^/]+$", 1).alias(UNIT_COL),
    )


def _summarise(rows: list[Any], invalid_cols: tuple[str, ...]) -> dict[str, Any]:
    by_reason = {r[REASON_COL]: int(r["n"]) for r in rows}
    out_rows = by_reason.pop(None, 0)
    blank = sum(by_reason.pop(r, 0) for r in NOT_RECORDS)
    coerced = {
        c.removesuffix("_invalid"): sum(int(r[c] or 0) for r in rows if r[REASON_COL] is None) for c in invalid_cols
    }
    return {
        "rows_in": out_rows + sum(by_reason.values()),
        "rows_out": out_rows,
        "rejected": sum(by_reason.values()),
        "rejected_by_reason": by_reason,
        "blank_lines": blank,
        "coerced_to_null": coerced,
    }


def _commit_units(
    labelled: DataFrame,
    todo: list[tuple[_Unit, list[dict[str, Any]]]],
    counts: dict[str, dict[str, Any]],
    columns: tuple[str, ...],
) -> None:
    """Write every unit's accepted rows (with its ``_SOURCE.json``) in one Spark job, and its quarantine in one more.

    A unit whose lines are all rejected still gets its (empty) partition, so that the next run sees
    its manifest; a unit with no rejected line loses an older quarantine folder.
    """
    written_at = dt.datetime.now(dt.UTC).isoformat()
    manifests = {
        unit.key: {SOURCE_MANIFEST: {"files": source, "counts": counts[unit.key], "written_at": written_at}}
        for unit, source in todo
    }
    write_partitions_atomic(
        labelled.filter(F.col(REASON_COL).isNull()).select(*columns, UNIT_COL),
        UNIT_COL,
        {unit.key: unit.target for unit, _ in todo},
        json_files=manifests,
    )
    with_rejects = {unit.key: unit.reject_target for unit, _ in todo if counts[unit.key]["rejected"]}
    if with_rejects:
        quarantine = rejected(labelled.filter(F.col(UNIT_COL).isin(*with_rejects)), keep=(UNIT_COL,))
        write_partitions_atomic(quarantine, UNIT_COL, with_rejects)
    for unit, _ in todo:
        if unit.key not in with_rejects and unit.reject_target.exists():
            shutil.rmtree(unit.reject_target)


def _ingest_units(
    spark: SparkSession,
    units: list[_Unit],
    *,
    transform: Callable[[DataFrame], DataFrame],
    columns: tuple[str, ...],
    invalid_cols: tuple[str, ...],
    force: bool,
    with_seq: bool = False,
) -> dict[str, dict[str, Any]]:
    """Parse every changed unit's files in one pass, then write all their partitions and quarantines at once."""
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[_Unit, list[dict[str, Any]]]] = []
    for unit in units:
        source = fingerprint(unit.files)
        previous = previous_manifest(unit.target)
        if not force and previous is not None and previous.get("files") == source:
            results[unit.key] = {"status": "skipped", **previous.get("counts", {})}
        else:
            todo.append((unit, source))
    files = [f for unit, _ in todo for f in unit.files]
    if not todo:
        return results
    if files:
        lines = _read_lines(spark, files)
    else:
        schema = "value string, source_file string, source_mtime timestamp, _unit string"
        lines = spark.createDataFrame([], schema)
    if with_seq:
        lines = lines.withColumn(SOURCE_SEQ_COL, F.monotonically_increasing_id())
    labelled = transform(lines).cache()
    try:
        rows = (
            labelled.groupBy(UNIT_COL, REASON_COL)
            .agg(F.count(F.lit(1)).alias("n"), *[F.sum(c).alias(c) for c in invalid_cols])
            .collect()
        )
        unexpected = {r[UNIT_COL] for r in rows} - {unit.key for unit, _ in todo}
        if unexpected:
            raise RuntimeError(f"lines read from unexpected folder(s) {sorted(unexpected)}; landing layout changed?")
        counts = {unit.key: _summarise([r for r in rows if r[UNIT_COL] == unit.key], invalid_cols) for unit, _ in todo}
        _commit_units(labelled, todo, counts, columns)
        for unit, _ in todo:
            results[unit.key] = {"status": "ingested", **counts[unit.key]}
    finally:
        labelled.unpersist()
    return results


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = 1,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Ingest landing days in ``[run_date - window_days + 1, run_date]`` and the catalogue; return the report.

    ``window_days=None`` takes every landing day up to ``run_date`` (unchanged days are skipped
    anyway); ``force`` re-ingests unchanged days too. ``cfg`` is accepted for a uniform job
    signature; ingest has no tunables.
    """
    lake = Lake(lake_root)
    landed = Lake.partition_days(lake.landing_events())
    days = window(run_date, window_days, landed)
    expected = window(run_date, window_days, [run_date - dt.timedelta(days=i) for i in range(window_days or 0)])
    units = [
        _Unit(
            f"dt={day.isoformat()}",
            landing_files(lake.landing_events(day)),
            lake.bronze_events(day),
            rejected_path(lake, day),
        )
        for day in days
    ]
    results = _ingest_units(
        spark,
        units,
        transform=ingest_events,
        # the landing file of each row: the raw gate names the files behind a failure (jobs.quarantine)
        columns=(*BRONZE_EVENT_COLUMNS, SOURCE_FILE_COL),
        invalid_cols=("price_invalid", "quantity_invalid"),
        force=force,
    )
    per_day = {day.isoformat(): results[f"dt={day.isoformat()}"] for day in days}
    item_files = landing_files(lake.landing_items())
    items: dict[str, Any] = {"status": "absent"}
    if item_files:
        item_unit = _Unit(lake.landing_items().name, item_files, bronze_items_path(lake), rejected_path(lake))
        items = _ingest_units(
            spark,
            [item_unit],
            transform=ingest_items,
            columns=(*ITEM_COLUMNS, SOURCE_FILE_COL, SOURCE_MTIME_COL, SOURCE_SEQ_COL),
            invalid_cols=("price_invalid", "available_invalid", "attributes_invalid"),
            force=force,
            with_seq=True,
        )[item_unit.key]
    report: dict[str, Any] = {
        "stage": "ingest",
        "run_date": run_date.isoformat(),
        "window_days": window_days,
        "days": per_day,
        "ingested_days": [d for d, r in per_day.items() if r["status"] == "ingested"],
        "skipped_days": [d for d, r in per_day.items() if r["status"] == "skipped"],
        "missing_days": [d.isoformat() for d in expected if d not in set(days)],
        "rows_in": sum(r.get("rows_in", 0) for r in per_day.values()),
        "rows_out": sum(r.get("rows_out", 0) for r in per_day.values()),
        "rejected": sum(r.get("rejected", 0) for r in per_day.values()),
        "items": items,
    }
    write_report(lake, run_date, "ingest", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(
        run,
        "Ingest landing JSONL into bronze Parquet.",
        "mercato-ingest",
        1,
        argv,
        force_help="re-ingest days whose landing files are unchanged",
    )


if __name__ == "__main__":
    raise SystemExit(main())
