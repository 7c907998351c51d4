"""The exposure gate: GX suites for the exposure log (silver exposures of the judged days) and its own validation.

Three tables, each its own checkpoint in the run date's GX context (so one Data Docs index lists every
gate of the day, reusing ``expectations.runner``'s context and checkpoint helpers):

* ``silver_exposures`` — one row per response: every contract column, a ``request_id`` on each row and
  unique, a ``ts`` inside ``[validation] ts_floor`` .. the run date's end + ``ts_future_tolerance_hours``,
  the serving model named, ``fallback`` known, an arm named wherever an experiment is
  (``variant_missing``: the request id of a row that breaks it), at most ``[serving] max_k`` items;
* ``silver_exposure_items`` — one row per shown item: an ``item_id``, a ``position`` in ``1..max_k``,
  unique within its response (``duplicate_position``: ``request_id#position`` of a repeat), a score;
* ``exposure_days`` — per judged landing day (pandas): the share of exposure lines ingest quarantined,
  at most ``max_rejected_fraction``.

A failure raises ``expectations.runner.ValidationFailed`` (stage ``exposures``) whose text is the
readable report; the summary goes to ``<reports>/<run_date>/validation_exposures.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import great_expectations as gx
import great_expectations.expectations as gxe

from core.config import Config, ValidationConfig, load_config
from core.contract import ITEM_COL, TS_COL
from core.lake import Lake
from core.online import (
    EXPERIMENT_COL,
    FALLBACK_COL,
    ITEMS_COL,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    N_ITEMS_COL,
    POSITION_COL,
    REPORT_DEFAULTS,
    REQUEST_ID_COL,
    SCORE_COL,
    VARIANT_COL,
    bronze_exposures,
    silver_exposures,
)
from core.settings import get_settings
from expectations.runner import (
    DATA_DOCS_SITE,
    DATASOURCE,
    PANDAS_DATASOURCE,
    UNEXPECTED_SAMPLE,
    ValidationFailed,
    _expectation_summary,
    _gx_context,
    format_failure,
    window_days_of,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

STAGE = "exposures"
EXPOSURES_SUITE = "exposures"
EXPOSURE_ITEMS_SUITE = "exposure_items"
EXPOSURE_DAYS_SUITE = "exposure_days"
VARIANT_MISSING_COL = "variant_missing"
DUPLICATE_POSITION_COL = "duplicate_position"
REJECTED_SHARE_COL = "rejected_share"
#: Columns every silver exposure row carries.
EXPOSURE_COLUMNS: tuple[str, ...] = (
    REQUEST_ID_COL,
    TS_COL,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    EXPERIMENT_COL,
    VARIANT_COL,
    FALLBACK_COL,
    ITEMS_COL,
    N_ITEMS_COL,
)


def _suite(name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    if len(suite.expectations) != len(expectations):
        raise ValueError(f"suite {name}: {len(expectations) - len(suite.expectations)} expectation(s) are invalid")
    return suite


def _not_null(column: str, why: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is never null ({why})")


def ts_bounds(v: ValidationConfig, run_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """``(ts_floor, end of run_date + ts_future_tolerance_hours)`` as naive UTC datetimes (Spark's clock)."""
    floor = dt.datetime.combine(dt.date.fromisoformat(v.ts_floor), dt.time())
    latest = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time()) + dt.timedelta(
        hours=v.ts_future_tolerance_hours
    )
    return floor, latest


def exposures_suite(v: ValidationConfig, run_date: dt.date, max_k: int) -> gx.ExpectationSuite:
    """Silver exposures, one row per response (module docstring)."""
    floor, latest = ts_bounds(v, run_date)
    return _suite(
        EXPOSURES_SUITE,
        [
            gxe.ExpectTableColumnsToMatchSet(
                column_set=[*EXPOSURE_COLUMNS, VARIANT_MISSING_COL],
                exact_match=False,
                description=f"silver exposures carry every contract column: {', '.join(EXPOSURE_COLUMNS)}",
            ),
            gxe.ExpectTableRowCountToBeBetween(
                min_value=1, description="the judged days hold at least one exposure (is the API logging them?)"
            ),
            _not_null(REQUEST_ID_COL, "every response has an id; ingest quarantines lines without one"),
            gxe.ExpectColumnValuesToBeUnique(
                column=REQUEST_ID_COL, description=f"{REQUEST_ID_COL} is unique (silver keeps one copy per request)"
            ),
            _not_null(TS_COL, "ingest quarantines lines without a timestamp"),
            gxe.ExpectColumnValuesToBeBetween(
                column=TS_COL,
                min_value=floor,
                max_value=latest,
                description=f"{TS_COL} lies in {floor:%Y-%m-%d} .. {latest:%Y-%m-%d %H:%M} UTC "
                "(validation.ts_floor .. the run date's end + validation.ts_future_tolerance_hours)",
            ),
            _not_null(MODEL_NAME_COL, "every answer names the model that served it"),
            _not_null(MODEL_VERSION_COL, "every answer names the model version that served it"),
            _not_null(FALLBACK_COL, "every answer says whether it was the popularity fallback"),
            gxe.ExpectColumnValuesToBeNull(
                column=VARIANT_MISSING_COL,
                description="an exposure inside an experiment names its arm (variant_missing = its request id)",
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column=N_ITEMS_COL,
                min_value=0,
                max_value=max_k,
                description=f"a response shows 0..{max_k} items (serving.max_k)",
            ),
        ],
    )


def exposure_items_suite(max_k: int) -> gx.ExpectationSuite:
    """Silver exposures exploded to one row per shown item."""
    return _suite(
        EXPOSURE_ITEMS_SUITE,
        [
            _not_null(ITEM_COL, "ingest quarantines items without an id"),
            _not_null(SCORE_COL, "the scorer gives every shown item a score"),
            gxe.ExpectColumnValuesToBeBetween(
                column=POSITION_COL,
                min_value=1,
                max_value=max_k,
                description=f"{POSITION_COL} is 1-based and at most serving.max_k ({max_k})",
            ),
            gxe.ExpectColumnValuesToBeNull(
                column=DUPLICATE_POSITION_COL,
                description="each position appears once per response (duplicate_position = request_id#position)",
            ),
        ],
    )


def exposure_days_suite(max_rejected_fraction: float) -> gx.ExpectationSuite:
    """Per landing day: how much of the exposure log ingest had to quarantine."""
    if not 0.0 <= max_rejected_fraction <= 1.0:
        raise ValueError(f"max_rejected_fraction must be within [0, 1], got {max_rejected_fraction}")
    return _suite(
        EXPOSURE_DAYS_SUITE,
        [
            gxe.ExpectColumnValuesToBeBetween(
                column=REJECTED_SHARE_COL,
                min_value=0.0,
                max_value=max_rejected_fraction,
                description=f"at most {100 * max_rejected_fraction:.3g}% of a day's exposure lines are malformed "
                "(quarantined in bronze/_rejected/exposures)",
            )
        ],
    )


def exposure_frames(silver: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The gate's two Spark tables from silver exposures: rows with ``variant_missing``, items with ``duplicate_position``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.exposures import exposure_items

    rows = silver.withColumn(
        VARIANT_MISSING_COL,
        F.when(F.col(EXPERIMENT_COL).isNotNull() & F.col(VARIANT_COL).isNull(), F.col(REQUEST_ID_COL)),
    )
    items = exposure_items(silver.select(REQUEST_ID_COL, ITEMS_COL))
    repeats = F.count(F.lit(1)).over(Window.partitionBy(REQUEST_ID_COL, POSITION_COL))
    items = items.select(
        REQUEST_ID_COL,
        ITEM_COL,
        POSITION_COL,
        SCORE_COL,
        F.when(repeats > 1, F.concat_ws("#", F.col(REQUEST_ID_COL), F.col(POSITION_COL).cast("string"))).alias(
            DUPLICATE_POSITION_COL
        ),
    )
    return rows, items


def day_rows(lake: Lake, days: Sequence[dt.date]) -> list[dict[str, Any]]:
    """Per landing day with a bronze partition: lines in, quarantined, their share (from ``_SOURCE.json``)."""
    from jobs.ingest import SOURCE_MANIFEST

    out = []
    for day in days:
        try:
            counts = json.loads((bronze_exposures(lake, day) / SOURCE_MANIFEST).read_text()).get("counts", {})
        except (OSError, ValueError):
            continue
        rows_in, rejected = int(counts.get("rows_in", 0)), int(counts.get("rejected", 0))
        out.append(
            {
                "dt": day.isoformat(),
                "rows_in": rows_in,
                "rejected": rejected,
                REJECTED_SHARE_COL: rejected / rows_in if rows_in else 0.0,
            }
        )
    return out


#: The columns that name an offending row in a failure report, per table.
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "silver_exposures": (REQUEST_ID_COL,),
    "silver_exposure_items": (REQUEST_ID_COL, POSITION_COL),
    "exposure_days": ("dt",),
}


def run_checkpoint(context: Any, table: str, frame: Any, suite: gx.ExpectationSuite, run_id: Any) -> dict[str, Any]:
    """Run ``suite`` on ``frame`` (Spark or pandas) as the checkpoint ``exposures__<table>`` (Data Docs updated);
    the summary has the runner's shape, offending rows named by :data:`ROW_KEYS`."""
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction

    name = f"{STAGE}__{table}"
    context.suites.add_or_update(suite)
    if isinstance(frame, pd.DataFrame):
        source = context.data_sources.add_or_update_pandas(name=PANDAS_DATASOURCE)
    else:
        source = context.data_sources.add_or_update_spark(name=DATASOURCE)
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None)
    batch = batch or asset.add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=context.suites.get(suite.name))
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": UNEXPECTED_SAMPLE,
                "unexpected_index_column_names": [k for k in ROW_KEYS.get(table, ()) if k in frame.columns],
            },
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    (suite_result,) = outcome.run_results.values()
    expectations = sorted((_expectation_summary(r) for r in suite_result.results), key=lambda e: bool(e["success"]))
    return {"suite": suite.name, "success": bool(suite_result.success), "expectations": expectations}


def validate_exposures(
    lake_root: str | os.PathLike[str],
    run_date: dt.date | str,
    spark: SparkSession,
    cfg: Config | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    window_days: int = 1,
    max_rejected_fraction: float = REPORT_DEFAULTS.exposures_max_rejected_fraction,
) -> dict[str, Any]:
    """Validate the silver exposure days of ``[run_date - window_days + 1, run_date]``; return the summary or
    raise ``ValidationFailed``. ``FileNotFoundError`` when none of those days has exposures."""
    import pandas as pd
    from great_expectations.core.run_identifier import RunIdentifier

    run_day = dt.date.fromisoformat(run_date) if isinstance(run_date, str) else run_date
    cfg = cfg if cfg is not None else load_config()
    lake = Lake(lake_root)
    window = window_days_of(run_day, window_days)
    present = [d for d in Lake.partition_days(silver_exposures(lake)) if window[0] <= d <= window[-1]]
    if not present:
        raise FileNotFoundError(
            f"no silver exposures dt={window[0]}..{window[-1]} under {silver_exposures(lake)}: run jobs.exposures "
            "first (and check that the scoring API logs exposures: [serving] log_exposures)"
        )
    parts = [f"dt={d.isoformat()}" for d in present]
    silver = spark.read.option("basePath", str(silver_exposures(lake))).parquet(
        *[str(silver_exposures(lake, d)) for d in present]
    )
    rows, items = exposure_frames(silver)
    days = pd.DataFrame(day_rows(lake, present), columns=["dt", "rows_in", "rejected", REJECTED_SHARE_COL])
    tables: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        "silver_exposures": (
            rows,
            exposures_suite(cfg.validation, run_day, cfg.serving.max_k),
            {"path": str(silver_exposures(lake)), "partitions": parts},
        ),
        "silver_exposure_items": (
            items,
            exposure_items_suite(cfg.serving.max_k),
            {"path": str(silver_exposures(lake)), "partitions": parts, "derived": "items exploded"},
        ),
        "exposure_days": (
            days.astype({"rows_in": "int64", "rejected": "int64", REJECTED_SHARE_COL: "float64"}),
            exposure_days_suite(max_rejected_fraction),
            {"path": str(bronze_exposures(lake)), "derived": "_SOURCE.json counts per landing day"},
        ),
    }
    report_root = Path(report_dir if report_dir is not None else get_settings().reports)
    run_dir = report_root / run_day.isoformat()
    run_dir.mkdir(parents=True, exist_ok=True)
    context = _gx_context(run_dir, run_dir / "data_docs")
    run_id = RunIdentifier(run_name=f"{STAGE}-{run_day.isoformat()}", run_time=dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "stage": STAGE,
        "run_date": run_day.isoformat(),
        "window_days": window_days,
        "success": True,
        "tables": {},
    }
    for table, (frame, suite, origin) in tables.items():
        spark_frame = not isinstance(frame, pd.DataFrame)
        if spark_frame:
            frame = frame.cache()
        try:
            n_rows = frame.count() if spark_frame else len(frame)
            result = run_checkpoint(context, table, frame, suite, run_id)
        finally:
            if spark_frame:
                frame.unpersist()
        summary["tables"][table] = {**origin, "rows": n_rows, **result}
        summary["success"] = summary["success"] and result["success"]
    summary["data_docs"] = str(run_dir / "data_docs" / "index.html")
    summary["summary_path"] = str(run_dir / f"validation_{STAGE}.json")
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if not summary["success"]:
        summary["failure_report"] = format_failure(summary)
    Path(summary["summary_path"]).write_text(json.dumps(summary, indent=2, default=str))
    log.info("validation %s %s: %s", STAGE, run_day, "passed" if summary["success"] else "FAILED")
    if not summary["success"]:
        raise ValidationFailed(STAGE, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m expectations.exposures --run-date D [--window-days N]``; exit 1 on a failed gate."""
    parser = argparse.ArgumentParser(description="Validate the exposure log (silver exposures) with its GX suites.")
    parser.add_argument("--lake", default=None, help="lake root (default: RECSYS_LAKE_URI / <home>/lake)")
    parser.add_argument("--run-date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--window-days", type=int, default=1, help="days ending at the run date (default 1)")
    parser.add_argument("--report-dir", default=None, help="default: RECSYS_REPORTS_DIR / <home>/reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from jobs.spark import get_spark

    try:
        summary = validate_exposures(
            args.lake or get_settings().lake,
            args.run_date,
            get_spark("mercato-validate-exposures"),
            report_dir=args.report_dir,
            window_days=args.window_days,
        )
    except ValidationFailed as failure:
        print(str(failure), file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("stage", "run_date", "success", "data_docs", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
