"""Model store (fetch, verify, load, hot swap, refusal) on a real local registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from core.registry import ServingRegistry
from serving.store import ModelStore
from tests.core.test_registry import export_toy, make_toy
from tests.services import S3Server, s3_env, s3_server  # noqa: F401


def publish(reg: ServingRegistry, tmp_path: Path, version: int, seed: int | None = None, champion: bool = True) -> None:
    reg.publish(export_toy(tmp_path / f"art-{version}", seed=version if seed is None else seed), "toy", version)
    if champion:
        reg.set_champion("toy", version)


def tamper(reg_root: Path, version: int, name: str = "arrays.npz") -> None:
    path = reg_root / "toy" / str(version) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def reg_root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def store(reg_root: Path, tmp_path: Path) -> ModelStore:
    return ModelStore(ServingRegistry(str(reg_root)), tmp_path / "cache", poll_seconds=0.05)


def test_no_champion_means_no_model(store: ModelStore) -> None:
    assert store.refresh() is False
    assert store.current is None
    assert store.describe()["model"] is None


def test_load_then_hot_swap_and_prune_cache(store: ModelStore, tmp_path: Path) -> None:
    publish(store.registry, tmp_path, 1)
    assert store.refresh() is True
    first = store.current
    assert first is not None and first.version == "1" and first.name == "toy"
    assert store.refresh() is False, "same pointer must not reload"

    publish(store.registry, tmp_path, 2)
    assert store.refresh() is True
    assert store.current.version == "2"
    assert first.version == "1", "a request holding the old model keeps it"
    cached = sorted(p.name for p in (tmp_path / "cache" / "toy").iterdir())
    assert cached == [store.current.path.name]
    assert store.status.swaps == 2


def test_tampered_artifact_refused_old_model_keeps_serving(
    store: ModelStore, tmp_path: Path, reg_root: Path, caplog
) -> None:
    publish(store.registry, tmp_path, 1)
    store.refresh()
    publish(store.registry, tmp_path, 2, champion=False)
    tamper(reg_root, 2)
    store.registry.set_champion("toy", 2)

    assert store.refresh() is False
    assert store.current.version == "1"
    assert store.status.refused == 1
    assert "arrays.npz" in store.status.last_error and "toy/2" in store.status.last_error
    assert any("arrays.npz" in r.getMessage() for r in caplog.records)
    assert store.refresh() is False and store.status.refused == 1, "a refused pointer is not re-downloaded"
    assert not any(p.name.startswith("2-") for p in (tmp_path / "cache" / "toy").iterdir())

    publish(store.registry, tmp_path, 3)
    assert store.refresh() is True and store.current.version == "3"


def test_unloadable_artifact_refused(store: ModelStore, tmp_path: Path) -> None:
    publish(store.registry, tmp_path, 1)
    store.refresh()
    art = export_toy(tmp_path / "bad")
    meta = json.loads((art / "model.json").read_text())
    meta["name"] = "no-such-model"
    (art / "model.json").write_text(json.dumps(meta))
    store.registry.publish(art, "toy", 9)
    store.registry.set_champion("toy", 9)
    assert store.refresh() is False
    assert store.current.version == "1"
    assert "unknown model 'no-such-model'" in store.status.last_error


def test_background_poll_swaps(store: ModelStore, tmp_path: Path) -> None:
    publish(store.registry, tmp_path, 1)
    store.start()
    try:
        deadline = time.monotonic() + 20
        while (store.current is None or store.current.version != "1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.current is not None and store.current.version == "1"
        publish(store.registry, tmp_path, 2)
        while store.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.current.version == "2"
    finally:
        store.stop()
    assert store._thread is None


def test_model_that_loads_but_cannot_score_is_refused(store: ModelStore, tmp_path: Path) -> None:
    publish(store.registry, tmp_path, 1)
    store.refresh()
    broken = make_toy()
    broken.items = np.ones((8, 4), dtype=np.float32)  # item dim 4 vs user dim 3: load works, scoring cannot
    art = broken.export(tmp_path / "broken")
    store.registry.publish(art, "toy", 5)
    store.registry.set_champion("toy", 5)
    assert store.refresh() is False
    assert store.current.version == "1"
    assert "toy/5" in store.status.last_error


@pytest.mark.services
def test_store_over_s3_registry_swaps_and_refuses(s3_env: S3Server, tmp_path: Path) -> None:  # noqa: F811
    uri = s3_env.fresh_prefix()
    store = ModelStore(ServingRegistry(uri), tmp_path / "cache", poll_seconds=0.05)
    publish(store.registry, tmp_path, 1)
    assert store.refresh() is True and store.current.version == "1"

    publish(store.registry, tmp_path, 2, champion=False)
    key = f"{uri.removeprefix(f's3://{s3_env.bucket}/')}/toy/2/arrays.npz"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=b"not the published bytes")
    store.registry.set_champion("toy", 2)
    assert store.refresh() is False and store.current.version == "1"
    assert "arrays.npz" in store.status.last_error

    publish(store.registry, tmp_path, 3)
    assert store.refresh() is True and store.current.version == "3"
    assert store.current.scorer.recommend("u1", 2).items
