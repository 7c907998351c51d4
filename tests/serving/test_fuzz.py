"""Fuzz every documented route from the OpenAPI schema with schemathesis: no input may cause a 5xx.

The app is built at import (schemathesis parametrizes from a schema object) on a temp home; the
module fixture publishes the trained model into its registry and loads it before any case runs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from core.config import load_config
from core.registry import ServingRegistry
from serving.app import create_app
from tests.serving.clusters import settings_for

ROOT = Path(tempfile.mkdtemp(prefix="mercato-fuzz-"))
_cfg = load_config().replace(serving={"poll_seconds": 60.0})
APP = create_app(settings_for(ROOT / "home", ROOT / "registry"), cfg=_cfg, poll=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def loaded_model(bpr_artifact: Path) -> Iterator[None]:
    registry = ServingRegistry(str(ROOT / "registry"))
    registry.publish(bpr_artifact, "bpr", 1)
    registry.set_champion("bpr", 1)
    assert APP.state.store.refresh() is True
    yield
    APP.state.landing.close()
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text
    assert response.headers["content-type"][0].startswith("application/json")
    if response.status_code >= 400:
        assert set(response.json()) == {"error"} and response.json()["error"]
