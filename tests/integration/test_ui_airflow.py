"""``make ui-airflow`` as the README says to type it: Airflow standalone comes up, and a run of
``recsys_daily`` triggered through its REST API (the UI's "Trigger DAG w/ config" call) succeeds.

The command runs from the project root with a PATH that does not hold the virtual environment (as in
a new user's shell), on free ports, in a throw-away RECSYS_HOME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.services import free_ports

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_daily"
#: standalone migrates its DB, then starts api-server, scheduler, dag-processor and triggerer.
STARTUP_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _user_path() -> str:
    """PATH without the project's virtual environment (a new user's shell has not activated it)."""
    venv_bin = str(PROJECT_ROOT / ".venv" / "bin")
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)


def _wait(what: str, timeout: float, check, proc: subprocess.Popen[bytes], log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make ui-airflow exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        try:
            got = check()
            if got:
                return got
            last = got
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(2.0)
    pytest.fail(f"{what} not reached within {timeout:.0f}s (last: {last!r}):\n{log.read_text()[-4000:]}")


def _failed_task_logs(home: Path, states: dict[str, str]) -> str:
    failed = [task for task, state in states.items() if state == "failed"]
    texts = []
    for task in failed:
        for path in sorted((home / "airflow" / "logs").rglob(f"task_id={task}/attempt=*.log"))[-1:]:
            texts.append(f"--- {path}\n{path.read_text()[-3000:]}")
    return "\n".join(texts)


def test_make_ui_airflow_serves_and_a_rest_triggered_run_succeeds(tmp_path: Path) -> None:
    api_port, worker_logs, trigger_logs = free_ports(3)
    home = tmp_path / "recsys"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))},
        "PATH": _user_path(),
        "RECSYS_HOME": str(home),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs),
    }
    log = tmp_path / "ui-airflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "ui-airflow"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        _wait(
            "the API server answers",
            STARTUP_TIMEOUT_S,
            lambda: httpx.get(f"{base}/api/v2/version").is_success,
            proc,
            log,
        )
        passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
        creds = _wait("the admin password is generated", 60, lambda: json.loads(passwords.read_text()), proc, log)
        user, password = next(iter(creds.items()))
        token = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}).json()["access_token"]
        api = httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        _wait("the DAG is parsed", STARTUP_TIMEOUT_S, lambda: api.get(f"/dags/{DAG_ID}").is_success, proc, log)

        conf = {
            "format": "simulated",
            "models": ["popularity", "item_knn"],
            "sim_users": 300,
            "sim_items": 120,
            "sim_days": 5,
        }
        resp = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
        assert resp.status_code == 200, resp.text
        run_id = resp.json()["dag_run_id"]

        def finished() -> str | None:
            state = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        state = _wait("the run finishes", RUN_TIMEOUT_S, finished, proc, log)
        tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        states = {t["task_id"]: t["state"] for t in tasks}
        assert state == "success", f"run {run_id} ended {state}: {states}\n{_failed_task_logs(home, states)}"
        assert states["promote"] == "success" and states["train_popularity"] == "success"
        assert (home / "registry" / "champion.json").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
