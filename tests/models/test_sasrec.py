"""SASRec: learns a planted next-item chain (full and sampled softmax, every block layout, with item
content, as an ensemble), reacts to the latest event, and round-trips through export/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from evaluation.evaluate import evaluate
from models.base import Recommender
from models.sasrec import SASRec, SASRecNet, content_matrix, length_bucketed_batches, pad_left
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


@pytest.mark.parametrize("block", ["torch", "prenorm", "ligr"])
def test_trimmed_padding_gives_the_same_output(block: str) -> None:
    net = SASRecNet(n_items=20, hidden=16, n_blocks=2, n_heads=2, max_len=8, dropout=0.0, block=block).eval()
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


@pytest.mark.parametrize("block", ["torch", "prenorm", "ligr"])
def test_positions_never_see_later_items(block: str) -> None:
    content = sp.csr_matrix(np.eye(21, 3, dtype=np.float32)[1:])
    net = SASRecNet(20, 16, 2, 2, 8, 0.0, block=block, ff_mult=2, content=content).eval()
    seq = torch.from_numpy(pad_left([np.array([3, 4, 5, 6])], 8))
    changed = seq.clone()
    changed[0, -1] = 12
    with torch.no_grad():
        before, after = net(seq), net(changed)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])
    assert before.shape == (1, 8, 16)


def test_content_matrix_averages_every_known_code() -> None:
    data = planted_data()
    matrix = content_matrix(data.item_features, data.n_items)
    assert matrix is not None
    # category (4 codes) + price band (5) + attributes (4); brand is unknown everywhere: no column
    assert matrix.shape == (data.n_items, 4 + 5 + 4)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    np.testing.assert_allclose(matrix[0].toarray().ravel()[[0, 4, 9]], 1 / 3)
    assert content_matrix(None, 5) is None


def test_item_content_tied_on_both_sides() -> None:
    content = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32))
    net = SASRecNet(3, 8, 1, 1, 4, 0.0, block="prenorm", content=content)
    table = net.item_table()
    assert table.shape == (4, 8)
    torch.testing.assert_close(table[0], torch.zeros(8))
    torch.testing.assert_close(table[3] - net.item_emb.weight[3], (net.content_emb[0] + net.content_emb[1]) / 2)
    torch.testing.assert_close(net.output_items(), table[1:])


VARIANT = {
    **TINY,
    "block": "ligr",
    "ff_mult": 2,
    "content": True,
    "loss": "sampled",
    "n_negatives": 16,
    "n_models": 2,
    "valid_epochs": 1,
}


@pytest.fixture(scope="module")
def variant() -> SASRec:
    torch.set_num_threads(1)
    return SASRec(profile="quick", max_minutes=5.0, **VARIANT).fit(planted_data())


def test_sampled_ligr_content_ensemble_learns_the_chain(variant: SASRec) -> None:
    data = planted_data()
    metrics = evaluate(variant, data, ks=(1, 10))
    assert metrics["hr@1"] > 0.8, metrics
    assert metrics["hr@10"] > popularity_hr(data, 10) + 0.3
    assert len(variant.nets) == 2 and len(variant.best_epochs) == 2
    assert variant.user_vectors(np.array([0]), [data.sequences[0]]).shape == (1, 2 * TINY["hidden"])
    assert variant.item_matrix().shape == (data.n_items, 2 * TINY["hidden"])
    members = [h["member"] for h in variant.history]
    assert members == sorted(members) and set(members) == {0.0, 1.0}
    assert sum("loss_with_valid" in h for h in variant.history) == 2


def test_ensemble_with_content_round_trips_to_identical_scores(variant: SASRec, tmp_path: Path) -> None:
    data = planted_data()
    loaded = assert_export_roundtrip(variant, data, tmp_path)
    users = np.array(sorted(data.test))
    hists = [np.concatenate([data.sequences[u], data.valid[u]]) for u in users]
    np.testing.assert_array_equal(variant.score(users, hists), loaded.score(users, hists))


def test_artifact_without_the_newer_params_loads_the_original_layout(
    fitted: tuple[SASRec, list[dict[str, float]]], tmp_path: Path
) -> None:
    """Artifacts written before block/ff_mult/content/n_models existed keep loading and scoring the same."""
    model, _ = fitted
    model.params.update(block="torch", ff_mult=1, n_models=1)
    out = model.export(tmp_path / "old")
    meta = json.loads((out / "model.json").read_text())
    for key in ("block", "ff_mult", "content", "loss", "n_negatives", "label_smoothing", "n_models", "valid_epochs"):
        meta["params"].pop(key)
    (out / "model.json").write_text(json.dumps(meta))
    loaded = Recommender.load(out)
    data = planted_data()
    users = np.array(sorted(data.test))
    hists = [data.sequences[u] for u in users]
    np.testing.assert_array_equal(model.score(users, hists), loaded.score(users, hists))


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        SASRec(profile="quick", loss="bpr").fit(planted_data())
