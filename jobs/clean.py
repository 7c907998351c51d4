"""Clean: bronze days → silver days, and bronze/items → silver/items.

Every bronze row of the window is labelled with at most one ``drop_reason``, tested in this order:
``missing_id`` (user, item or ts null/empty after trimming), ``unknown_event_type``, ``duplicate``
(same ``event_id`` as an earlier row: earliest landing day, then ts, wins), ``bot_user`` (a user with
more than ``bot_max_events_per_minute`` events in one calendar minute or ``bot_max_events_per_day``
in one UTC day, counted over the whole window so a bot goes everywhere), ``negative_price``.
Unlabelled rows are silver. Ids are trimmed and NFC-normalised, event types trimmed and lower-cased,
missing prices filled from the catalogue; late rows (ts more than ``late_after_days`` before their
landing day) are kept and counted. The report counts every dropped row by reason over the window, so
``rows_in == rows_out + sum(dropped)``.

Incremental: a silver day depends on its bronze day and on window-wide facts (the bot set, the
earliest copy of each event id, the catalogue's prices), so every run labels the whole window from
one read of its bronze days, then fingerprints each day's kept rows (row count and an order-free
hash of their silver columns, computed in the same aggregation as the counts). Only the days whose
fingerprint differs from the ``_CLEAN.json`` beside their partition are rewritten, all in one Spark
job; the report lists ``cleaned_days`` and ``skipped_days``.

Silver items: the catalogue with one row per ``item_id`` (the last drop wins: latest file mtime,
then file name, then line), negative catalogue prices nulled (counted), items already in silver but
no longer in the catalogue kept, and items referenced by silver events but absent from the catalogue
added with null attributes (counted).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.config import Config
from core.contract import (
    DT_COL,
    EVENT_COLUMNS,
    EVENT_ID_COL,
    EVENT_TYPE_COL,
    EVENT_TYPES,
    ITEM_COL,
    ITEM_COLUMNS,
    PRICE_COL,
    SESSION_COL,
    TS_COL,
    USER_COL,
)
from core.lake import Lake
from jobs.common import (
    BRONZE_EVENT_SCHEMA,
    ITEM_SCHEMA,
    REQUEST_EVENT_COLUMNS,
    SOURCE_FILE_COL,
    SOURCE_MTIME_COL,
    SOURCE_SEQ_COL,
    bronze_items_path,
    clean_id,
    read_days,
    read_json,
    read_table,
    run_job_main,
    window,
    write_atomic,
    write_partitions_atomic,
    write_report,
)

DROP_REASON_COL = "drop_reason"
PRICE_FILLED_COL = "price_filled"
LATE_COL = "is_late"
MISSING_ID = "missing_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
DUPLICATE = "duplicate"
BOT_USER = "bot_user"
NEGATIVE_PRICE = "negative_price"
DROP_REASONS: tuple[str, ...] = (DUPLICATE, BOT_USER, UNKNOWN_EVENT_TYPE, MISSING_ID, NEGATIVE_PRICE)
SUPERSEDED = "superseded"
CLEAN_MANIFEST = "_CLEAN.json"
#: Part of every silver fingerprint: bump it when silver's layout changes, so every day is rewritten once.
SILVER_FORMAT = 1

BRONZE_ITEM_SCHEMA = (
    T.StructType(list(ITEM_SCHEMA.fields))
    .add(SOURCE_FILE_COL, T.StringType())
    .add(SOURCE_MTIME_COL, T.TimestampType())
    .add(SOURCE_SEQ_COL, T.LongType())
)


def _keep() -> Any:
    return F.col(DROP_REASON_COL).isNull()


def _label(condition: Any, reason: str) -> Any:
    """Set ``drop_reason`` where ``condition`` holds and no earlier reason applied."""
    return F.when(_keep() & condition, F.lit(reason)).otherwise(F.col(DROP_REASON_COL))


def normalise_events(
    events: DataFrame,
    *,
    id_cols: Sequence[str] = (USER_COL, ITEM_COL, SESSION_COL),
    type_col: str = EVENT_TYPE_COL,
) -> DataFrame:
    """Trim and NFC-normalise ids (empty → null), trim and lower-case event types."""
    cleaned = {c: clean_id(c) for c in id_cols}
    cleaned[type_col] = F.lower(F.trim(F.col(type_col)))
    return events.withColumns(cleaned)


def label_invalid(
    events: DataFrame,
    *,
    event_types: Sequence[str] = EVENT_TYPES,
    required: Sequence[str] = (USER_COL, ITEM_COL, TS_COL),
    type_col: str = EVENT_TYPE_COL,
) -> DataFrame:
    """Add ``drop_reason``: ``missing_id`` for a null required field, else ``unknown_event_type``."""
    if DROP_REASON_COL not in events.columns:
        events = events.withColumn(DROP_REASON_COL, F.lit(None).cast("string"))
    missing = F.lit(False)
    for c in required:
        missing = missing | F.col(c).isNull()
    events = events.withColumn(DROP_REASON_COL, _label(missing, MISSING_ID))
    unknown = F.col(type_col).isNull() | ~F.col(type_col).isin(*event_types)
    return events.withColumn(DROP_REASON_COL, _label(unknown, UNKNOWN_EVENT_TYPE))


def label_duplicates(
    events: DataFrame,
    *,
    key: str = EVENT_ID_COL,
    order_by: Sequence[str] = (DT_COL, TS_COL),
) -> DataFrame:
    """Label all but the first kept row of each ``key`` as ``duplicate``.

    First = smallest ``order_by`` (landing day, then ts), ties broken by the remaining event columns
    so reruns keep the same row.
    """
    order = [c for c in order_by if c in events.columns]
    order += [c for c in EVENT_COLUMNS if c in events.columns and c not in order and c != key]
    w = Window.partitionBy(F.col(key), _keep()).orderBy(*[F.col(c).asc_nulls_last() for c in order])
    return events.withColumn(DROP_REASON_COL, _label(F.row_number().over(w) > 1, DUPLICATE))


def bot_users(
    events: DataFrame,
    *,
    max_events_per_minute: int,
    max_events_per_day: int,
    user_col: str = USER_COL,
    ts_col: str = TS_COL,
) -> DataFrame:
    """Users with more than ``max_events_per_minute`` events in a calendar minute or ``max_events_per_day`` in a UTC day.

    Returns ``user_id, peak_per_minute, peak_per_day``. The rows are spread by user once, so the
    three aggregations need no further shuffle.
    """
    by_user = events.select(user_col, ts_col).repartition(user_col)
    per_minute = by_user.groupBy(user_col, F.date_trunc("minute", F.col(ts_col)).alias("_minute")).count()
    per_day = per_minute.groupBy(user_col, F.to_date("_minute").alias("_day")).agg(
        F.max("count").alias("_peak_minute"), F.sum("count").alias("_day_count")
    )
    peaks = per_day.groupBy(user_col).agg(
        F.max("_peak_minute").alias("peak_per_minute"), F.max("_day_count").alias("peak_per_day")
    )
    return peaks.filter(
        (F.col("peak_per_minute") > max_events_per_minute) | (F.col("peak_per_day") > max_events_per_day)
    )


def label_bots(events: DataFrame, bots: DataFrame, *, user_col: str = USER_COL) -> DataFrame:
    """Label every kept row of a user listed in ``bots`` as ``bot_user``."""
    flags = F.broadcast(bots.select(user_col).distinct().withColumn("_bot", F.lit(True)))
    joined = events.join(flags, on=user_col, how="left")
    return joined.withColumn(DROP_REASON_COL, _label(F.col("_bot").isNotNull(), BOT_USER)).drop("_bot")


def fill_prices(
    events: DataFrame, items: DataFrame, *, item_col: str = ITEM_COL, price_col: str = PRICE_COL
) -> DataFrame:
    """Fill null event prices with the catalogue price; ``price_filled`` marks the rows filled."""
    catalogue = items.select(F.col(item_col), F.col(price_col).alias("_catalogue_price"))
    joined = events.join(catalogue, on=item_col, how="left")
    filled = F.col(price_col).isNull() & F.col("_catalogue_price").isNotNull()
    return joined.withColumns(
        {
            PRICE_FILLED_COL: filled,
            price_col: F.coalesce(F.col(price_col), F.col("_catalogue_price")),
        }
    ).drop("_catalogue_price")


def label_negative_prices(events: DataFrame, *, price_col: str = PRICE_COL) -> DataFrame:
    return events.withColumn(DROP_REASON_COL, _label(F.col(price_col) < 0, NEGATIVE_PRICE))


def label_late(events: DataFrame, *, late_after_days: int, ts_col: str = TS_COL, day_col: str = DT_COL) -> DataFrame:
    """``is_late``: ts earlier than ``late_after_days`` days before the landing day's midnight (UTC)."""
    cutoff = F.date_sub(F.col(day_col), late_after_days).cast("timestamp")
    return events.withColumn(LATE_COL, F.coalesce(F.col(ts_col) < cutoff, F.lit(False)))


def prepare_events(events: DataFrame, *, event_types: Sequence[str] = EVENT_TYPES) -> DataFrame:
    """Normalise and label missing ids, unknown types and duplicates (the part bot detection reads)."""
    return label_duplicates(label_invalid(normalise_events(events), event_types=event_types))


def finish_events(prepared: DataFrame, bots: DataFrame, items: DataFrame, *, late_after_days: int) -> DataFrame:
    """Label bots and negative prices, fill prices from ``items``, flag late rows."""
    return label_late(
        label_negative_prices(fill_prices(label_bots(prepared, bots), items)), late_after_days=late_after_days
    )


@dataclass(frozen=True)
class CleanedEvents:
    """What :func:`clean_events` derives from bronze events.

    ``labelled``: every input row with ``drop_reason``, ``price_filled``, ``is_late``. ``bots``: the
    users labelled ``bot_user`` (``user_id, peak_per_minute, peak_per_day``). ``prepared``: the
    normalised rows labelled up to duplicates, which both of the others read: cache it (before
    them) when using both.
    """

    prepared: DataFrame
    bots: DataFrame
    labelled: DataFrame


def clean_events(
    events: DataFrame,
    items: DataFrame,
    *,
    event_types: Sequence[str] = EVENT_TYPES,
    bot_max_events_per_minute: int,
    bot_max_events_per_day: int,
    late_after_days: int,
) -> CleanedEvents:
    """Bronze events (with ``dt``) → the same rows labelled (see :class:`CleanedEvents`) and the bot users."""
    prepared = prepare_events(events, event_types=event_types)
    bots = bot_users(
        prepared.filter(_keep()),
        max_events_per_minute=bot_max_events_per_minute,
        max_events_per_day=bot_max_events_per_day,
    )
    labelled = finish_events(prepared, bots, items, late_after_days=late_after_days)
    return CleanedEvents(prepared=prepared, bots=bots, labelled=labelled)


def silver_rows(labelled: DataFrame) -> DataFrame:
    """The kept rows in the silver column order (``dt`` kept when present)."""
    extra = [c for c in (*REQUEST_EVENT_COLUMNS, DT_COL) if c in labelled.columns]
    return labelled.filter(_keep()).select(*EVENT_COLUMNS, *extra)


def label_items(bronze_items: DataFrame, *, item_col: str = ITEM_COL) -> DataFrame:
    """Normalise catalogue ids and label rows ``missing_id`` or ``superseded`` (an older drop of the same id)."""
    items = bronze_items.withColumn(item_col, clean_id(item_col)).withColumn(
        DROP_REASON_COL, F.when(F.col(item_col).isNull(), F.lit(MISSING_ID))
    )
    order = [
        F.col(c).desc_nulls_last() for c in (SOURCE_MTIME_COL, SOURCE_FILE_COL, SOURCE_SEQ_COL) if c in items.columns
    ]
    if not order:
        raise ValueError(
            f"bronze items need {SOURCE_MTIME_COL}/{SOURCE_FILE_COL}/{SOURCE_SEQ_COL} to pick the last drop; re-run ingest"
        )
    w = Window.partitionBy(F.col(item_col), _keep()).orderBy(*order)
    return items.withColumn(DROP_REASON_COL, _label(F.row_number().over(w) > 1, SUPERSEDED))


def catalogue(labelled_items: DataFrame, *, previous: DataFrame | None = None, item_col: str = ITEM_COL) -> DataFrame:
    """Kept catalogue rows (negative prices nulled) plus ``previous`` silver items no longer in the catalogue."""
    kept = (
        labelled_items.filter(_keep())
        .withColumn(PRICE_COL, F.when(F.col(PRICE_COL) >= 0, F.col(PRICE_COL)))
        .select(*ITEM_COLUMNS)
    )
    if previous is None:
        return kept
    carried = previous.select(*ITEM_COLUMNS).join(kept.select(item_col), on=item_col, how="left_anti")
    return kept.unionByName(carried)


def add_missing_items(items: DataFrame, events: DataFrame, *, item_col: str = ITEM_COL) -> DataFrame:
    """Items referenced by ``events`` but absent from ``items``, appended with null attributes."""
    missing = events.select(item_col).distinct().join(items.select(item_col), on=item_col, how="left_anti")
    nulls = [F.lit(None).cast(f.dataType).alias(f.name) for f in ITEM_SCHEMA.fields if f.name != item_col]
    return items.unionByName(missing.select(F.col(item_col), *nulls).select(*ITEM_COLUMNS))


def day_summaries(labelled: DataFrame) -> DataFrame:
    """Per ``dt`` and ``drop_reason``: rows, filled prices, late rows and, for kept rows, an order-free content hash.

    Each kept row's silver columns (nulls marked) are hashed once to 64 bits; ``hash_xor`` (their
    XOR) and ``hash_sum`` (the sum of their top 32 bits, which cannot overflow) identify a day's
    silver rows whatever their order, so a day whose rows hash as before is not rewritten. Kept rows
    never repeat (their event ids are unique), so XOR cannot cancel a pair.
    """
    columns = [F.col(c) for c in (*EVENT_COLUMNS, *REQUEST_EVENT_COLUMNS) if c in labelled.columns]
    nulls = sum((F.when(c.isNull(), F.lit(1 << n)).otherwise(F.lit(0)) for n, c in enumerate(columns)), F.lit(0))
    hashed = labelled.withColumn("_hash", F.when(_keep(), F.xxhash64(nulls, *columns)))
    return hashed.groupBy(DT_COL, DROP_REASON_COL).agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col(PRICE_FILLED_COL).cast("int")).alias("filled"),
        F.sum(F.col(LATE_COL).cast("int")).alias("late"),
        F.bit_xor("_hash").alias("hash_xor"),
        F.sum(F.shiftright("_hash", 32)).alias("hash_sum"),
    )


def _event_counts(rows: list[Any]) -> dict[str, Any]:
    """The report's counts from :func:`day_summaries` rows (``per_day``: rows in and out per landing day)."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    per_day: dict[str, dict[str, int]] = {}
    filled = late = 0
    for r in rows:
        day = per_day.setdefault(r[DT_COL].isoformat(), {"rows_in": 0, "rows_out": 0})
        day["rows_in"] += r["n"]
        if r[DROP_REASON_COL] is None:
            day["rows_out"] += r["n"]
            filled += int(r["filled"] or 0)
            late += int(r["late"] or 0)
        else:
            dropped[r[DROP_REASON_COL]] += r["n"]
    return {
        "rows_in": sum(d["rows_in"] for d in per_day.values()),
        "rows_out": sum(d["rows_out"] for d in per_day.values()),
        "dropped": dropped,
        "filled_price": filled,
        "late": late,
        "per_day": dict(sorted(per_day.items())),
    }


def silver_fingerprints(rows: list[Any], days: list[dt.date]) -> dict[str, dict[str, Any]]:
    """What each day's silver partition holds, from :func:`day_summaries` rows (a day without kept rows: empty)."""
    hashes = ("hash_xor", "hash_sum")
    out: dict[str, dict[str, Any]] = {
        day.isoformat(): {"format": SILVER_FORMAT, "rows": 0, **dict.fromkeys(hashes, 0)} for day in days
    }
    for r in rows:
        if r[DROP_REASON_COL] is None and r[DT_COL].isoformat() in out:
            out[r[DT_COL].isoformat()] |= {"rows": int(r["n"]), **{h: int(r[h] or 0) for h in hashes}}
    return out


def previous_fingerprint(partition: Path) -> dict[str, Any] | None:
    """The fingerprint a silver partition was written with (None: absent, so the day is rewritten)."""
    manifest = read_json(partition / CLEAN_MANIFEST)
    return None if manifest is None else manifest.get("fingerprint")


def _items_report(labelled_items: DataFrame, items: DataFrame, silver_items: DataFrame) -> dict[str, Any]:
    """The catalogue's counts in two Spark jobs (drops by reason, then silver items known to the catalogue or not)."""
    item_rows = (
        labelled_items.groupBy(DROP_REASON_COL)
        .agg(F.count(F.lit(1)).alias("n"), F.count(F.when(F.col(PRICE_COL) < 0, 1)).alias("negative"))
        .collect()
    )
    item_drops = {r[DROP_REASON_COL]: int(r["n"]) for r in item_rows}
    negative = sum(int(r["negative"]) for r in item_rows if r[DROP_REASON_COL] is None)
    known = items.select(ITEM_COL).distinct().withColumn("_known", F.lit(True))
    out = silver_items.join(known, on=ITEM_COL, how="left").agg(
        F.count(F.lit(1)).alias("n"), F.count(F.when(F.col("_known").isNull(), 1)).alias("missing")
    )
    totals = out.first()
    n_out, n_missing = int(totals["n"]), int(totals["missing"])
    n_kept = item_drops.pop(None, 0)
    return {
        "rows_in": n_kept + sum(item_drops.values()),
        "rows_out": n_out,
        "dropped": {MISSING_ID: item_drops.get(MISSING_ID, 0), SUPERSEDED: item_drops.get(SUPERSEDED, 0)},
        "negative_price_nulled": negative,
        "carried_from_previous": n_out - n_kept - n_missing,
        "added_from_events": n_missing,
    }


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config,
    spark: SparkSession,
    window_days: int | None = 1,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Clean the bronze days in ``[run_date - window_days + 1, run_date]`` and the catalogue; return the report.

    The window's bronze is read and labelled whole (duplicates and bots are window-wide facts), but
    only the silver days whose content changed are rewritten (all in one Spark job), each with
    ``_CLEAN.json``; the others are reported in ``skipped_days``. ``force`` rewrites every day.
    """
    lake = Lake(lake_root)
    days = window(run_date, window_days, Lake.partition_days(lake.bronze_events()))
    bronze = read_days(spark, lake.bronze_events(), days, BRONZE_EVENT_SCHEMA)

    bronze_items = read_table(spark, bronze_items_path(lake), BRONZE_ITEM_SCHEMA)
    previous = None
    if lake.silver_items().exists():
        previous = spark.read.schema(ITEM_SCHEMA).parquet(str(lake.silver_items())).cache()
        previous.count()  # read it before the commit below replaces its files
    labelled_items = label_items(bronze_items).cache()
    items = catalogue(labelled_items, previous=previous)

    cleaned = clean_events(
        bronze,
        items,
        bot_max_events_per_minute=cfg.clean.bot_max_events_per_minute,
        bot_max_events_per_day=cfg.clean.bot_max_events_per_day,
        late_after_days=cfg.events.late_after_days,
    )
    # Spark reuses a cached frame wherever its plan recurs: cache the shared part first.
    prepared = cleaned.prepared.cache()
    bots = cleaned.bots.cache()
    labelled = cleaned.labelled.cache()
    try:
        report: dict[str, Any] = {"stage": "clean", "run_date": run_date.isoformat(), "window_days": window_days}
        report["days"] = [d.isoformat() for d in days]
        summaries = day_summaries(labelled).collect()
        report.update(_event_counts(summaries))
        report["bot_users"] = bots.count()
        prepared.unpersist()

        fingerprints = silver_fingerprints(summaries, days)
        changed = [
            day
            for day in days
            if force or previous_fingerprint(lake.silver_events(day)) != fingerprints[day.isoformat()]
        ]
        written_at = dt.datetime.now(dt.UTC).isoformat()
        write_partitions_atomic(
            silver_rows(labelled).filter(F.col(DT_COL).isin(*changed) if changed else F.lit(False)),
            DT_COL,
            {day.isoformat(): lake.silver_events(day) for day in changed},
            json_files={
                day.isoformat(): {
                    CLEAN_MANIFEST: {
                        "fingerprint": fingerprints[day.isoformat()],
                        "counts": dict(report["per_day"].get(day.isoformat(), {"rows_in": 0, "rows_out": 0})),
                        "run_date": run_date.isoformat(),
                        "written_at": written_at,
                    }
                }
                for day in changed
            },
        )
        report["cleaned_days"] = [day.isoformat() for day in changed]
        report["skipped_days"] = [day.isoformat() for day in days if day not in set(changed)]
        for day in days:
            status = "cleaned" if day in set(changed) else "skipped"
            report["per_day"].setdefault(day.isoformat(), {"rows_in": 0, "rows_out": 0})["status"] = status

        silver_items = add_missing_items(items, silver_rows(labelled)).cache()
        report["items"] = _items_report(labelled_items, items, silver_items)
        write_atomic(silver_items, lake.silver_items(), rows=report["items"]["rows_out"])
    finally:
        for frame in (labelled, bots, labelled_items, prepared):
            frame.unpersist()
        if previous is not None:
            previous.unpersist()
    write_report(lake, run_date, "clean", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_job_main(
        run,
        "Clean bronze events and the catalogue into silver.",
        "mercato-clean",
        1,
        argv,
        force_help="rewrite silver days whose content is unchanged",
    )


if __name__ == "__main__":
    raise SystemExit(main())
