"""docker-compose.yml and infra/ stay true to the code: every service's entry point exists here, every
RECSYS_* variable is a real setting, and the Spark standalone cluster and the MLflow server the compose
file starts run as local processes with the same commands (no Docker engine needed)."""

from __future__ import annotations

import importlib.util
import os
import re
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


# ----------------------------------------------------------------------------------------- no default secrets

SECRETS_SCRIPT = PROJECT_ROOT / "infra" / "secrets.sh"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN|FERNET|SALT|REDISCLI_AUTH", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+][^}]*)?\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]*)@")
OLD_DEFAULTS = (
    "mercato-secret",
    "change-me",
    "airflow:airflow@",
    "mlflow:mlflow@",
    "PASSWORD 'airflow'",
    "PASSWORD 'mlflow'",
)
INFRA_FILES = [PROJECT_ROOT / "docker-compose.yml", *sorted((PROJECT_ROOT / "infra").iterdir())]


def _references(text: str) -> list[re.Match[str]]:
    return list(REFERENCE.finditer(text.replace("$$", "")))


def _environments() -> list[tuple[str, str, str]]:
    """(service, variable, value) of every environment entry of the compose file, x-mercato included."""
    out = []
    for name, svc in {"x-mercato": COMPOSE["x-mercato"], **COMPOSE["services"]}.items():
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        out.extend((name, key, str(value)) for key, value in items if key != "<<")
    return out


def _generate(target: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SECRETS_SCRIPT), str(target)], capture_output=True, text=True, env={**os.environ, **env}
    )


def _parse_env(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_compose_and_infra_ship_no_literal_secret() -> None:
    for service, key, value in _environments():
        if SECRET_NAME.search(key):
            refs = _references(value)
            assert refs and REFERENCE.sub("", value) == "", f"{service}.{key} holds a literal, not ${{VAR:?}}"
        for password in URL_PASSWORD.findall(value):
            assert REFERENCE.fullmatch(password), f"{service}.{key}: a password in a URL must be ${{VAR:?}}"
    for name, svc in COMPOSE["services"].items():
        command = " ".join(_command(svc)) if "command" in svc else ""
        for password in URL_PASSWORD.findall(command):
            assert REFERENCE.fullmatch(password), f"{name}: a password in its command must be ${{VAR:?}}"
    for path in INFRA_FILES:
        text = path.read_text()
        found = [d for d in OLD_DEFAULTS if d in text]
        assert not found, f"{path.name} ships default secret(s) {found}"
    env_file = PROJECT_ROOT / "infra" / "mercato.env"
    names = [line.split("=", 1)[0] for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#"]
    assert not [n for n in names if SECRET_NAME.search(n)], "infra/mercato.env (tracked) must hold no secret"
    assert not URL_PASSWORD.findall(env_file.read_text())


def test_every_compose_variable_is_generated_by_make_secrets(tmp_path: Path) -> None:
    compose_text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    used = {m.group(1): m.group(2) or "" for m in _references(compose_text)}
    target = tmp_path / "secrets.env"
    run = subprocess.run(
        ["make", "--no-print-directory", "secrets", f"SECRETS_FILE={target}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    generated = _parse_env(target)
    assert set(used) <= set(generated), f"compose uses {sorted(set(used) - set(generated))} that make secrets omits"
    secret_vars = {name for name in generated if generated[name]}
    for name in secret_vars & set(used):
        assert used[name].startswith(":?"), f"${{{name}}} must be required (${{{name}:?...}}), never defaulted"
    values = [generated[name] for name in sorted(secret_vars)]
    assert len(set(values)) == len(values), "repeated secrets"
    keys = [v for n, v in generated.items() if re.search("PASSWORD|SECRET|SALT|FERNET", n)]
    assert len(keys) >= 9 and min(len(v) for v in keys) >= 40, "weak secrets (want ~256 random bits each)"
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]+", v) for v in values), "secrets must be URL- and shell-safe"
    assert target.stat().st_mode & 0o777 == 0o600

    again = _generate(target)
    assert again.returncode != 0 and "exists" in again.stderr and _parse_env(target) == generated  # never clobbered
    assert _generate(target, FORCE="1").returncode == 0
    rotated = _parse_env(target)
    assert all(rotated[n] != generated[n] for n in secret_vars), "a second run must draw new random values"

    resolved = REFERENCE.sub(lambda m: generated[m.group(1)], compose_text.replace("$$", "\0"))
    assert "${" not in resolved
    services = yaml.safe_load(resolved.replace("\0", "$$"))["services"]
    assert (
        generated["AIRFLOW_DB_PASSWORD"]
        in services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=PROJECT_ROOT)
    assert ignored.returncode == 0, ".env (the secrets file) must be git-ignored"


def test_the_image_runs_as_a_non_root_user() -> None:
    dockerfile = (PROJECT_ROOT / "infra" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users, "infra/Dockerfile sets no USER: every container would run as root"
    name = users[-1].split(":")[0]
    assert name not in ("root", "0"), f"the image's last USER is {users[-1]}"
    assert any(re.search(rf"useradd .*--uid (\d+) .*{name}", " ".join(dockerfile)) for _ in [0])
    for service, svc in OUR_IMAGE_SERVICES.items():
        assert str(svc.get("user", name)).split(":")[0] not in ("root", "0"), f"{service} overrides the user to root"
