"""Serving fixtures: one small trained BPR artifact per session, a registry serving it, an API client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.registry import ServingRegistry
from serving.app import create_app
from tests.serving.clusters import AUTH, TEST_KEYS_JSON, export_bpr, live_cfg, settings_for


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app a serving test builds accepts the suite's key (``AUTH`` headers); nothing is open."""
    monkeypatch.setenv("RECSYS_API_KEYS", TEST_KEYS_JSON)
    monkeypatch.delenv("RECSYS_AUTH_DISABLED", raising=False)


@pytest.fixture(scope="session")
def bpr_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BPR model trained on two item clusters (alpha/beta), with fallback, history and items files."""
    return export_bpr(tmp_path_factory.mktemp("bpr") / "artifact")


@pytest.fixture
def registry_dir(tmp_path: Path, bpr_artifact: Path) -> Path:
    """A local serving registry whose champion is that model (bpr/1)."""
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(bpr_artifact, "bpr", 1)
    reg.set_champion("bpr", 1)
    return tmp_path / "registry"


@pytest.fixture
def client(tmp_path: Path, registry_dir: Path) -> Iterator[TestClient]:
    """The scoring API serving bpr/1 (no poll thread), started and shut down around the test."""
    app = create_app(settings_for(tmp_path / "home", registry_dir), cfg=live_cfg(), poll=False)
    with TestClient(app, headers=AUTH) as c:
        yield c
