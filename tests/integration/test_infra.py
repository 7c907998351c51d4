"""docker-compose.yml and infra/ stay true to the code: every service's entry point exists here, every
RECSYS_* variable is a real setting, and the Spark standalone cluster and the MLflow server the compose
file starts run as local processes with the same commands (no Docker engine needed)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.settings import Settings
from tests.conftest import PROJECT_ROOT
from tests.services import stop_process

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
VENV_BIN = Path(sys.executable).parent
OUR_IMAGE_SERVICES = {
    name: svc for name, svc in COMPOSE["services"].items() if svc.get("image") == "mercato:latest" or "build" in svc
}


def _command(svc: dict) -> list[str]:
    cmd = svc["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def test_compose_has_the_production_services() -> None:
    expected = {
        "postgres",
        "minio",
        "redis",
        "mlflow",
        "spark-master",
        "spark-worker",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "scoring-api",
    }
    assert expected <= set(COMPOSE["services"])


@pytest.mark.parametrize("service", sorted(OUR_IMAGE_SERVICES))
def test_service_entry_point_exists(service: str) -> None:
    cmd = _command(OUR_IMAGE_SERVICES[service])
    if cmd[0] == "python":
        assert cmd[1] == "-m"
        assert importlib.util.find_spec(cmd[2] + ".__main__") or importlib.util.find_spec(cmd[2])
    elif cmd[0] in ("airflow", "mlflow"):
        subcommand = [c for c in cmd[1:3] if not c.startswith("-")]
        proc = subprocess.run(
            [str(VENV_BIN / cmd[0]), *subcommand, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    elif cmd[0] == "spark-class":
        assert (VENV_BIN / "spark-class").exists()
    else:
        pytest.fail(f"{service}: unknown entry point {cmd[0]}")


def test_env_file_uses_real_settings() -> None:
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    env_lines = (PROJECT_ROOT / "infra" / "mercato.env").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in env_lines if line and not line.startswith("#")}
    recsys = {n for n in names if n.startswith("RECSYS_")}
    assert recsys, "infra/mercato.env configures no RECSYS_ setting"
    assert recsys <= fields, f"unknown settings in infra/mercato.env: {sorted(recsys - fields)}"


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.spark
def test_spark_standalone_cluster_runs_a_job(tmp_path: Path) -> None:
    """Start master + worker with the compose commands, then run a job through ``RECSYS_SPARK_MASTER``."""
    master_cmd = _command(COMPOSE["services"]["spark-master"])
    worker_cmd = _command(COMPOSE["services"]["spark-worker"])
    port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
        "SPARK_WORKER_CORES": "1",
        "SPARK_WORKER_MEMORY": "1g",
        "PYSPARK_PYTHON": sys.executable,
    }
    master = [str(VENV_BIN / "spark-class"), *master_cmd[1:]]
    master[master.index("--host") + 1] = "127.0.0.1"
    master[master.index("--port") + 1] = str(port)
    master[master.index("--webui-port") + 1] = str(ui_port)
    worker = [str(VENV_BIN / "spark-class"), worker_cmd[1], f"spark://127.0.0.1:{port}", "--webui-port", str(worker_ui)]
    procs = []
    try:
        procs.append(subprocess.Popen(master, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(port, procs[0])
        procs.append(subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        code = (
            "from jobs.spark import get_spark\n"
            f"s = get_spark('infra-test', master='spark://127.0.0.1:{port}', shuffle_partitions=2)\n"
            "print('SUM', s.range(1000).groupBy().sum('id').collect()[0][0])\n"
            "print('MASTER', s.sparkContext.master)\n"
            "s.stop()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env={**env, "PYTHONPATH": str(PROJECT_ROOT), "RECSYS_SPARK_DRIVER_MEMORY": "1g"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "SUM 499500" in out.stdout, out.stderr[-3000:]
        assert f"MASTER spark://127.0.0.1:{port}" in out.stdout
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout=20)


@pytest.mark.services
@pytest.mark.slow
def test_mlflow_server_command_serves_the_tracking_api(tmp_path: Path) -> None:
    """``mlflow server`` as compose runs it (SQLite instead of Postgres here) answers the REST API."""
    cmd = _command(COMPOSE["services"]["mlflow"])
    assert cmd[:2] == ["mlflow", "server"]
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, timeout=120)
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        assert resp.status_code == 200, resp.text
        assert any(e["name"] == "Default" for e in resp.json()["experiments"])
    finally:
        stop_process(proc, timeout=20)
