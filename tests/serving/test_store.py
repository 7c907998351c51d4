"""Model store (fetch, verify, load, hot swap, refusal) and scorer, on a real local registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from core.registry import ServingRegistry
from models.base import Recommender
from serving.scorer import RankOptions, RecRequest, Scorer
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


def test_scorer_known_user_matches_model(tmp_path: Path) -> None:
    model = make_toy()
    scorer = Scorer.from_artifact(model, export_toy(tmp_path / "art"))
    ranking = scorer.recommend("u2", 3)
    idx, scores = model.recommend(np.array([2]), [np.zeros(0, dtype=np.int64)], 3)
    assert [it.item_id for it in ranking.items] == [f"i{i}" for i in idx[0]]
    assert [it.score for it in ranking.items] == pytest.approx(scores[0].tolist())
    assert ranking.fallback is False


def test_scorer_unknown_user_gets_fallback(tmp_path: Path) -> None:
    scorer = Scorer.from_artifact(make_toy(), export_toy(tmp_path / "art"))
    ranking = scorer.recommend("stranger", 5)
    assert ranking.fallback is True
    assert [(it.item_id, it.score) for it in ranking.items] == [("i3", 9.0)]
    with_history = scorer.recommend("stranger", 5, recent_items=["i3"])
    assert with_history.fallback is False, "a live history is scored by the model's encoder"
    assert len(with_history.items) == 5 and "i3" not in {it.item_id for it in with_history.items}
    assert scorer.recommend("stranger", 5, recent_items=["i3"], options=RankOptions(exclude="none")).items


def test_scorer_without_fallback_file_scores_unknown_user_with_model(tmp_path: Path) -> None:
    scorer = Scorer(make_toy())
    ranking = scorer.recommend("stranger", 4)
    assert ranking.fallback is True and len(ranking.items) == 4


def test_scorer_history_file_excludes_train_items(tmp_path: Path) -> None:
    model = make_toy()
    art = export_toy(tmp_path / "art")
    best = model.recommend(np.array([0]), [np.zeros(0, dtype=np.int64)], 2)[0][0]
    indptr = np.array([0, 2, 2, 2, 2, 2])
    np.savez(art / "history.npz", indptr=indptr, indices=best)
    scorer = Scorer.from_artifact(model, art)
    got = [it.item_id for it in scorer.recommend("u0", 8).items]
    assert len(got) == 6 and not {f"i{i}" for i in best} & set(got)
    assert len(scorer.recommend("u1", 8).items) == 8


def test_batched_rankings_equal_one_request_at_a_time(bpr_artifact: Path) -> None:
    """``recommend_many`` (what the micro-batcher calls) shares the encoder and index search across a
    mixed batch; each answer must be the one that request gets alone."""
    scorer = Scorer.from_artifact(Recommender.load(bpr_artifact), bpr_artifact)
    requests = [
        RecRequest("ua0", 5),
        RecRequest("ub1", 8, recent_items=("a1", "a2"), purchased=frozenset({"a3"})),
        RecRequest(None, 4, recent_items=("b2", "b3")),
        RecRequest("stranger", 6),  # popularity fallback
        RecRequest("ua2", 5, options=RankOptions(category="beta")),  # filtered: masked scan
        RecRequest("ub3", 4, options=RankOptions(diversity=0.7, diversity_pool=5)),  # larger pool, MMR
        RecRequest("ua4", 24, options=RankOptions(exclude="none")),
        RecRequest("ua0", 5, recent_items=("zz-unknown",)),
    ]
    batched = scorer.recommend_many(requests)
    assert len(batched) == len(requests)
    for req, got in zip(requests, batched, strict=True):
        alone = scorer.recommend(req.user_id, req.k, req.recent_items, req.purchased, req.options)
        assert [it.item_id for it in got.items] == [it.item_id for it in alone.items], req
        assert [it.score for it in got.items] == pytest.approx([it.score for it in alone.items], rel=1e-5, abs=1e-6)
        assert [it.reason for it in got.items] == [it.reason for it in alone.items]
        assert (got.fallback, got.unknown_recent) == (alone.fallback, alone.unknown_recent)
    assert batched[3].fallback and not batched[0].fallback and batched[7].unknown_recent == 1
    assert {it.item_id[0] for it in batched[4].items} == {"b"}
    assert len(batched[6].items) == 23  # every available item: nothing excluded
    assert scorer.recommend_many([]) == []


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
