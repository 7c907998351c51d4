"""Scoring API through FastAPI's TestClient, backed by a real local serving registry."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.artifacts import write_serving_files
from core.config import Config, load_config
from core.registry import ServingRegistry
from serving.app import create_app
from tests.core.test_registry import make_toy
from tests.serving.clusters import AUTH
from tests.serving.test_store import publish, tamper


@pytest.fixture
def reg_root(recsys_home: Path) -> Path:
    return recsys_home / "registry"


@pytest.fixture
def registry(reg_root: Path) -> ServingRegistry:
    return ServingRegistry(str(reg_root))


def fast_cfg(poll_seconds: float = 0.05) -> Config:
    return load_config().replace(serving={"poll_seconds": poll_seconds})


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_health_503_before_then_200(registry: ServingRegistry, tmp_path: Path) -> None:
    with TestClient(create_app(cfg=fast_cfg()), headers=AUTH) as client:
        resp = client.get("/health")
        assert resp.status_code == 503
        assert "no model loaded yet" in resp.json()["error"]
        assert client.get("/v1/recommendations/u1").status_code == 503

        publish(registry, tmp_path, 1)
        assert wait_for(lambda: client.get("/health").status_code == 200)
        body = client.get("/health").json()
        assert body["model"] == {"name": "toy", "version": "1"}
        assert body["checksum"] == registry.manifest("toy", 1)["checksum"]


def test_known_and_unknown_user(registry: ServingRegistry, tmp_path: Path) -> None:
    publish(registry, tmp_path, 1, seed=0)
    with TestClient(create_app(poll=False), headers=AUTH) as client:
        known = client.get("/v1/recommendations/u2", params={"k": 3}).json()
        idx, scores = make_toy(seed=0).recommend(np.array([2]), [np.zeros(0, dtype=np.int64)], 3)
        assert known["user_id"] == "u2" and known["fallback"] is False
        assert [it["item_id"] for it in known["items"]] == [f"i{i}" for i in idx[0]]
        assert [it["score"] for it in known["items"]] == pytest.approx(scores[0].tolist(), rel=1e-6)
        assert known["model"] == {"name": "toy", "version": "1"}

        unknown = client.get("/v1/recommendations/nobody").json()
        assert unknown["fallback"] is True
        assert unknown["items"] == [{"item_id": "i3", "score": 9.0, "reason": "trending"}]

        default_k = client.get("/v1/recommendations/u0").json()
        assert len(default_k["items"]) == 8, "k defaults to 10, capped by the 8-item catalogue"


@pytest.mark.parametrize("k", ["0", "101", "-3"])
def test_k_out_of_range_is_422_naming_k(registry: ServingRegistry, tmp_path: Path, k: str) -> None:
    publish(registry, tmp_path, 1)
    with TestClient(create_app(poll=False), headers=AUTH) as client:
        resp = client.get("/v1/recommendations/u1", params={"k": k})
    assert resp.status_code == 422
    assert resp.json() == {"error": f"k: must be between 1 and 100 (got {k})"}


def test_non_integer_k_and_unknown_route_are_json_errors(registry: ServingRegistry, tmp_path: Path) -> None:
    with TestClient(create_app(poll=False), headers=AUTH) as client:
        resp = client.get("/v1/recommendations/u1", params={"k": "ten"})
        assert resp.status_code == 422
        assert resp.json()["error"].startswith("k: ") and "1..100" in resp.json()["error"]
        missing = client.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_max_k_follows_config(registry: ServingRegistry, tmp_path: Path) -> None:
    publish(registry, tmp_path, 1)
    cfg = fast_cfg().replace(serving={"max_k": 5})
    with TestClient(create_app(cfg=cfg, poll=False), headers=AUTH) as client:
        assert client.get("/v1/recommendations/u1", params={"k": 5}).status_code == 200
        assert "between 1 and 5" in client.get("/v1/recommendations/u1", params={"k": 6}).json()["error"]


def test_hot_swap_when_champion_changes(registry: ServingRegistry, tmp_path: Path) -> None:
    publish(registry, tmp_path, 1)
    with TestClient(create_app(cfg=fast_cfg()), headers=AUTH) as client:
        assert client.get("/health").json()["model"]["version"] == "1"
        publish(registry, tmp_path, 2)
        assert wait_for(lambda: client.get("/health").json()["model"]["version"] == "2")
        body = client.get("/v1/recommendations/u1", params={"k": 2}).json()
        assert body["model"] == {"name": "toy", "version": "2"}
        idx, _ = make_toy(seed=2).recommend(np.array([1]), [np.zeros(0, dtype=np.int64)], 2)
        assert [it["item_id"] for it in body["items"]] == [f"i{i}" for i in idx[0]]


def test_tampered_artifact_refused_and_old_model_keeps_serving(
    registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    publish(registry, tmp_path, 1)
    app = create_app(poll=False)
    with TestClient(app, headers=AUTH) as client:
        publish(registry, tmp_path, 2, champion=False)
        tamper(reg_root, 2, "ids.json")
        registry.set_champion("toy", 2)
        assert app.state.store.refresh() is False
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["model"]["version"] == "1"
        assert client.get("/v1/recommendations/u1").json()["model"]["version"] == "1"
        assert "ids.json" in app.state.store.describe()["last_error"]


def test_serves_a_real_popularity_model_with_its_fallback(registry: ServingRegistry, tmp_path: Path) -> None:

    import pandas as pd

    popularity = pytest.importorskip("models.popularity")
    from evaluation.data import TrainData

    rows = [
        ("a", "p1", "purchase"),
        ("a", "p2", "view"),
        ("b", "p1", "click"),
        ("b", "p3", "view"),
        ("c", "p1", "view"),
    ]
    events = pd.DataFrame(
        [
            {"user_id": u, "item_id": i, "event_type": t, "ts": f"2024-01-0{n + 1}T00:00:00Z"}
            for n, (u, i, t) in enumerate(rows)
        ]
    )
    items = pd.DataFrame(
        {
            "item_id": ["p1", "p2", "p3"],
            "category": ["shoes", "hats", "shoes"],
            "brand": ["x", "y", "x"],
            "price": [10.0, 20.0, 30.0],
            "available": [True, True, True],
        }
    )
    data = TrainData.from_events(events, items)
    model = popularity.PopularityRecommender(profile="quick").fit(data)
    art = model.export(tmp_path / "pop")
    write_serving_files(art, fallback=popularity.fallback_lists(data))
    registry.publish(art, "popularity", 1)
    registry.set_champion("popularity", 1)

    with TestClient(create_app(poll=False), headers=AUTH) as client:
        known = client.get("/v1/recommendations/a", params={"k": 3}).json()
        unknown = client.get("/v1/recommendations/zed", params={"k": 3}).json()
    assert known["model"] == {"name": "popularity", "version": "1"} and known["fallback"] is False
    assert known["items"][0]["item_id"] == "p1" and known["items"][0]["score"] == 1.0 and len(known["items"]) == 3
    assert unknown["fallback"] is True
    assert [it["item_id"] for it in unknown["items"]] == [
        e["item_id"] for e in popularity.fallback_lists(data)["overall"][:3]
    ]
