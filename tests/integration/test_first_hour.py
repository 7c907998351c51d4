"""A new user's first hour: their own historical data runs as typed in the README, and a run that did
nothing never reports success."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]


def historical_folder(root: Path) -> Path:
    """A purchase log dated 2011-2013 (no prices, no sessions) with a catalogue beside it."""
    rng = np.random.default_rng(3)
    n = 2500
    start = dt.datetime(2011, 1, 1, tzinfo=dt.UTC)
    # three years of a small shop that sells on about one day a fortnight: few day partitions, so the
    # test's cost is the pipeline's and not a thousand near-empty days
    days = np.sort(rng.choice(365 * 3, 75, replace=False))
    minutes = rng.choice(days, n) * 60 * 24 + rng.integers(0, 60 * 24, n)
    events = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 150, n)],
            "item_id": [f"i{i}" for i in rng.zipf(1.4, n) % 90],
            "event_type": "purchase",
            "ts": [(start + dt.timedelta(minutes=int(m))).isoformat() for m in minutes],
        }
    )
    folder = root / "shop-history"
    folder.mkdir(parents=True)
    events.to_csv(folder / "events.csv", index=False)
    pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(90)], "category": [f"c{i % 5}" for i in range(90)], "brand": "acme"}
    ).to_csv(folder / "items.csv", index=False)
    return folder


def make_pipeline(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW"))}
    env["RECSYS_HOME"] = str(home)
    return subprocess.run(
        ["make", "pipeline", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800
    )


def test_historical_data_runs_and_the_summary_states_the_window(tmp_path: Path) -> None:
    folder = historical_folder(tmp_path)
    home = tmp_path / "recsys"
    proc = make_pipeline(home, f"DATA={folder}", "FORMAT=events", "PIPELINE_ARGS=--models popularity,item_knn")
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:] + proc.stderr[-3000:]
    assert "outcome=success" in out
    champion = json.loads((home / "registry" / "champion.json").read_text())
    assert champion["model_name"] in ("popularity", "item_knn")
    window = next(line for line in out.splitlines() if line.startswith("window "))
    last_day = pd.read_csv(folder / "events.csv")["ts"].max()[:10]
    first_window_day = (dt.date.fromisoformat(last_day) - dt.timedelta(days=364)).isoformat()
    assert window.startswith(f"window {first_window_day} .. {last_day} (365 days):"), window
    assert "older events left out" in window and 'PIPELINE_ARGS="--window-days' in window
    task_lines = [line for line in out.splitlines() if line.startswith("  ") and " success " in line]
    assert {line.split()[0] for line in task_lines} >= {"land", "ingest", "clean", "features", "promote"}
    engine_log = Path(out.split("engine logs (Airflow, Spark, Great Expectations): ")[1].splitlines()[0])
    assert engine_log.is_file() and "DAG TEST" in engine_log.read_text()
    assert len(out.splitlines()) < 60, "the console should be a page, not the engines' chatter"


def test_a_run_in_which_no_task_executed_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow can end a run 'successfully' without running anything (e.g. before the DAG's start date)."""
    import subprocess as sp

    from core.settings import get_settings
    from jobs import pipeline

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    monkeypatch.setattr(pipeline, "ensure_airflow_db", lambda env, log: None)
    monkeypatch.setattr(pipeline, "_airflow", lambda args, env, log: sp.Popen(["true"]))
    try:
        rc = pipeline.main(["--format", "simulated", "--run-date", "2026-03-01"])
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert rc == 1
    assert "no task of the run executed" in out and "outcome=FAILED" in out
