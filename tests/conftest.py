"""Shared fixtures: one SparkSession per test session, isolated RECSYS_* settings per test, shared-data paths."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.services"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def require_shared(relative: str) -> Path:
    """Path of a public dataset under ../shared/data; skip when absent, fail when RECSYS_REQUIRE_SHARED=1."""
    path = SHARED_DATA / relative
    if not path.exists():
        msg = f"public dataset {path} is absent (see ../shared/data/README.md for where to get it)"
        if os.environ.get("RECSYS_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and RECSYS_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return path


def require_binary(name: str) -> str:
    """Absolute path of a service binary (weed, redis-server); skip when absent, fail when RECSYS_REQUIRE_SERVICES=1."""
    venv_bin = Path(os.sys.executable).parent / name  # type: ignore[attr-defined]
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if not found:
        msg = f"{name} is not installed"
        if os.environ.get("RECSYS_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " and RECSYS_REQUIRE_SERVICES=1 (.ci/run installs it)")
        pytest.skip(msg)
    return found


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole test session (local[2], 2 shuffle partitions, UI off)."""
    from jobs.spark import get_spark

    session = get_spark("mercato-tests", master="local[2]", shuffle_partitions=2)
    yield session
    session.stop()
    # py4j's finalizers log "Closing down clientserver connection" after pytest closed its streams
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture
def recsys_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every RECSYS_* location at a fresh temp folder and reset cached settings."""
    from core.settings import get_settings

    home = tmp_path / "recsys"
    monkeypatch.setenv("RECSYS_HOME", str(home))
    for var in ("RECSYS_LAKE_URI", "RECSYS_REGISTRY_URI", "RECSYS_MLFLOW_TRACKING_URI", "RECSYS_REPORTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
