"""The experiment report's Spark part on hand-built frames: per-unit outcomes, pre-period, per-variant moments,
team-draft credit; run() writes the unit table with its _AGGREGATES.json."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession

from core.config import load_config
from core.experiments import INTERLEAVED, INTERLEAVING
from core.lake import Lake
from core.online import UNIT_METRIC_COLUMNS, aggregates_path, attributed_events, silver_exposures
from jobs import experiment_report
from jobs.experiment_report import interleaving_units, moment_aggregates, unit_table
from jobs.exposures import SILVER_EXPOSURE_SCHEMA

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 3, 2)
START = dt.datetime(2026, 3, 2)


def at(hour: int, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour)


def exposures(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """(request_id, hour, user, session, experiment, variant, [(item, position, team)])."""
    data = []
    for request_id, hour, user, session, experiment, variant, items in rows:
        shown = [{"item_id": i, "position": p, "score": 1.0, "team": t} for i, p, t in items]
        unit = user or session
        data.append(
            (
                request_id,
                at(hour),
                user,
                session,
                "user",
                "m",
                "1",
                experiment,
                variant,
                False,
                "{}",
                shown,
                len(shown),
                unit,
            )
        )
    return spark.createDataFrame(data, SILVER_EXPOSURE_SCHEMA)


ATTRIBUTED_SCHEMA = (
    "unit_id string, experiment string, variant string, attribution string, event_type string, price double, "
    "quantity int, exposure_request_id string, team string"
)


def attributed(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, ATTRIBUTED_SCHEMA)


EVENTS_SCHEMA = (
    "event_id string, user_id string, item_id string, event_type string, ts timestamp, session_id string, "
    "price double, quantity int"
)

AB_EXPOSURES = [
    ("R1", 10, "u1", None, "exp", "control", [("a", 1, None)]),
    ("R2", 11, "u1", None, "exp", "control", [("a", 1, None)]),
    ("R3", 10, "u2", None, "exp", "treatment", [("b", 1, None)]),
    ("R4", 10, "u3", None, "exp", "treatment", [("b", 1, None)]),
    ("R5", 12, "u3", None, "exp", "treatment", [("b", 1, None)]),
    ("R6", 10, "u4", None, "exp", "control", [("a", 1, None)]),
    ("R7", 11, "u4", None, "exp", "treatment", [("a", 1, None)]),
    ("R8", 10, "u5", None, "other", "control", [("a", 1, None)]),
    ("R9", 10, None, "s9", "exp", "control", [("a", 1, None)]),
]
AB_ATTRIBUTED = [
    ("u1", "exp", "control", "request", "click", 10.0, 1, "R1", None),
    ("u1", "exp", "control", "window", "click", 10.0, 1, "R2", None),
    ("u1", "exp", "control", "request", "add_to_cart", 10.0, 1, "R2", None),
    ("u1", "exp", "control", "request", "purchase", 10.0, 2, "R2", None),
    ("u3", "exp", "treatment", "request", "click", 5.0, 1, "R4", None),
    (None, None, None, None, "click", 5.0, 1, None, None),  # late: not attributed
    ("u5", "other", "control", "request", "click", 5.0, 1, "R8", None),
]
PRE_EVENTS = [
    ("p1", "u1", "a", "click", dt.datetime(2026, 2, 25, 9), None, 5.0, 1),
    ("p2", "u1", "a", "click", dt.datetime(2026, 2, 26, 9), None, 5.0, 1),
    ("p3", "u1", "a", "click", dt.datetime(2026, 3, 1, 23), None, 5.0, 1),
    ("p4", "u1", "a", "purchase", dt.datetime(2026, 3, 1, 23), None, 5.0, 1),
    ("p5", "u2", "b", "add_to_cart", dt.datetime(2026, 3, 1, 8), None, 7.0, 1),
    ("p6", "u1", "a", "click", dt.datetime(2026, 3, 2, 9), None, 5.0, 1),  # after the start
    ("p7", "u2", "b", "purchase", dt.datetime(2026, 2, 1, 8), None, 7.0, 1),  # before the pre-period
]


def test_unit_table_has_each_units_outcomes_and_pre_period(spark) -> None:
    units = unit_table(
        exposures(spark, AB_EXPOSURES),
        attributed(spark, AB_ATTRIBUTED),
        spark.createDataFrame(PRE_EVENTS, EVENTS_SCHEMA),
        "exp",
        START,
        pre_days=14,
    )
    got = {r["unit_id"]: r.asDict() for r in units.collect()}
    assert sorted(got) == ["s9", "u1", "u2", "u3", "u4"]
    cols = ("variant", *UNIT_METRIC_COLUMNS)
    row = {u: tuple(got[u][c] for c in cols) for u in got}
    assert row["u1"] == ("control", 2.0, 2.0, 1.0, 1.0, 1.0, 20.0, 1.0, 3.0, 0.0, 1.0, 5.0)
    assert row["u2"] == ("treatment", 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    assert row["u3"] == ("treatment", 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0)
    assert row["s9"] == ("control", 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert got["u4"]["variant"] is None and got["u4"]["variants"] == 2

    moments = moment_aggregates(units)
    assert sorted(moments) == ["control", "treatment"]
    control = np.array([row["u1"][1:], row["s9"][1:]])
    assert moments["control"]["n"] == 2
    assert np.allclose(moments["control"]["sums"], control.sum(axis=0))
    assert np.allclose(moments["control"]["cross"], control.T @ control)


def test_team_draft_credit(spark) -> None:
    rows = [
        ("R1", 10, "u1", None, "exp", INTERLEAVED, [("a", 1, "control"), ("b", 2, "treatment")]),
        ("R2", 11, "u1", None, "exp", INTERLEAVED, [("c", 1, "treatment"), ("d", 2, "control")]),
        ("R3", 10, "u2", None, "exp", INTERLEAVED, [("e", 1, "control"), ("f", 2, "treatment")]),
        ("R4", 11, "u2", None, "exp", INTERLEAVED, [("g", 1, "control")]),
        ("R5", 10, "u3", None, "exp", INTERLEAVED, [("h", 1, "treatment")]),
    ]
    clicks = [
        ("u1", "exp", INTERLEAVED, "request", "click", 1.0, 1, "R1", "treatment"),  # R1: a win
        ("u1", "exp", INTERLEAVED, "request", "click", 1.0, 1, "R2", "treatment"),  # R2: a tie
        ("u1", "exp", INTERLEAVED, "request", "click", 1.0, 1, "R2", "control"),
        ("u2", "exp", INTERLEAVED, "request", "click", 1.0, 1, "R3", "control"),  # R3: a loss
        ("u2", "exp", INTERLEAVED, "request", "add_to_cart", 1.0, 1, "R4", "control"),  # not a click
    ]
    units, meta = interleaving_units(exposures(spark, rows), attributed(spark, clicks), "exp")
    got = {r["unit_id"]: (r["wins"], r["losses"], r["ties"], r["preference"]) for r in units.collect()}
    assert got == {"u1": (1.0, 0.0, 1.0, 0.5), "u2": (0.0, 1.0, 0.0, -1.0), "u3": (0.0, 0.0, 0.0, 0.0)}
    assert meta == {
        "teams": {"control": "control", "treatment": "treatment"},
        "requests": 5,
        "first_pick": {"control": 3, "treatment": 2},
    }


def test_run_writes_units_and_aggregates(spark, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    exposures(spark, AB_EXPOSURES).write.parquet(str(silver_exposures(lake, DAY)))
    spark.createDataFrame(PRE_EVENTS, EVENTS_SCHEMA).write.parquet(str(lake.silver_events(DAY - dt.timedelta(days=1))))
    attributed(spark, AB_ATTRIBUTED).write.parquet(str(attributed_events(lake, DAY)))
    out = experiment_report.run(lake.root, DAY, load_config(), spark, experiment="exp", start="2026-03-02T00:00:00Z")
    assert out["units"] == {"total": 5, "in_several_variants": 1}
    assert {v: a["n"] for v, a in out["arms"].items()} == {"control": 2, "treatment": 2}
    assert out["missing_attribution_days"] == []
    saved = json.loads(aggregates_path(lake, "exp", DAY).read_text())
    assert saved["arms"] == out["arms"]
    assert spark.read.parquet(str(aggregates_path(lake, "exp", DAY).parent)).count() == 5

    with pytest.raises(FileNotFoundError, match="silver exposures"):
        experiment_report.run(
            lake.root, DAY - dt.timedelta(days=3), load_config(), spark, experiment="exp", window_days=1
        )


def test_run_interleaving(spark, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rows = [("R1", 10, "u1", None, "exp", INTERLEAVED, [("a", 1, "control"), ("b", 2, "treatment")])]
    exposures(spark, rows).write.parquet(str(silver_exposures(lake, DAY)))
    out = experiment_report.run(
        lake.root, DAY, load_config(), spark, experiment="exp", kind=INTERLEAVING, window_days=1
    )
    assert out["interleaving"]["requests"] == 1 and out["interleaving"]["wins"] == 0
    assert out["missing_attribution_days"] == [DAY.isoformat()]
    assert out["interleaving"]["units"]["n"] == 1
