"""Helpers shared by the Spark jobs: schemas, the data window, atomic Parquet writes, reports, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    BRAND_COL,
    CATEGORY_COL,
    DT_COL,
    EVENT_ID_COL,
    EVENT_TYPE_COL,
    ITEM_COL,
    PRICE_COL,
    QUANTITY_COL,
    SESSION_COL,
    TITLE_COL,
    TS_COL,
    USER_COL,
)
from core.lake import Lake, commit_path, staging_path
from core.online import POSITION_COL, REQUEST_ID_COL
from core.settings import get_settings

#: ``com.ibm.icu.text.Normalizer.compose(s, false)`` is NFC.
NFC_CLASS = "com.ibm.icu.text.Normalizer"

#: Rows per output Parquet file; day partitions and gold tables stay at one or two files.
ROWS_PER_FILE = 2_000_000

#: Event columns kept from landing to silver after the contract's: the recommendation answer an event followed
#: (``request_id``) and the item's 1-based ``position`` in it, null on events that followed none (attribution
#: reads them; partitions written before them read as null).
REQUEST_EVENT_COLUMNS: tuple[str, ...] = (REQUEST_ID_COL, POSITION_COL)

BRONZE_EVENT_SCHEMA = T.StructType(
    [
        T.StructField(EVENT_ID_COL, T.StringType()),
        T.StructField(USER_COL, T.StringType()),
        T.StructField(ITEM_COL, T.StringType()),
        T.StructField(EVENT_TYPE_COL, T.StringType()),
        T.StructField(TS_COL, T.TimestampType()),
        T.StructField(SESSION_COL, T.StringType()),
        T.StructField(PRICE_COL, T.DoubleType()),
        T.StructField(QUANTITY_COL, T.IntegerType()),
        T.StructField(REQUEST_ID_COL, T.StringType()),
        T.StructField(POSITION_COL, T.IntegerType()),
    ]
)

ITEM_SCHEMA = T.StructType(
    [
        T.StructField(ITEM_COL, T.StringType()),
        T.StructField(CATEGORY_COL, T.StringType()),
        T.StructField(BRAND_COL, T.StringType()),
        T.StructField(PRICE_COL, T.DoubleType()),
        T.StructField(AVAILABLE_COL, T.BooleanType()),
        T.StructField(TITLE_COL, T.StringType()),
        T.StructField(ATTRIBUTES_COL, T.ArrayType(T.StringType())),
    ]
)

#: Bronze items carry where each row came from, so that clean can let the last drop win.
SOURCE_FILE_COL = "source_file"
SOURCE_MTIME_COL = "source_mtime"
SOURCE_SEQ_COL = "source_seq"

REJECTED_SCHEMA = T.StructType(
    [
        T.StructField("raw", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField(SOURCE_FILE_COL, T.StringType()),
    ]
)


def bronze_items_path(lake: Lake) -> Path:
    return lake.root / "bronze" / "items"


def rejected_path(lake: Lake, day: dt.date | None = None) -> Path:
    """Quarantine of raw lines that could not be typed: ``bronze/_rejected/dt=…`` (``items`` for the catalogue)."""
    base = lake.root / "bronze" / "_rejected"
    return base / "items" if day is None else base / f"dt={day.isoformat()}"


def window(run_date: dt.date, window_days: int | None, available: Iterable[dt.date]) -> list[dt.date]:
    """The days of ``available`` inside ``[run_date - window_days + 1, run_date]`` (all up to run_date if None)."""
    if window_days is not None and window_days < 1:
        raise ValueError(f"window_days must be >= 1 (got {window_days}); pass None for every day up to run_date")
    start = dt.date.min if window_days is None else run_date - dt.timedelta(days=window_days - 1)
    return sorted(d for d in set(available) if start <= d <= run_date)


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC of ``day`` as a naive datetime (Spark's session clock is UTC)."""
    return dt.datetime(day.year, day.month, day.day)


def nfc(col: Column) -> Column:
    """NFC normal form in the JVM (ICU4J ships with Spark 4), so no Python worker is started."""
    return F.when(
        col.isNotNull(), F.call_function("java_method", F.lit(NFC_CLASS), F.lit("compose"), col, F.lit(False))
    )


def clean_id(column: str | Column) -> Column:
    """Trim whitespace (Unicode included) and NFC-normalise an id; empty strings become null so they count as missing.

    Written so that each row runs the trimming regex once: the blank and non-ASCII tests look at
    the raw value (NFC leaves an ASCII string as it is, so testing before trimming changes nothing).
    """
    col = F.col(column) if isinstance(column, str) else column
    trimmed = F.regexp_replace(col, r"^[\s\p{Z}]+|[\s\p{Z}]+$", "")
    normalised = F.when(col.rlike(r"[^\x00-\x7F]"), nfc(trimmed)).otherwise(trimmed)
    return F.when(col.rlike(r"^[\s\p{Z}]*\z"), F.lit(None).cast("string")).otherwise(normalised)


def read_days(spark: SparkSession, base: Path, days: Iterable[dt.date], schema: T.StructType) -> DataFrame:
    """The ``dt=…`` partitions of ``base`` for ``days`` in one read, with a ``dt`` date column.

    One ``spark.read`` of the day folders (``basePath`` = ``base``, so ``dt`` comes from partition
    discovery) plans in one step however many days there are, where a union of per-day reads
    would plan one scan per day.
    """
    with_day = T.StructType([*schema.fields, T.StructField(DT_COL, T.DateType())])
    wanted = sorted(set(days))
    if not wanted:
        return spark.createDataFrame([], with_day)
    paths = [str(base / f"dt={day.isoformat()}") for day in wanted]
    with listing_on_driver(spark, len(paths)):
        return spark.read.schema(with_day).option("basePath", str(base)).parquet(*paths)


#: Above this many folders Spark lists them with a distributed job (one task per folder).
PARALLEL_LISTING_CONF = "spark.sql.sources.parallelPartitionDiscovery.threshold"


@contextmanager
def listing_on_driver(spark: SparkSession, n_paths: int) -> Iterator[None]:
    """Let Spark list ``n_paths`` folders of the (local) lake on the driver while a read is planned.

    A read lists its files when it is created. Past the threshold (32 folders) Spark starts a job
    with a task per folder, made for object stores; on a local disk listing a year of day folders
    on the driver takes milliseconds, where that job takes seconds.
    """
    previous = spark.conf.get(PARALLEL_LISTING_CONF, None)
    spark.conf.set(PARALLEL_LISTING_CONF, str(max(n_paths, 32)))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(PARALLEL_LISTING_CONF)
        else:
            spark.conf.set(PARALLEL_LISTING_CONF, previous)


def folder_fingerprint(folder: Path) -> list[dict[str, Any]]:
    """Names, sizes and mtimes of the files in ``folder`` (sorted; empty when it is absent).

    Every write of a partition replaces its folder with new files, so an equal fingerprint means
    the partition is the one a cache was built from.
    """
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            out.append({"name": entry.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is absent or unreadable (a cache miss, not an error)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_table(spark: SparkSession, path: Path, schema: T.StructType) -> DataFrame:
    """The Parquet table at ``path`` read with ``schema``; empty when no earlier run has written it."""
    if path.exists():
        return spark.read.schema(schema).parquet(str(path))
    return spark.createDataFrame([], schema)


def files_for(rows: int) -> int:
    """How many Parquet files ``rows`` rows are written as (``ROWS_PER_FILE`` each, at least one)."""
    return max(1, -(-rows // ROWS_PER_FILE))


@contextmanager
def _staging_folder(target: Path) -> Iterator[Path]:
    """A fresh staging sibling of ``target`` (same filesystem, so it can be renamed in); removed if the block fails."""
    staged = staging_path(target)
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _write_parquet(df: DataFrame, path: Path, rows: int | None) -> None:
    """Write ``df`` to the new folder ``path``; with ``rows`` known, as ``files_for(rows)`` files."""
    out = df.coalesce(files_for(rows)) if rows is not None else df
    out.write.mode("error").parquet(str(path))


def write_atomic(
    df: DataFrame, target: Path, *, rows: int | None = None, json_files: Mapping[str, Any] | None = None
) -> None:
    """Write ``df`` as Parquet to a staging sibling of ``target``, add ``json_files`` (name → payload), then commit.

    A rerun replaces the partition whole; readers see the old or the new one, never a mix.
    """
    with _staging_folder(target) as staged:
        _write_parquet(df, staged, rows)
        for name, payload in (json_files or {}).items():
            (staged / name).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        commit_path(staged, target)


def write_tables_atomic(
    tables: Mapping[str, DataFrame],
    target: Path,
    *,
    rows: Mapping[str, int] | None = None,
    replace_folder: bool = True,
) -> None:
    """Write each table to ``target/<name>`` as Parquet: all into one staging folder first, then commit.

    ``replace_folder=True``: the staging folder replaces ``target`` in one rename, so readers see the
    old set of tables or the new one, and whatever else was under ``target`` is gone.
    ``replace_folder=False``: once every table is written, each replaces its own ``target/<name>``
    and the rest of ``target`` stays. Either way a failed write leaves ``target`` as it was and no
    staging folder behind. ``rows`` (per table name) sizes the output files.
    """
    sizes = rows or {}
    staging_target = target if replace_folder else target / "tables"
    with _staging_folder(staging_target) as staged:
        for name, table in tables.items():
            _write_parquet(table, staged / name, sizes.get(name))
        if replace_folder:
            commit_path(staged, target)
            return
        try:
            for name in tables:
                commit_path(staged / name, target / name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)


#: The column a partitioned write splits on: an index into its targets, so staged folder names stay plain.
PART_COL = "_part"


def write_partitions_atomic(
    df: DataFrame,
    key_col: str,
    targets: Mapping[str, Path],
    *,
    json_files: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write ``df`` as one Parquet folder per value of ``key_col`` (as text) in one Spark job, then commit each.

    ``targets`` maps a key value to its folder; ``key_col`` itself is not written. Rows whose key has
    no target are left out, and a target without rows gets an empty (schema-only) partition. All
    partitions are written into one staging folder first; then each, with its ``json_files[key]``
    (name → payload) added, replaces its target in one rename. Each partition is atomic on its own
    (a reader sees its old folder or its new one); a failed write leaves every target as it was.
    """
    if not targets:
        return
    index = {key: n for n, key in enumerate(targets)}
    lookup = F.create_map(*[F.lit(x) for key, n in index.items() for x in (key, n)])
    columns = [c for c in df.columns if c != key_col]
    rows = df.select(*columns, lookup[F.col(key_col).cast("string")].alias(PART_COL)).filter(
        F.col(PART_COL).isNotNull()
    )
    base = next(iter(targets.values())).parent
    with _staging_folder(base) as staged:
        try:
            (
                rows.repartition(PART_COL)
                .write.mode("error")
                .option("maxRecordsPerFile", ROWS_PER_FILE)
                .partitionBy(PART_COL)
                .parquet(str(staged / "parts"))
            )
            empty: list[Path] | None = None
            for key, n in index.items():
                part = staged / "parts" / f"{PART_COL}={n}"
                if not part.exists():
                    if empty is None:
                        df.select(*columns).limit(0).write.parquet(str(staged / "empty"))
                        empty = [p for p in (staged / "empty").iterdir() if p.name.endswith(".parquet")]
                    part.mkdir(parents=True)
                    for file in empty:
                        shutil.copy2(file, part / file.name)
                for name, payload in ((json_files or {}).get(key) or {}).items():
                    (part / name).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
                commit_path(part, targets[key])
        finally:
            shutil.rmtree(staged, ignore_errors=True)


def write_report(lake: Lake, run_date: dt.date, stage: str, report: Mapping[str, Any]) -> Path:
    """Write a stage's report to ``reports/<run_date>/<stage>.json`` (atomic rename)."""
    from core.reports import write_report as write_stage_report

    return write_stage_report(lake.root, run_date, stage, dict(report))


def parse_date(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"run date {value!r} is not an ISO date: pass --run-date YYYY-MM-DD") from exc


#: The destinations of :func:`job_parser`'s own options; any other option becomes a keyword argument of ``run``.
COMMON_ARGS = ("lake", "run_date", "window_days")


def job_parser(description: str, default_window: int | None) -> argparse.ArgumentParser:
    """The common spark-submit CLI: ``--lake``, ``--run-date``, ``--window-days``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lake", default=None, help="lake root (default: RECSYS_LAKE_URI or <RECSYS_HOME>/lake)")
    parser.add_argument("--run-date", required=True, type=parse_date, help="the run's data interval day, YYYY-MM-DD")
    parser.add_argument(
        "--window-days",
        type=int,
        default=default_window,
        help=f"days up to run-date to process (default: {default_window or 'all'})",
    )
    return parser


def run_job_main(
    run: Callable[..., dict[str, Any]],
    description: str,
    app_name: str,
    default_window: int | None,
    argv: list[str] | None = None,
    *,
    add_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
    force_help: str | None = None,
) -> int:
    """``main()`` of a spark-submit job: parse the common CLI, run the job, print its report as JSON.

    ``add_arguments`` adds a job's own options to the parser; each is passed to ``run`` as the
    keyword argument named by its destination (``--force`` → ``force=``). ``force_help`` adds the
    incremental jobs' ``--force`` (redo what is unchanged) with that help text.
    """
    from core.config import load_config
    from jobs.spark import get_spark

    parser = job_parser(description, default_window=default_window)
    if force_help is not None:
        parser.add_argument("--force", action="store_true", help=force_help)
    if add_arguments is not None:
        add_arguments(parser)
    args = vars(parser.parse_args(argv))
    job_options = {name: value for name, value in args.items() if name not in COMMON_ARGS}
    report = run(
        lake_root_or_default(args["lake"]),
        args["run_date"],
        load_config(),
        get_spark(app_name),
        args["window_days"],
        **job_options,
    )
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def lake_root_or_default(arg: str | None) -> str:
    """The ``--lake`` argument, else the configured lake (``RECSYS_LAKE_URI`` or ``<RECSYS_HOME>/lake``)."""
    return arg or get_settings().lake
