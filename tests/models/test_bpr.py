"""BPR-MF: learns a planted two-cluster pattern, loss goes down, export/load round trip, fold-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.config import load_config
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.base import UNKNOWN_USER, Recommender
from models.bpr import BPRRecommender, sample_negatives

T0 = pd.Timestamp("2024-01-01", tz="UTC")
PARAMS = {"dim": 16, "epochs": 60, "batch_size": 32, "lr": 0.02, "l2": 1e-2, "patience": 0}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The CI box has two shared cores: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted() -> TrainData:
    """Two user clusters, each interacting only with its own 8 items (6 of them per user, random order)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        cluster = u % 2
        for k, item in enumerate(rng.choice(8, size=6, replace=False)):
            rows.append((f"u{u:02d}", f"c{cluster}-i{item}", "view", T0 + pd.Timedelta(minutes=k)))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    return TrainData.from_events(events, None, protocol="leave-one-out", cfg=load_config())


def _cluster_of_items(data: TrainData) -> np.ndarray:
    return np.array([int(str(i)[1]) for i in data.item_ids])


def test_learns_planted_pattern_and_loss_goes_down() -> None:
    data = planted()
    losses: list[float] = []
    model = BPRRecommender(profile="quick", **PARAMS).fit(data, callback=lambda e, m: losses.append(m["loss"]))
    assert len(losses) == PARAMS["epochs"]
    assert losses[-1] < 0.5 * losses[0]
    users = np.arange(data.n_users)
    idx, _ = model.recommend(users, [data.sequences[u] for u in users], k=2)
    item_cluster = _cluster_of_items(data)
    user_cluster = np.array([int(str(u)[1:]) % 2 for u in data.user_ids])
    in_cluster = (item_cluster[idx] == user_cluster[:, None]).mean()
    assert in_cluster > 0.95
    for u in users:
        assert not set(idx[u]) & set(data.sequences[u].tolist())
    metrics = evaluate(model, data)
    assert metrics["hr@10"] > 0.9  # only 4 unseen in-cluster items, all ranked on top


def test_early_stopping_reports_val_ndcg_and_keeps_best() -> None:
    data = planted()
    seen: list[dict[str, float]] = []
    params = {**PARAMS, "patience": 2, "epochs": 40}
    model = BPRRecommender(profile="quick", **params).fit(data, callback=lambda e, m: seen.append(m))
    assert all("val_ndcg@10" in m for m in seen)
    best = max(m["val_ndcg@10"] for m in seen)
    assert evaluate(model, data, split="valid", ks=(10,))["ndcg@10"] == pytest.approx(best)
    assert model.best_epoch == int(np.argmax([m["val_ndcg@10"] for m in seen]))


def test_export_load_gives_identical_top_k(tmp_path: Path) -> None:
    data = planted()
    model = BPRRecommender(profile="quick", **PARAMS).fit(data)
    loaded = Recommender.load(model.export(tmp_path / "bpr"))
    users = np.arange(data.n_users)
    hists = [data.sequences[u] for u in users]
    a, sa = model.recommend(users, hists, k=5)
    b, sb = loaded.recommend(users, hists, k=5)
    assert np.array_equal(a, b) and np.allclose(sa, sb)


def test_seeded_runs_are_identical() -> None:
    data = planted()
    a = BPRRecommender(profile="quick", **{**PARAMS, "epochs": 3}).fit(data)
    b = BPRRecommender(profile="quick", **{**PARAMS, "epochs": 3}).fit(data)
    assert np.array_equal(a.item_matrix(), b.item_matrix())


def test_unknown_user_is_folded_in_from_history() -> None:
    data = planted()
    model = BPRRecommender(profile="quick", **PARAMS).fit(data)
    item_cluster = _cluster_of_items(data)
    history = np.flatnonzero(item_cluster == 1)[:3]
    idx, _ = model.recommend(np.array([UNKNOWN_USER, UNKNOWN_USER]), [history, np.array([], dtype=np.int64)], k=3)
    assert (item_cluster[idx[0]] == 1).all()
    assert len(set(idx[1])) == 3  # no history: ranked by the learned item bias


def test_negatives_avoid_positives() -> None:
    rng = np.random.default_rng(1)
    users = np.zeros(1000, dtype=np.int64)
    positives = np.array([0, 1, 2])  # user 0 has items 0..2 of 4
    neg = sample_negatives(users, positives, 4, rng)
    assert set(neg.tolist()) == {3}
