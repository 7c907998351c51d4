"""Validation gates: load a stage's lake partitions with Spark, run its GX suites, write Data Docs, fail loudly.

``validate_stage("raw" | "clean" | "features", ...)`` runs one GX checkpoint per table (a checkpoint
feeds one DataFrame to its validation definitions, and each table is its own DataFrame) on a file
context under ``<report_dir>/<run_date>/gx``; every checkpoint updates the Data Docs site at
``<report_dir>/<run_date>/data_docs/``, so one index lists every stage of the run. Expectations run
on the whole Spark DataFrame (cached once), never on a sample. A compact summary goes to
``<report_dir>/<run_date>/validation_<stage>.json``; on failure ``ValidationFailed`` carries it and
renders it as the readable report shown in the Airflow task log.

The raw gate judges days, not just a run (``expectations.raw_gate``): each judged day's outcome is
kept in ``<report_dir>/gates/raw/dt=….json`` and a day stays failed, run after run, until its data
changes (e.g. ``python -m jobs.quarantine`` set its bad landing files aside) and passes, or it is
accepted by hand (``python -m expectations.state``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Config, load_config
from core.contract import ITEM_COL, PRICE_COL, USER_COL
from core.lake import Lake
from core.settings import get_settings
from expectations.attribution import Attribution
from expectations.daily import DAY_COLUMNS
from expectations.raw_gate import RawPlan, attribute_failures, day_outcomes, plan_raw, record_outcomes
from expectations.suites import LEAKED_PAIR_COL, SPLIT_COL, TABLE_ROW_KEYS, USER_WITHOUT_TRAIN_COL, stage_suites

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("raw", "clean", "features")
DATA_DOCS_SITE = "mercato_site"
DATASOURCE = "mercato_spark"
PANDAS_DATASOURCE = "mercato_pandas"
#: How many offending values a summary keeps per expectation (Data Docs shows the same sample).
UNEXPECTED_SAMPLE = 10
#: How many of them the failure message prints.
MESSAGE_SAMPLE = 5
#: How many bad landing files the failure message lists (the summary keeps them all).
BAD_FILES_SHOWN = 20


class ValidationFailed(RuntimeError):
    """A stage's data broke its suite; ``str()`` is the report a user reads in the task log."""

    def __init__(self, stage: str, summary: dict[str, Any]) -> None:
        self.stage = stage
        self.summary = summary
        super().__init__(format_failure(summary))

    def __str__(self) -> str:
        return format_failure(self.summary)


def window_days_of(run_date: dt.date, window_days: int) -> list[dt.date]:
    """The days of the run window ``[run_date - window_days + 1, run_date]``."""
    if window_days < 1:
        raise ValueError(f"window_days must be ≥ 1, got {window_days}")
    return [run_date - dt.timedelta(days=offset) for offset in range(window_days - 1, -1, -1)]


def _read_partitions(
    spark: SparkSession,
    base: Path,
    run_date: dt.date,
    window_days: int,
    what: str,
    only_days: Collection[dt.date] | None = None,
) -> tuple[DataFrame, list[str]]:
    days = window_days_of(run_date, window_days)
    present = [day for day in Lake.partition_days(base) if days[0] <= day <= days[-1]]
    if only_days:
        present = [day for day in present if day in set(only_days)]
    if not present:
        raise FileNotFoundError(
            f"no {what} partition dt={days[0]}..{days[-1]} under {base}: run the job that writes it first "
            "(or pass a run date / window_days that covers data that exists)"
        )
    paths = [str(base / f"dt={day.isoformat()}") for day in present]
    return spark.read.option("basePath", str(base)).parquet(*paths), [f"dt={day.isoformat()}" for day in present]


def _read_table(spark: SparkSession, path: Path, what: str) -> DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{what} table {path} is missing: run the job that writes it first")
    return spark.read.parquet(str(path))


def split_check_frame(
    train: DataFrame, valid: DataFrame, test: DataFrame, user_col: str = USER_COL, item_col: str = ITEM_COL
) -> DataFrame:
    """Valid and test rows with the train facts the split must respect.

    ``leaked_pair`` is ``"<split>:<user>|<item>"`` when that pair is also in train (else null) and
    ``user_without_train`` is the user id when the user has no train row (else null), so a failed
    expectation lists the offending pairs and users themselves.
    """
    from pyspark.sql import functions as F

    held = valid.select(user_col, item_col).withColumn(SPLIT_COL, F.lit("valid"))
    held = held.unionByName(test.select(user_col, item_col).withColumn(SPLIT_COL, F.lit("test")))
    pairs = train.select(user_col, item_col).distinct().withColumn("_pair_in_train", F.lit(True))
    users = train.select(user_col).distinct().withColumn("_user_in_train", F.lit(True))
    joined = held.join(pairs, [user_col, item_col], "left").join(users, [user_col], "left")
    leaked = F.concat(F.col(SPLIT_COL), F.lit(":"), F.col(user_col), F.lit("|"), F.col(item_col))
    return joined.select(
        SPLIT_COL,
        user_col,
        item_col,
        F.when(F.col("_pair_in_train"), leaked).alias(LEAKED_PAIR_COL),
        F.when(F.col("_user_in_train").isNull(), F.col(user_col)).alias(USER_WITHOUT_TRAIN_COL),
    )


def load_stage_tables(
    stage: str,
    lake: Lake,
    run_date: dt.date,
    spark: SparkSession,
    window_days: int,
    only_days: Collection[dt.date] | None = None,
) -> dict[str, tuple[DataFrame, dict[str, Any]]]:
    """The DataFrames a stage validates, keyed like ``stage_suites``, each with where it came from.

    ``only_days`` narrows ``raw`` to those bronze days. (``validate_stage`` judges raw days through
    ``expectations.raw_gate``: the days whose last outcome is not a pass, plus the day tables.)
    """
    if stage == "raw":
        frame, parts = _read_partitions(spark, lake.bronze_events(), run_date, window_days, "bronze", only_days)
        return {"bronze_events": (frame, {"path": str(lake.bronze_events()), "partitions": parts})}
    if stage == "clean":
        frame, parts = _read_partitions(spark, lake.silver_events(), run_date, window_days, "silver")
        items = _read_table(spark, lake.silver_items(), "silver items")
        return {
            "silver_events": (frame, {"path": str(lake.silver_events()), "partitions": parts}),
            "silver_items": (items, {"path": str(lake.silver_items())}),
        }
    if stage == "features":
        gold = {
            name: _read_table(spark, lake.gold(run_date, name), "gold")
            for name in ("interactions", "users", "items", "split=train", "split=valid", "split=test")
        }
        tables = {name: (gold[name], {"path": str(lake.gold(run_date, name))}) for name in gold}
        checks = split_check_frame(gold["split=train"], gold["split=valid"], gold["split=test"])
        tables["split_checks"] = (checks, {"path": str(lake.gold(run_date)), "derived": "split=valid|test vs train"})
        del tables["split=valid"], tables["split=test"]
        return tables
    raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")


def feed_has_prices(events: DataFrame) -> bool:
    """Whether any event carries a price (a feed without prices is valid: price is optional)."""
    from pyspark.sql import functions as F

    return bool(events.where(F.col(PRICE_COL).isNotNull()).limit(1).count())


def _raw_tables(plan: RawPlan, lake: Lake) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The raw gate's tables: bronze rows of the judged days with data, and the day table (pandas)."""
    import pandas as pd

    tables: dict[str, tuple[Any, dict[str, Any]]] = {}
    if plan.frame is not None:
        parts = [f"dt={d.isoformat()}" for d in plan.with_data]
        tables["bronze_events"] = (plan.frame, {"path": str(lake.bronze_events()), "partitions": parts})
    if plan.day_rows:
        numeric = [c for c in DAY_COLUMNS if c not in ("dt", "events", "baseline_day")]
        frame = pd.DataFrame(plan.day_rows, columns=list(DAY_COLUMNS)).astype(
            {"events": "int64", **dict.fromkeys(numeric, "float64")}
        )
        origin = {
            "path": str(lake.bronze_events()),
            "derived": "one row per judged day: events, volume against the trailing median, drift (PSI)",
            "day_table": plan.day_rows,
        }
        tables["bronze_days"] = (frame, origin)
    return tables


def _gx_context(run_dir: Path, docs_dir: Path) -> Any:
    """A file context for the run date (results persist so Data Docs index every stage), quiet, offline."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(run_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
    }
    sites = context.list_data_docs_sites()
    if DATA_DOCS_SITE not in sites:
        context.add_data_docs_site(DATA_DOCS_SITE, site)
    elif sites[DATA_DOCS_SITE] != site:
        context.update_data_docs_site(DATA_DOCS_SITE, site)
    return context


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _expectation_summary(result: Any, sample: int = UNEXPECTED_SAMPLE) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    body = result.result or {}
    entry: dict[str, Any] = {
        "expectation": config.type,
        "column": kwargs.get("column") or kwargs.get("column_list") or "(table)",
        "success": bool(result.success),
        "expected": config.description or json.dumps(_json_safe(kwargs)),
        "kwargs": _json_safe(kwargs),
    }
    for key in ("observed_value", "element_count", "unexpected_count", "unexpected_percent", "missing_count"):
        if key in body:
            entry[key] = _json_safe(body[key])
    if "unexpected_percent_total" in body:
        entry["unexpected_percent_total"] = _json_safe(body["unexpected_percent_total"])
    if "partial_unexpected_list" in body:
        entry["unexpected_sample"] = _json_safe(body["partial_unexpected_list"][:sample])
    if body.get("partial_unexpected_counts"):
        entry["unexpected_value_counts"] = _json_safe(body["partial_unexpected_counts"][:sample])
    if body.get("partial_unexpected_index_list"):
        entry["unexpected_rows"] = _json_safe(body["partial_unexpected_index_list"][:sample])
    infos = result.exception_info or {}
    infos = [infos] if "raised_exception" in infos else [v for v in infos.values() if isinstance(v, dict)]
    errors = [str(i.get("exception_message")) for i in infos if i.get("raised_exception")]
    if errors:
        entry["error"] = errors[0].strip().splitlines()[0]
    if config.type == "expect_table_columns_to_match_set" and isinstance(body.get("observed_value"), list):
        entry["missing_columns"] = sorted(set(kwargs.get("column_set") or []) - set(body["observed_value"]))
    return entry


def _run_checkpoint(
    context: Any, stage: str, table: str, frame: Any, suite: Any, run_id: Any, sample: int = UNEXPECTED_SAMPLE
) -> dict[str, Any]:
    """Run ``suite`` on ``frame`` (a Spark DataFrame, or a pandas one for small derived tables) as a checkpoint.

    ``sample``: offending values and row keys kept per expectation.
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction

    context.suites.add_or_update(suite)
    if isinstance(frame, pd.DataFrame):
        source = context.data_sources.add_or_update_pandas(name=PANDAS_DATASOURCE)
    else:
        source = context.data_sources.add_or_update_spark(name=DATASOURCE)
    asset_name = f"{stage}__{table}"
    asset = next((a for a in source.assets if a.name == asset_name), None) or source.add_dataframe_asset(asset_name)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None)
    batch = batch or asset.add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{stage}__{table}", data=batch, suite=context.suites.get(suite.name))
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{stage}__{table}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": sample,
                "unexpected_index_column_names": [k for k in TABLE_ROW_KEYS.get(table, ()) if k in frame.columns],
            },
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    (suite_result,) = outcome.run_results.values()
    expectations = [_expectation_summary(r, sample) for r in suite_result.results]
    failed_first = sorted(expectations, key=lambda e: e["success"])
    return {"suite": suite.name, "success": bool(suite_result.success), "expectations": failed_first}


def validate_stage(
    stage: str,
    lake_root: str | os.PathLike[str],
    run_date: dt.date | str,
    spark: SparkSession,
    cfg: Config | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    window_days: int | None = None,
    only_days: Collection[dt.date] | None = None,
    day_checks: bool = True,
) -> dict[str, Any]:
    """Validate one stage's partitions of ``run_date``; return the summary or raise ``ValidationFailed``.

    ``window_days`` is the run window for ``raw``/``clean`` (the days ``[run_date - window_days + 1,
    run_date]`` that exist; default ``cfg.window.days``); ``features`` validates ``gold/<run_date>``.

    Raw judges the window's days whose last outcome (``<report_dir>/gates/raw/dt=….json``) is not a
    pass of their bronze partition as it is now, plus the run's own day, and records each one's outcome;
    ``only_days`` judges just those days instead. ``day_checks`` (the daily feed; off for a bulk import)
    adds the ``bronze_days`` table: data on each judged day, volume against the trailing median, drift
    (PSI) against the previous day. A failed raw summary names the landing files of the offending rows
    (``bad_files``), which ``python -m jobs.quarantine`` sets aside.
    """
    import pandas as pd
    from great_expectations.core.run_identifier import RunIdentifier

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    run_day = dt.date.fromisoformat(run_date) if isinstance(run_date, str) else run_date
    cfg = cfg if cfg is not None else load_config()
    if window_days is None:
        window_days = cfg.window.days
    report_root = Path(report_dir if report_dir is not None else get_settings().reports)
    run_dir = report_root / run_day.isoformat()
    docs_dir = run_dir / "data_docs"
    run_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    plan: RawPlan | None = None
    if stage == "raw":
        lake = Lake(lake_root)
        window = window_days_of(run_day, window_days)
        days = sorted(set(only_days)) if only_days is not None else None
        plan = plan_raw(lake, run_day, spark, cfg.validation, window, report_root, days, day_checks)
        tables = _raw_tables(plan, lake)
        prices_expected = plan.frame is None or feed_has_prices(plan.frame)
        suites = stage_suites(
            "raw",
            cfg.validation,
            prices_expected=prices_expected,
            run_date=run_day,
            catalogue=plan.catalogue,
            day_table=bool(plan.day_rows),
            day_checks=plan.day_checks,
        )
        suites = {name: suite for name, suite in suites.items() if name in tables}
    else:
        tables = load_stage_tables(stage, Lake(lake_root), run_day, spark, window_days, only_days)
        events_table = {"clean": "silver_events"}.get(stage)
        prices_expected = events_table is None or feed_has_prices(tables[events_table][0])
        suites = stage_suites(stage, cfg.validation, prices_expected=prices_expected)
    context = _gx_context(run_dir, docs_dir)
    run_id = RunIdentifier(run_name=f"{stage}-{run_day.isoformat()}", run_time=dt.datetime.now(dt.UTC))
    summary: dict[str, Any] = {
        "stage": stage,
        "run_date": run_day.isoformat(),
        "window_days": window_days,
        "success": True,
        "tables": {},
    }
    notes = list(plan.notes) if plan is not None else []
    if not prices_expected:
        notes.append("the feed carries no prices at all (price is optional): price completeness not required")
    if notes:
        summary["notes"] = notes
    if plan is not None:
        summary["checked_days"] = [d.isoformat() for d in plan.checked]
    try:
        for table, suite in suites.items():
            frame, origin = tables[table]
            table_started = time.perf_counter()
            if isinstance(frame, pd.DataFrame):
                rows = len(frame)
                sample = max(rows, UNEXPECTED_SAMPLE)
                result = _run_checkpoint(context, stage, table, frame, suite, run_id, sample=sample)
            else:
                frame = frame.cache() if plan is None else frame  # the raw plan caches its own frame
                try:
                    rows = frame.count()
                    result = _run_checkpoint(context, stage, table, frame, suite, run_id)
                finally:
                    if plan is None:
                        frame.unpersist()
            seconds = round(time.perf_counter() - table_started, 3)
            summary["tables"][table] = {**origin, "rows": rows, **result, "seconds": seconds}
            summary["success"] = summary["success"] and result["success"]
        attribution: Attribution | None = None
        if plan is not None and not summary["success"]:
            events_suite = suites.get("bronze_events")
            attribution = attribute_failures(plan, events_suite, summary["tables"], cfg.validation)
    finally:
        if plan is not None and plan.frame is not None:
            plan.frame.unpersist()
    summary["data_docs"] = str(docs_dir / "index.html")
    summary["summary_path"] = str(run_dir / f"validation_{stage}.json")
    if plan is not None:
        failures = day_outcomes(plan, summary["tables"], attribution)
        if attribution is not None:
            summary["bad_files"] = attribution.bad_files
        summary["day_outcomes"] = record_outcomes(
            plan, failures, attribution, run_day, summary["summary_path"], report_root
        )
        summary["success"] = summary["success"] and not any(failures.values())
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if not summary["success"]:
        summary["failure_report"] = format_failure(summary)
    Path(summary["summary_path"]).write_text(json.dumps(summary, indent=2, default=str))
    log.info(
        "validation %s %s: %s in %.1fs",
        stage,
        run_day,
        "passed" if summary["success"] else "FAILED",
        summary["seconds"],
    )
    if not summary["success"]:
        raise ValidationFailed(stage, summary)
    return summary


def _observed(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return f"the check itself failed: {entry['error']}"
    count = entry.get("unexpected_count")
    if count is not None:
        total = entry.get("element_count")
        pct = entry.get("unexpected_percent_total", entry.get("unexpected_percent"))
        line = f"{count:,} of {total:,} rows break it" if isinstance(total, int) else f"{count:,} rows break it"
        if isinstance(pct, int | float):
            line += f" ({pct:.3g}%)"
        if entry.get("missing_count"):
            line += f"; {entry['missing_count']:,} null(s) not checked"
        return line
    if entry.get("missing_columns"):
        return f"missing column(s) {', '.join(entry['missing_columns'])}"
    if "observed_value" in entry:
        return json.dumps(entry["observed_value"], default=str)
    return "no observation recorded"


def _offending_values(entry: dict[str, Any]) -> str:
    counts = [c for c in entry.get("unexpected_value_counts", []) if c.get("value") is not None]
    shown = [f"{c['value']!r} ×{c['count']}" if c["count"] > 1 else repr(c["value"]) for c in counts[:MESSAGE_SAMPLE]]
    more = " …" if len(counts) > MESSAGE_SAMPLE else ""
    return ", ".join(shown) + more


def _offending_rows(entry: dict[str, Any]) -> str:
    checked = entry["column"] if isinstance(entry["column"], list) else [entry["column"]]
    rows = entry.get("unexpected_rows", [])
    keys = [k for k in (rows[0] if rows else {}) if k not in checked]
    if not keys:
        return ""
    shown = [
        str(row[keys[0]]) if len(keys) == 1 else "(" + ", ".join(str(row[k]) for k in keys) + ")"
        for row in rows[:MESSAGE_SAMPLE]
    ]
    more = " …" if (entry.get("unexpected_count") or 0) > len(shown) else ""
    return f"{', '.join(shown)}{more}  [{', '.join(keys)}]"


def format_failure(summary: dict[str, Any]) -> str:
    """A multi-line report of a failed stage: each broken expectation, what was expected, what was seen."""
    tables = summary["tables"]
    failed = sum(not e["success"] for tbl in tables.values() for e in tbl["expectations"])
    total = sum(len(tbl["expectations"]) for tbl in tables.values())
    lines = [
        f"Data validation FAILED for stage '{summary['stage']}' (run {summary['run_date']}): "
        f"{failed} of {total} expectations broken."
    ]
    for table, tbl in tables.items():
        broken = [e for e in tbl["expectations"] if not e["success"]]
        if not broken:
            continue
        where = ", ".join(tbl.get("partitions", [])) or tbl.get("path", "")
        lines.append(f"  table {table} (suite {tbl['suite']}, {tbl['rows']:,} rows; {where}):")
        for entry in broken:
            column = ", ".join(entry["column"]) if isinstance(entry["column"], list) else entry["column"]
            lines.append(f"    ✗ column {column}: {entry['expectation']}")
            lines.append(f"        expected: {entry['expected']}")
            lines.append(f"        observed: {_observed(entry)}")
            values = _offending_values(entry)
            if values:
                lines.append(f"        offending values: {values}")
            rows = _offending_rows(entry)
            if rows:
                lines.append(f"        offending rows: {rows}")
    failed_days = [day for day, status in summary.get("day_outcomes", {}).items() if status == "failed"]
    if failed_days:
        lines.append(
            f"  days failed: {', '.join(failed_days)} (judged again on every run until they pass or are accepted)"
        )
    bad_files = summary.get("bad_files") or {}
    if bad_files:
        lines.append("  landing files that brought the offending rows:")
        for path, rows in list(bad_files.items())[:BAD_FILES_SHOWN]:
            lines.append(f"    {path}  ({rows:,} row{'s' if rows != 1 else ''})")
        if len(bad_files) > BAD_FILES_SHOWN:
            lines.append(f"    … and {len(bad_files) - BAD_FILES_SHOWN} more (bad_files in the summary)")
    lines.append(f"  Data Docs: {summary.get('data_docs', '(not written)')}")
    lines.append(f"  Summary:   {summary.get('summary_path', '(not written)')}")
    lines.append(
        "  Fix the data (or the job that wrote it) and rerun this task; tolerances live in "
        "config/recsys.toml [validation]."
    )
    if summary.get("stage") == "raw":
        lines.append(
            "  Set bad landing files aside with `python -m jobs.quarantine` (their days are re-ingested and judged "
            "again); accept a day that is right as it is with `python -m expectations.state --accept DAY --reason ...`."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m expectations.runner --stage raw --lake PATH --run-date D``; exit 1 on a failed gate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--lake", default=None, help="lake root (default: RECSYS_LAKE_URI / <home>/lake)")
    parser.add_argument("--run-date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--window-days", type=int, default=None, help="days ending at the run date (default: config)")
    parser.add_argument("--report-dir", default=None, help="default: RECSYS_REPORTS_DIR / <home>/reports")
    parser.add_argument(
        "--no-day-checks",
        action="store_true",
        help="raw: judge rows only, not data per day, volume and drift (a bulk import of a dataset)",
    )
    parser.add_argument(
        "--days",
        default=None,
        help="raw: judge these comma-separated days (YYYY-MM-DD) whatever their last outcome",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from jobs.spark import get_spark

    spark = get_spark("mercato-validate")
    try:
        summary = validate_stage(
            args.stage,
            args.lake or get_settings().lake,
            args.run_date,
            spark,
            report_dir=args.report_dir,
            window_days=args.window_days,
            only_days=[dt.date.fromisoformat(d) for d in args.days.split(",")] if args.days else None,
            day_checks=not args.no_day_checks,
        )
    except ValidationFailed as failure:
        print(str(failure), file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("stage", "run_date", "success", "data_docs", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
