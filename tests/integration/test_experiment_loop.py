"""The experiment read-out on real parts: ``airflow dags test recsys_experiments`` → Spark (exposures, attribution,
aggregates) → GX (exposure gate) → always-valid statistics → report files → MLflow.

A registry holds a running A/B experiment; the lake holds three days of the API's exposure log (one line
malformed), silver events that follow the exposures with their request ids (the treatment's items are
clicked twice as often) and a pre-period. The run succeeds, quarantines the bad line, attributes the
clicks, finds the treatment better with a passing SRM check, writes the report and logs it; conclude
is skipped (promote is off).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.experiments import assign, new_document
from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]

NAME = "exp-e2e"
SALT = "e2e-salt"
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
RUN_DATE = DAYS[-1]
USERS = [f"u{i:04d}" for i in range(400)]
ARMS = {"control": ("bpr", "1"), "treatment": ("sasrec", "2")}
CLICK_P = {"control": 0.08, "treatment": 0.16}


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_events(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("event_type", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("session_id", pa.string()),
            ("price", pa.float64()),
            ("quantity", pa.int32()),
            ("request_id", pa.string()),
            ("position", pa.int32()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path / "part-0.parquet")


def build_world(home: Path) -> None:
    """Registry with the running experiment, landing exposures, silver events (experiment days + pre-period)."""
    from core.registry import ServingRegistry

    registry = ServingRegistry(str(home / "registry"))
    for model, version in ARMS.values():
        folder = home / "models" / model
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({"name": model}))
        registry.publish(folder, model, version)
    doc = new_document(NAME, ARMS["control"], [ARMS["treatment"]], salt=SALT, started_at=_iso(START))
    registry.write_experiment(doc)

    rng = random.Random(3)
    lake = home / "lake"
    pre = []
    for n, user in enumerate(USERS):
        for k in range(rng.randint(0, 4)):
            ts = START - dt.timedelta(days=rng.randint(1, 10), minutes=rng.randint(0, 600))
            pre.append({"event_id": f"pre-{n}-{k}", "user_id": user, "item_id": f"i{k}", "event_type": "click",
                        "ts": ts, "session_id": None, "price": 10.0, "quantity": 1, "request_id": None, "position": None})  # fmt: skip
    _write_events(lake / "silver" / "events" / "dt=2026-02-25", pre)

    for d, day in enumerate(DAYS):
        exposures, events = [], []
        for n, user in enumerate(USERS):
            variant = ["control", "treatment"][assign(SALT, user, [0.5, 0.5])]
            model, version = ARMS[variant]
            for r in range(2):
                ts = dt.datetime.combine(day, dt.time(8 + r * 5, n % 60), tzinfo=dt.UTC)
                request_id = f"{day:%Y%m%d}-{n:04d}-{r}"
                items = [f"i{(n + j + d) % 50}" for j in range(5)]
                exposures.append(
                    {"request_id": request_id, "ts": _iso(ts), "user_id": user, "session_id": None,
                     "route": "/v1/recommendations/{user_id}", "model_name": model, "model_version": version,
                     "experiment": NAME, "variant": variant, "fallback": False,
                     "filters": {"exclude": "seen", "category": None, "min_price": None, "max_price": None,
                                 "diversity": 0.0},
                     "items": [{"item_id": i, "position": p, "score": 1.0 / p, "team": None}
                               for p, i in enumerate(items, start=1)]}
                )  # fmt: skip
                for p, item in enumerate(items, start=1):
                    if rng.random() < CLICK_P[variant] / p**0.5:
                        events.append({"event_id": f"{request_id}-{p}", "user_id": user, "item_id": item,
                                       "event_type": "click", "ts": ts + dt.timedelta(minutes=3), "session_id": None,
                                       "price": 10.0, "quantity": 1, "request_id": request_id, "position": p})  # fmt: skip
        folder = lake / "landing" / "exposures" / f"dt={day.isoformat()}"
        folder.mkdir(parents=True)
        lines = [json.dumps(e) for e in exposures] + (["{not json"] if d == 0 else [])
        (folder / "api-1.jsonl").write_text("\n".join(lines) + "\n")
        _write_events(lake / "silver" / "events" / f"dt={day.isoformat()}", events)


def test_the_experiment_dag_reports_the_better_arm(tmp_path: Path) -> None:
    home = tmp_path / "recsys"
    build_world(home)
    env = {
        **os.environ,
        "RECSYS_HOME": str(home),
        "PYTHONPATH": str(PROJECT_ROOT),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    for var in ("RECSYS_LAKE_URI", "RECSYS_REGISTRY_URI", "RECSYS_MLFLOW_TRACKING_URI", "RECSYS_REPORTS_DIR"):
        env.pop(var, None)
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    conf = json.dumps({"run_date": RUN_DATE.isoformat()})
    logical = (dt.datetime.combine(RUN_DATE, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)).isoformat()
    proc = subprocess.run(
        [airflow, "dags", "test", "recsys_experiments", logical, "--conf", conf],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = proc.stdout[-5000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, output

    reports = home / "reports" / RUN_DATE.isoformat()
    report = json.loads((reports / f"experiment_{NAME}.json").read_text())
    assert report["analysis"]["srm"]["passed"] is True
    assert report["analysis"]["variants"]["control"]["units"] + report["analysis"]["variants"]["treatment"]["units"] == len(USERS)  # fmt: skip
    assert report["analysis"]["variants"]["control"]["exposures"] > 0
    assert report["decision"]["status"] == "treatment_wins", report["decision"]
    assert "| ctr |" in (reports / f"experiment_{NAME}.md").read_text()
    assert json.loads((reports / "validation_exposures.json").read_text())["success"] is True

    lake = home / "lake"
    stage = json.loads((lake / "reports" / RUN_DATE.isoformat() / "attribution.json").read_text())
    assert stage["attributed"] == stage["events"] > 0 and stage["unknown_request"] == 0
    exposures = json.loads((lake / "reports" / RUN_DATE.isoformat() / "exposures.json").read_text())
    assert exposures["rejected"] == 1 and exposures["exposures"] == 2 * len(USERS) * len(DAYS)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'experiment_report'")
    assert [r.data.tags["experiment"] for r in runs] == [NAME]
    assert runs[0].data.tags["decision"] == "treatment_wins"
