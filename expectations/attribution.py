"""Which landing files and days brought the rows that broke a raw expectation.

GX decides whether the raw events pass; this module only says where the offending rows came from,
so that ``python -m jobs.quarantine`` can set the bad files aside. Each failed check becomes a
:class:`Rule`: a failed row-level expectation (the same condition, nulls ignored where GX ignores
them, tolerance ``1 - mostly``), or a failed per-day share of the day table (its condition, its
tolerance, on the days that broke it). The offending rows are counted per (day, landing file); a
file is bad when its own share of offending rows is above the rule's tolerance (any offending row
when the tolerance is 0): the standard the day is held to, so a file with one tolerated unknown
event type is not named. A failed expectation no rule can express (a missing column, too few rows)
is listed as unattributed: it fails every judged day.

Bronze events carry ``source_file``, the landing file relative to the lake
(``landing/events/dt=2026-04-01/events-0.jsonl``); a bare file name is placed in its day's folder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.contract import DT_COL

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SOURCE_FILE_COL = "source_file"


@dataclass
class Attribution:
    """Offending rows per landing file, the days they make fail, and what could not be attributed."""

    bad_files: dict[str, int] = field(default_factory=dict)
    bad_days: set[dt.date] = field(default_factory=set)
    files_by_day: dict[dt.date, dict[str, int]] = field(default_factory=dict)
    unattributed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    """Rows that break a check (``condition``) and the share of them a file may hold (``tolerance``)."""

    label: str
    condition: Column
    tolerance: float


def rule_for(expectation: Any) -> Rule | None:
    """The :class:`Rule` of a failed row-level expectation, or None when it is not row-level."""
    condition = violation(expectation)
    if condition is None:
        return None
    label = f"{getattr(expectation, 'column', '')} {expectation.expectation_type}"
    return Rule(label, condition, 1.0 - float(getattr(expectation, "mostly", None) or 1.0))


def violation(expectation: Any) -> Column | None:
    """The rows ``expectation`` counts as unexpected, as a Spark condition; None when it is not row-level."""
    from pyspark.sql import functions as F

    kind = expectation.expectation_type
    column = getattr(expectation, "column", None)
    if column is None:
        return None
    col = F.col(column)
    if kind == "expect_column_values_to_not_be_null":
        return col.isNull()
    if kind == "expect_column_values_to_be_null":
        return col.isNotNull()
    if kind == "expect_column_values_to_be_in_set":
        return col.isNotNull() & ~col.isin(list(expectation.value_set))
    if kind == "expect_column_values_to_be_between":
        low, high = expectation.min_value, expectation.max_value
        outside = F.lit(False)
        if low is not None:
            outside = outside | ((col <= F.lit(low)) if expectation.strict_min else (col < F.lit(low)))
        if high is not None:
            outside = outside | ((col >= F.lit(high)) if expectation.strict_max else (col > F.lit(high)))
        return col.isNotNull() & outside
    return None


def landing_path(source: str | None, day: dt.date | None) -> str | None:
    """``source_file`` as a path relative to the lake (``landing/events/dt=…/name``)."""
    if not source:
        return None
    path = source.removeprefix("file://").removeprefix("file:")
    marker = path.rfind("landing/")
    if marker >= 0:
        return path[marker:]
    if "/" not in path and day is not None:
        return f"landing/events/dt={day.isoformat()}/{path}"
    return path


def attribute(frame: DataFrame, rules: Iterable[Rule], unattributed: Iterable[str] = ()) -> Attribution:
    """Count ``frame``'s rows breaking each rule per (``dt``, ``source_file``); name the bad files and days."""
    from pyspark.sql import functions as F

    result = Attribution(unattributed=list(unattributed))
    rules = list(rules)
    if not rules:
        return result
    keys = [F.col(DT_COL).cast("string").alias("_day")]
    has_source = SOURCE_FILE_COL in frame.columns
    keys.append(F.col(SOURCE_FILE_COL).alias("_file") if has_source else F.lit(None).cast("string").alias("_file"))
    any_bad = rules[0].condition
    for rule in rules[1:]:
        any_bad = any_bad | rule.condition
    aggregates = [F.count(F.lit(1)).alias("_rows"), F.sum(F.when(any_bad, 1).otherwise(0)).alias("_bad")]
    aggregates += [F.sum(F.when(r.condition, 1).otherwise(0)).alias(f"_v{i}") for i, r in enumerate(rules)]
    for row in frame.groupBy(*keys).agg(*aggregates).collect():
        rows = int(row["_rows"])
        is_bad = False
        for i, rule in enumerate(rules):
            offending = int(row[f"_v{i}"] or 0)
            if offending and (rule.tolerance <= 0 or offending / rows > rule.tolerance):
                is_bad = True
        if not is_bad:
            continue
        day = dt.date.fromisoformat(row["_day"]) if row["_day"] else None
        if day is not None:
            result.bad_days.add(day)
        path = landing_path(row["_file"], day)
        if path is not None:
            count = int(row["_bad"])
            result.bad_files[path] = result.bad_files.get(path, 0) + count
            if day is not None:
                result.files_by_day.setdefault(day, {})[path] = count
    result.bad_files = dict(sorted(result.bad_files.items(), key=lambda kv: (-kv[1], kv[0])))
    return result
