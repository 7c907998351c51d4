"""Every variable in the README's configuration table takes effect where the README says it does.

The table is read from README.md itself; a documented variable without a check here fails, and so does
a setting in ``core/settings.py`` that the table does not document. Each check sets the variable and
observes its effect through the real consumer (Settings, the registry, MLflow, Spark, the API
process started with ``make serve``, the config loader, ``make pipeline``'s Airflow environment).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.settings import Settings, get_settings
from serving.settings import ServingSettings
from tests.conftest import PROJECT_ROOT
from tests.services import free_ports

pytestmark = [pytest.mark.integration]


def documented_variables() -> list[str]:
    """Variable names in the README's configuration table (first column, `A` / `B` rows split)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 3)]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names.extend(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AIRFLOW"))}
    env.pop("PORT", None)
    env.update({"RECSYS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(PROJECT_ROOT), **extra})
    return env


def _serve_answers(tmp_path: Path, env: dict[str, str], port: int) -> None:
    """``make serve`` as the README types it answers HTTP on ``port`` (503 until a model is published)."""
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "serve"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                assert (resp.status_code in (200, 503) and "error" in resp.json()) or "status" in resp.json()
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        pytest.fail(f"make serve did not answer on port {port}:\n{log.read_text()[-3000:]}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def check_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "h"))
    s = Settings()
    assert s.lake == str((tmp_path / "h" / "lake").absolute()) and s.registry.startswith(str(tmp_path / "h"))


def check_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_LAKE_URI", str(tmp_path / "elsewhere"))
    assert Settings().lake == str(tmp_path / "elsewhere")


def check_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.registry import ServingRegistry

    monkeypatch.setenv("RECSYS_REGISTRY_URI", str(tmp_path / "reg"))
    assert ServingRegistry.from_settings(Settings()).uri == str(tmp_path / "reg")


def check_s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.registry import S3Backend, ServingRegistry

    monkeypatch.setenv("RECSYS_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("RECSYS_S3_REGION", "eu-west-3")
    monkeypatch.setenv("RECSYS_REGISTRY_URI", "s3://bucket/prefix")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    get_settings.cache_clear()
    backend = ServingRegistry.from_settings().backend
    assert isinstance(backend, S3Backend)
    assert backend.client.meta.endpoint_url == "http://127.0.0.1:1"
    assert backend.client.meta.region_name == "eu-west-3"


def check_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from training import tracking

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("RECSYS_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECSYS_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "arts"))
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", "readme-check")
    monkeypatch.setenv("RECSYS_MLFLOW_REGISTERED_MODEL", "readme-model")
    settings = Settings()
    experiment_id = tracking.configure(settings)
    assert mlflow.get_tracking_uri() == uri and (tmp_path / "elsewhere.db").exists()
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == "readme-check"
    assert experiment.artifact_location == (tmp_path / "arts").absolute().as_uri()
    assert settings.mlflow_registered_model == "readme-model"
    assert tracking.champion_version(settings) is None  # looks the alias up on that registered model


def check_spark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "from jobs.spark import get_spark; s = get_spark(); "
        "print(s.sparkContext.master, s.conf.get('spark.driver.memory')); s.stop()"
    )
    env = _env(tmp_path, RECSYS_SPARK_MASTER="local[1]", RECSYS_SPARK_DRIVER_MEMORY="700m")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["local[1]", "700m"]


def check_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from models.torch_utils import pick_device

    monkeypatch.setenv("RECSYS_DEVICE", "cpu")
    assert pick_device(Settings().device) == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("RECSYS_DEVICE", "cuda")
        with pytest.raises(ValueError, match="RECSYS_DEVICE"):
            pick_device(Settings().device)


def check_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.app import create_app

    monkeypatch.setenv("RECSYS_STATE_URI", "memory://?max_users=7")
    app = create_app(poll=False)
    assert app.state.user_state.uri == "memory://?max_users=7"


def check_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, prefixed, ignored = free_ports(3)
    _serve_answers(tmp_path, _env(tmp_path, PORT=str(plain)), plain)
    _serve_answers(tmp_path, _env(tmp_path, RECSYS_PORT=str(prefixed), PORT=str(ignored)), prefixed)


def check_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOST", "127.0.0.2")
    assert ServingSettings().host == "127.0.0.2"


def check_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path, RECSYS_WORKERS="2", RECSYS_STATE_URI="memory://")
    out = subprocess.run([sys.executable, "-m", "serving"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "RECSYS_WORKERS=2 needs shared user state" in out.stderr


def check_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.app import build_store

    monkeypatch.setenv("RECSYS_SERVING_CACHE_DIR", str(tmp_path / "cache"))
    assert build_store().cache_dir == tmp_path / "cache"


def check_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_REPORTS_DIR", str(tmp_path / "reports"))
    assert Settings().reports == str(tmp_path / "reports")


def check_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import DEFAULT_CONFIG_PATH, load_config

    custom = tmp_path / "recsys.toml"
    custom.write_text(DEFAULT_CONFIG_PATH.read_text().replace("max_k = 100", "max_k = 33"))
    monkeypatch.setenv("RECSYS_CONFIG", str(custom))
    assert load_config().serving.max_k == 33


def check_airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path, AIRFLOW_HOME=str(tmp_path / "af"))
    out = subprocess.run(
        [sys.executable, "-m", "jobs.pipeline", "--print-env"], env=env, capture_output=True, text=True, timeout=60
    )
    assert f"export AIRFLOW_HOME={tmp_path / 'af'}" in out.stdout.splitlines()


def check_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.auth import SCOPES, add_key, new_key

    def metrics_status(headers: dict[str, str]) -> int:
        get_settings.cache_clear()
        with TestClient(create_app(ServingSettings(), poll=False)) as client:
            return client.get("/metrics", headers=headers).status_code

    monkeypatch.setenv("RECSYS_API_KEYS_FILE", str(tmp_path / "keys.json"))
    from_file = add_key(tmp_path / "keys.json", "ops", ["admin"])
    inline, record = new_key("inline", SCOPES)
    monkeypatch.setenv("RECSYS_API_KEYS", json.dumps({"keys": [record.to_json()]}))
    assert metrics_status({}) == 401
    assert metrics_status({"Authorization": f"Bearer {from_file}"}) == 200
    assert metrics_status({"X-API-Key": inline}) == 200
    monkeypatch.setenv("RECSYS_AUTH_DISABLED", "true")
    assert metrics_status({}) == 200


def check_wal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.app import create_app

    monkeypatch.setenv("RECSYS_WAL_DIR", str(tmp_path / "wal"))
    get_settings.cache_clear()
    create_app(ServingSettings(), poll=False)
    assert any((tmp_path / "wal").glob("slot-*")), "the API opened its write-ahead log there"


def check_erasure_salt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.erasure import Erasure, ErasureNotConfigured

    with pytest.raises(ErasureNotConfigured):
        Erasure(tmp_path / "lake", ServingSettings().erasure_salt or None).check()
    monkeypatch.setenv("RECSYS_ERASURE_SALT", "s" * 40)
    assert Erasure(tmp_path / "lake", ServingSettings().erasure_salt or None).check() == "s" * 40


def check_signing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.registry import ServingRegistry, sign

    monkeypatch.setenv("RECSYS_REGISTRY_URI", str(tmp_path / "reg"))
    monkeypatch.setenv("RECSYS_REGISTRY_SIGNING_KEY", "k" * 32)
    registry = ServingRegistry.from_settings(Settings())
    document = {"model_name": "bpr", "version": "1"}
    registry._check_signature({**document, "signature": sign(document, "k" * 32)}, "champion.json")
    with pytest.raises(Exception, match=r"sign"):
        registry._check_signature(document, "champion.json")


CHECKS: dict[str, Callable[[Path, pytest.MonkeyPatch], None]] = {
    "RECSYS_HOME": check_home,
    "RECSYS_LAKE_URI": check_lake,
    "RECSYS_REGISTRY_URI": check_registry,
    "RECSYS_S3_ENDPOINT_URL": check_s3_endpoint,
    "RECSYS_S3_REGION": check_s3_endpoint,
    "RECSYS_MLFLOW_TRACKING_URI": check_mlflow,
    "RECSYS_MLFLOW_ARTIFACT_ROOT": check_mlflow,
    "RECSYS_MLFLOW_EXPERIMENT": check_mlflow,
    "RECSYS_MLFLOW_REGISTERED_MODEL": check_mlflow,
    "RECSYS_SPARK_MASTER": check_spark,
    "RECSYS_SPARK_DRIVER_MEMORY": check_spark,
    "RECSYS_DEVICE": check_device,
    "RECSYS_STATE_URI": check_state,
    "RECSYS_PORT": check_port,
    "PORT": check_port,
    "RECSYS_HOST": check_host,
    "RECSYS_WORKERS": check_workers,
    "RECSYS_SERVING_CACHE_DIR": check_cache,
    "RECSYS_REPORTS_DIR": check_reports,
    "RECSYS_CONFIG": check_config,
    "AIRFLOW_HOME": check_airflow_home,
    "RECSYS_API_KEYS_FILE": check_api_keys,
    "RECSYS_API_KEYS": check_api_keys,
    "RECSYS_AUTH_DISABLED": check_api_keys,
    "RECSYS_WAL_DIR": check_wal_dir,
    "RECSYS_ERASURE_SALT": check_erasure_salt,
    "RECSYS_REGISTRY_SIGNING_KEY": check_signing_key,
}


def test_every_documented_variable_has_a_check() -> None:
    documented = documented_variables()
    assert len(documented) >= 15, documented
    assert not set(documented) - set(CHECKS), "README documents variables this test does not check"
    assert not set(CHECKS) - set(documented), "checks for variables the README no longer documents"


def test_every_setting_is_documented() -> None:
    documented = set(documented_variables())
    fields = set(ServingSettings.model_fields) - {"port"}
    missing = sorted(f"RECSYS_{name.upper()}" for name in fields if f"RECSYS_{name.upper()}" not in documented)
    assert not missing, f"settings without a README row: {missing}"


@pytest.mark.parametrize("check", sorted({c.__name__: c for c in CHECKS.values()}.values(), key=lambda c: c.__name__))
def test_documented_variable_takes_effect(
    check: Callable[[Path, pytest.MonkeyPatch], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [*CHECKS, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        check(tmp_path, monkeypatch)
    finally:
        get_settings.cache_clear()
