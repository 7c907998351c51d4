"""Failure alerts against a real local webhook: delivered with what an operator needs, and a webhook that
hangs, fails or is down never holds the failing task longer than the alert's timeout.

The last two tests run Airflow itself (``airflow dags test`` in a subprocess, private SQLite home): the real
``recsys_daily`` DAG failing at ``land`` alerts for the task and for the run, and a task killed by its
``execution_timeout`` alerts with the timeout."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.config import DEFAULT_CONFIG_PATH
from tests.chaos.webhook import closed_port_url, webhook_server
from tests.conftest import PROJECT_ROOT

TIMEOUT = 1.0


def _config(tmp_path: Path, url: str, timeout: float = TIMEOUT) -> Path:
    text = DEFAULT_CONFIG_PATH.read_text()
    assert 'webhook_url = ""' in text and "timeout_seconds = 5.0" in text
    text = text.replace('webhook_url = ""', f'webhook_url = "{url}"').replace(
        "timeout_seconds = 5.0", f"timeout_seconds = {timeout}"
    )
    path = tmp_path / f"recsys-{len(list(tmp_path.glob('recsys-*.toml')))}.toml"  # load_config caches by path
    path.write_text(text)
    return path


def _context() -> dict:
    ti = SimpleNamespace(
        dag_id="recsys_daily",
        task_id="validate_raw",
        run_id="manual__2026-03-11T00:00:00+00:00",
        try_number=1,
        map_index=-1,
        log_url="http://airflow.example/dags/recsys_daily/runs/manual/tasks/validate_raw?try_number=1",
    )
    return {
        "ti": ti,
        "params": {"run_date": "2026-03-10"},
        "logical_date": dt.datetime(2026, 3, 11, tzinfo=dt.UTC),
        "exception": RuntimeError("Data validation FAILED for stage 'raw'\n  table bronze_events ..."),
    }


@pytest.fixture
def alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``alert_on_failure`` with the config file pointed at a given webhook URL."""
    from dags.alerts import WEBHOOK_ENV, alert_on_failure

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)

    def send(url: str, timeout: float = TIMEOUT) -> float:
        monkeypatch.setenv("RECSYS_CONFIG", str(_config(tmp_path, url, timeout)))
        started = time.monotonic()
        alert_on_failure(_context())
        return time.monotonic() - started

    return send


def test_an_alert_carries_dag_task_run_date_exception_and_log(alert) -> None:
    with webhook_server() as hook:
        alert(hook.url)
    (payload,) = hook.received
    assert payload["dag_id"] == "recsys_daily" and payload["task_id"] == "validate_raw"
    assert payload["run_date"] == "2026-03-10" and payload["try_number"] == 1
    assert payload["exception"].startswith("RuntimeError: Data validation FAILED for stage 'raw'")
    assert payload["log_url"].endswith("tasks/validate_raw?try_number=1")
    assert "dag_id=recsys_daily" in payload["log_path"] and "task_id=validate_raw" in payload["log_path"]
    assert payload["text"].startswith("Mercato recsys_daily: task validate_raw failed (run date 2026-03-10)")


def test_a_hanging_webhook_is_given_up_within_the_timeout(alert) -> None:
    with webhook_server("hang") as hook:
        took = alert(hook.url)
        assert hook.arrived.is_set()  # it got the request and sits on it
    assert took < TIMEOUT + 0.5


def test_a_webhook_that_is_down_or_failing_does_not_fail_the_callback(alert) -> None:
    assert alert(closed_port_url()) < TIMEOUT + 0.5
    with webhook_server("error") as hook:
        assert alert(hook.url) < TIMEOUT + 0.5
    assert len(hook.received) == 1


def test_post_alert_reports_what_happened() -> None:
    from dags.alerts import post_alert

    with webhook_server() as hook:
        assert post_alert(hook.url, {"text": "x"}, TIMEOUT) is True
    with webhook_server("error") as hook:
        assert post_alert(hook.url, {"text": "x"}, TIMEOUT) is False
    assert post_alert(closed_port_url(), {"text": "x"}, TIMEOUT) is False


def test_no_url_no_alert_and_the_environment_wins(alert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dags.alerts import WEBHOOK_ENV

    with webhook_server() as hook:
        assert alert("") < 0.1 and hook.received == []
        monkeypatch.setenv(WEBHOOK_ENV, hook.url)
        alert("")
    assert len(hook.received) == 1


# ------------------------------------------------------------------------------------- real Airflow runs

TIMEOUT_DAG = """
import datetime as dt
import time

from airflow.sdk import dag, task

from dags.alerts import alert_on_failure


@dag(
    dag_id="chaos_timeout",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    default_args={"on_failure_callback": alert_on_failure, "retries": 0},
)
def chaos_timeout():
    @task(execution_timeout=dt.timedelta(seconds=2))
    def stuck():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # a stuck loop (short sleeps: the timeout signal lands between them)
            time.sleep(0.2)

    stuck()


chaos_timeout()
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private Airflow (SQLite) whose dags folder holds recsys_daily and a DAG whose task outlives its timeout."""
    root = tmp_path_factory.mktemp("airflow")
    dags = root / "dags"
    dags.mkdir()
    (dags / "recsys_daily.py").symlink_to(PROJECT_ROOT / "dags" / "recsys_daily.py")
    (dags / "chaos_timeout.py").write_text(TIMEOUT_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(PROJECT_ROOT),
            "RECSYS_HOME": str(root / "recsys"),
        }
    )
    out = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return env


def _dags_test(env: dict[str, str], dag_id: str, conf: dict, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("airflow")),
            "dags",
            "test",
            dag_id,
            "2026-03-11",
            "--conf",
            json.dumps(conf),
        ],
        env={**env, "RECSYS_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=400,
        cwd=PROJECT_ROOT,
    )


@pytest.mark.slow
@pytest.mark.integration
def test_recsys_daily_alerts_for_the_failed_task_and_the_failed_run(airflow_home, tmp_path: Path) -> None:
    with webhook_server() as hook:
        run = _dags_test(airflow_home, "recsys_daily", {"format": "landing"}, _config(tmp_path, hook.url, 5.0))
    by_kind = {(p["kind"], p["task_id"]): p for p in hook.received}
    assert ("task", "land") in by_kind, (run.stdout[-3000:], run.stderr[-3000:])
    land = by_kind[("task", "land")]
    assert "no landing data in the window" in land["exception"] and land["run_date"] == "2026-03-10"
    assert land["log_url"] and "task_id=land" in land["log_path"]
    assert ("run", "land") in by_kind, "the run's own on_failure_callback did not alert"
    assert by_kind[("run", "land")]["exception"] == "task_failure"
    assert by_kind[("run", "land")]["text"].startswith("Mercato recsys_daily: run failed at task land")
    assert len(hook.received) == 2  # nothing downstream ran, nothing else alerted


@pytest.mark.slow
@pytest.mark.integration
def test_a_task_past_its_execution_timeout_fails_and_alerts(airflow_home, tmp_path: Path) -> None:
    started = time.monotonic()
    with webhook_server() as hook:
        run = _dags_test(airflow_home, "chaos_timeout", {}, _config(tmp_path, hook.url, 5.0))
    # Airflow's own start-up takes a while here; the loop alone would take 300 s
    assert time.monotonic() - started < 240, "the task was not stopped by its execution_timeout"
    tasks = {p["task_id"]: p for p in hook.received if p["kind"] == "task"}
    assert "stuck" in tasks, (run.stdout[-3000:], run.stderr[-3000:])
    assert "Timeout" in tasks["stuck"]["exception"]
