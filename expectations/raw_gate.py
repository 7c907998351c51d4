"""What the raw gate judges in a run, and what it remembers of each day afterwards.

The raw gate judges *days*: those of the window whose last outcome (``expectations.state``) is not a
pass of their bronze partition as it is now (new or re-ingested days, days that failed, days never
judged), plus the run's own day, which fails when it has no data. Row-level expectations run on the
bronze rows of those days (with ``unknown_item`` when there is a catalogue); the day table of
``expectations.daily`` judges each day's own shares of what the rows may hold up to a tolerance and,
with day checks on (the daily feed), data on the day, volume and drift. Afterwards each judged day
gets its outcome, the landing files that made it fail and its distributions (the next days'
drift baseline).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import ValidationConfig
from core.contract import DT_COL, EVENT_TYPE_COL, EVENT_TYPES, ITEM_COL, PRICE_COL
from core.lake import Lake
from expectations import daily, state
from expectations.attribution import Attribution, Rule, attribute, rule_for
from expectations.suites import UNKNOWN_ITEM_COL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass
class RawPlan:
    """The days a raw-gate run judges and the tables it feeds GX."""

    window: list[dt.date]
    checked: list[dt.date]
    with_data: list[dt.date]
    fingerprints: dict[dt.date, Any]
    frame: DataFrame | None = None
    catalogue: bool = False
    day_checks: bool = False
    day_rows: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[dt.date, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def bronze_items(lake: Lake) -> Path:
    from jobs.common import bronze_items_path

    return bronze_items_path(lake)


def plan_raw(
    lake: Lake,
    run_date: dt.date,
    spark: SparkSession,
    v: ValidationConfig,
    window: list[dt.date],
    report_dir: Path,
    only_days: list[dt.date] | None = None,
    day_checks: bool = True,
) -> RawPlan:
    """Choose the days to judge (``only_days`` overrides the state) and build their tables."""
    base = lake.bronze_events()
    present = [d for d in Lake.partition_days(base) if window[0] <= d <= window[-1]]
    if not present:
        raise FileNotFoundError(
            f"no bronze partition dt={window[0]}..{window[-1]} under {base}: run the job that writes it first "
            "(or pass a run date / window_days that covers data that exists)"
        )
    if only_days is not None:
        wanted = set(only_days)
        checked = [d for d in window if d in wanted and (d in present or (day_checks and d == run_date))]
    else:
        checked = state.days_to_check(report_dir, base, window, run_date if day_checks else None)
    with_data = [d for d in checked if d in present]
    plan = RawPlan(
        window=window,
        checked=checked,
        with_data=with_data,
        fingerprints={d: state.partition_fingerprint(lake.bronze_events(d)) for d in checked},
        day_checks=day_checks,
    )
    settled = len(set(present) - set(checked))
    if settled:
        plan.notes.append(f"{settled} day(s) of the window passed before and are unchanged: not judged again")
    if not day_checks:
        plan.notes.append("day checks off (bulk import of a dataset): data per day, volume and drift not judged")
    if with_data:
        paths = [str(lake.bronze_events(d)) for d in with_data]
        frame = spark.read.option("basePath", str(base)).option("mergeSchema", "true").parquet(*paths)
        catalogue = bronze_items(lake)
        if catalogue.is_dir():
            frame = with_unknown_items(frame, spark.read.parquet(str(catalogue)))
            plan.catalogue = True
        else:
            plan.notes.append(f"no catalogue at {catalogue}: events on unknown items not checked")
        plan.frame = frame.cache()  # the caller unpersists it once the gate is done
    if checked:
        _day_table(plan, spark, base, report_dir, v)
    return plan


def with_unknown_items(events: DataFrame, catalogue: DataFrame) -> DataFrame:
    """``events`` plus ``unknown_item``: the item id where ``catalogue`` does not list it, else null."""
    from pyspark.sql import functions as F

    listed = catalogue.select(F.col(ITEM_COL).alias("_listed")).where(F.col("_listed").isNotNull()).distinct()
    joined = events.join(listed, events[ITEM_COL] == listed["_listed"], "left")
    unknown = F.when(F.col(ITEM_COL).isNotNull() & F.col("_listed").isNull(), F.col(ITEM_COL))
    return joined.withColumn(UNKNOWN_ITEM_COL, unknown).drop("_listed")


def _day_table(plan: RawPlan, spark: SparkSession, base: Path, report_dir: Path, v: ValidationConfig) -> None:
    facts = daily.day_facts(plan.frame) if plan.frame is not None else {}
    if not plan.day_checks:
        plan.day_rows = daily.day_rows(plan.checked, facts, v)
        return
    lookback = v.volume_lookback_days
    first = plan.checked[0] - dt.timedelta(days=lookback)
    span = [first + dt.timedelta(days=k) for k in range((plan.checked[-1] - first).days + 1)]
    counts = daily.bronze_day_counts(spark, base, span)
    current: dict[dt.date, dict[str, Any]] = {}
    item_counts = None
    if plan.frame is not None:
        current, item_counts = daily.distributions_of(plan.frame, v.drift_top_items)
    stored: dict[dt.date, dict[str, Any]] = {}

    def usable(day: dt.date) -> bool:
        if day in current:
            return current[day]["events"] > 0
        if day in plan.checked:
            return False
        record = state.read_state(report_dir, day)
        fingerprint = state.partition_fingerprint(base / f"dt={day.isoformat()}")
        if state.is_settled(record, fingerprint) and (record or {}).get("distribution"):
            stored[day] = record["distribution"]  # type: ignore[index]
            return True
        return False

    baselines = {d: daily.find_baseline(d, lookback, usable) for d in plan.checked}
    distributions = {**stored, **current}
    wanted = {d: list(distributions[b]["top_items"]) for d, b in baselines.items() if b is not None and d in current}
    current_items = daily.counts_of_items(spark, item_counts, wanted) if item_counts is not None else {}
    if item_counts is not None:
        item_counts.unpersist()
    plan.day_rows = daily.day_rows(plan.checked, facts, v, counts, distributions, current_items, baselines)
    plan.distributions = current


def share_rules(tables: dict[str, dict[str, Any]], v: ValidationConfig) -> list[Rule]:
    """:class:`Rule` of each failed per-day share of the day table, restricted to the days that broke it."""
    from pyspark.sql import functions as F

    conditions = {
        "unknown_event_type_share": (
            F.col(EVENT_TYPE_COL).isNull() | ~F.col(EVENT_TYPE_COL).isin(list(EVENT_TYPES)),
            v.raw_unknown_event_type_max_fraction,
        ),
        "missing_price_share": (F.col(PRICE_COL).isNull(), v.raw_missing_price_max_fraction),
        "unknown_item_share": (F.col(UNKNOWN_ITEM_COL).isNotNull(), v.unknown_item_max_fraction),
    }
    rules = []
    for entry in tables.get("bronze_days", {}).get("expectations", []):
        if entry["success"] or entry["column"] not in conditions:
            continue
        days = sorted({str(r["dt"]) for r in entry.get("unexpected_rows", []) if r.get("dt")})
        condition, tolerance = conditions[entry["column"]]
        on_days = F.col(DT_COL).cast("string").isin(days)
        rules.append(Rule(f"{entry['column']} (per day)", condition & on_days, tolerance))
    return rules


def attribute_failures(
    plan: RawPlan, suite: Any, tables: dict[str, dict[str, Any]], v: ValidationConfig
) -> Attribution | None:
    """Which landing files and days brought the rows behind the failed checks (None when nothing row-level failed)."""
    if plan.frame is None:
        return None
    rules, unattributed = [], []
    events = tables.get("bronze_events")
    if events is not None and not events["success"]:
        failed = {(e["expectation"], str(e["column"])) for e in events["expectations"] if not e["success"]}
        for expectation in suite.expectations:
            key = (expectation.expectation_type, str(getattr(expectation, "column", "(table)")))
            if key in failed:
                rule = rule_for(expectation)
                if rule is None:
                    unattributed.append(f"{key[1]} {key[0]}")
                else:
                    rules.append(rule)
    rules += share_rules(tables, v)
    if not rules and not unattributed:
        return None
    return attribute(plan.frame, rules, unattributed)


def day_outcomes(
    plan: RawPlan,
    tables: dict[str, dict[str, Any]],
    attribution: Attribution | None,
) -> dict[dt.date, list[str]]:
    """The failures of each judged day (empty = passed)."""
    failures: dict[dt.date, list[str]] = {d: [] for d in plan.checked}
    events = tables.get("bronze_events")
    if events is not None and not events["success"]:
        broken = [f"bronze_events: {_what(e)}" for e in events["expectations"] if not e["success"]]
        blamed = set(attribution.bad_days) if attribution is not None else set()
        if attribution is None or attribution.unattributed or not blamed:
            blamed = set(plan.with_data)
        for day in blamed & set(failures):
            failures[day].extend(broken)
    days = tables.get("bronze_days")
    if days is not None and not days["success"]:
        for entry in days["expectations"]:
            if entry["success"]:
                continue
            named = {dt.date.fromisoformat(str(r["dt"])) for r in entry.get("unexpected_rows", []) if r.get("dt")}
            for day in named or set(plan.checked):
                if day in failures:
                    failures[day].append(f"bronze_days: {_what(entry)}")
    if any(not t["success"] for t in tables.values()) and not any(failures.values()):
        for day in failures:
            failures[day].append("the gate failed and no day could be singled out")
    return failures


def _what(entry: dict[str, Any]) -> str:
    column = ", ".join(entry["column"]) if isinstance(entry["column"], list) else entry["column"]
    return f"{column} {entry['expectation']}"


def record_outcomes(
    plan: RawPlan,
    failures: dict[dt.date, list[str]],
    attribution: Attribution | None,
    run_date: dt.date,
    summary_path: str,
    report_dir: Path,
) -> dict[str, str]:
    """Write each judged day's outcome (``expectations.state``); return ``{day: status}``."""
    now = dt.datetime.now(dt.UTC).isoformat()
    events = {dt.date.fromisoformat(r["dt"]): r["events"] for r in plan.day_rows}
    statuses = {}
    for day in plan.checked:
        status = state.FAILED if failures[day] else state.PASSED
        record: dict[str, Any] = {
            "day": day.isoformat(),
            "status": status,
            "bronze": plan.fingerprints.get(day),
            "run_date": run_date.isoformat(),
            "checked_at": now,
            "summary": summary_path,
            "failures": sorted(set(failures[day])),
            "bad_files": (attribution.files_by_day.get(day, {}) if attribution is not None else {}),
        }
        if day in events:
            record["events"] = events[day]
        if day in plan.distributions:
            record["distribution"] = plan.distributions[day]
        state.write_state(report_dir, record)
        statuses[day.isoformat()] = status
    return statuses
