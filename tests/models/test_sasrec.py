"""SASRec with full cross-entropy: learns a planted next-item chain, reacts to the latest event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.evaluate import evaluate
from models.sasrec import SASRec, SASRecNet, length_bucketed_batches, pad_left
from tests.models.test_knn import PER_GROUP, assert_export_roundtrip, planted_data, popularity_hr

TINY = {"hidden": 32, "dropout": 0.1, "lr": 5e-3, "epochs": 40, "patience": 40, "batch_size": 32, "max_len": 10}


@pytest.fixture(scope="module")
def fitted() -> tuple[SASRec, list[dict[str, float]]]:
    torch.set_num_threads(1)
    curve: list[dict[str, float]] = []
    model = SASRec(profile="quick", max_minutes=5.0, **TINY)
    model.fit(planted_data(), callback=lambda epoch, m: curve.append({"epoch": epoch, **m}))
    return model, curve


def test_pad_left_keeps_the_latest_items() -> None:
    out = pad_left([np.array([5, 6, 7]), np.array([1])], 2)
    np.testing.assert_array_equal(out, [[7, 8], [0, 2]])


def test_bucketed_batches_cover_every_row_once() -> None:
    lengths = torch.tensor([1, 5, 3, 2, 8, 1, 4])
    batches = length_bucketed_batches(lengths, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(7))


def test_trimmed_padding_gives_the_same_output() -> None:
    net = SASRecNet(n_items=20, hidden=16, n_blocks=2, n_heads=2, max_len=8, dropout=0.0).eval()
    seq = torch.from_numpy(pad_left([np.array([3, 4, 5])], 8))
    with torch.no_grad():
        full, trimmed = net(seq)[:, -1], net(seq[:, -3:])[:, -1]
    torch.testing.assert_close(full, trimmed)


def test_learns_the_chain_and_beats_popularity(fitted: tuple[SASRec, list[dict[str, float]]]) -> None:
    model, curve = fitted
    data = planted_data()
    metrics = evaluate(model, data, ks=(1, 10))
    assert metrics["hr@1"] > 0.8, metrics
    assert metrics["hr@10"] > popularity_hr(data, 10) + 0.3
    assert curve[-1]["loss"] < curve[0]["loss"]
    assert {"loss", "val_ndcg@10"} <= set(curve[0])
    assert model.best_epoch >= 1


def test_user_vector_follows_the_latest_event(fitted: tuple[SASRec, list[dict[str, float]]]) -> None:
    model, _ = fitted
    group = 2
    base = group * PER_GROUP
    for last in (3, 6):
        hist = np.array([base + last - 2, base + last - 1, base + last])
        top, _ = model.recommend(np.array([-1]), [hist], k=1)
        assert top[0, 0] == base + (last + 1) % PER_GROUP
    assert np.all(model.user_vectors(np.array([-1]), [np.array([], dtype=np.int64)]) == 0)


def test_batched_user_vectors_equal_one_at_a_time(fitted: tuple[SASRec, list[dict[str, float]]]) -> None:
    """The serving micro-batcher encodes concurrent users together: padding a short history to the
    batch's longest must not change its vector."""
    model, _ = fitted
    rng = np.random.default_rng(0)
    n_items = len(model.item_ids)
    histories = [rng.integers(0, n_items, size=n) for n in (1, 14, 3, 0, 7, 2)]
    users = np.full(len(histories), -1)
    batched = model.user_vectors(users, histories)
    for row, hist in enumerate(histories):
        np.testing.assert_allclose(batched[row], model.user_vectors(users[:1], [hist])[0], rtol=1e-4, atol=1e-5)


def test_export_load_same_top_k(fitted: tuple[SASRec, list[dict[str, float]]], tmp_path: Path) -> None:
    model, _ = fitted
    assert_export_roundtrip(model, planted_data(), tmp_path)


def test_needs_sequences_of_two() -> None:
    data = planted_data()
    data.sequences = [s[:1] for s in data.sequences]
    with pytest.raises(ValueError, match="2\\+ train items"):
        SASRec(profile="quick").fit(data)
