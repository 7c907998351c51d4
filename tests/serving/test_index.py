"""serving.index: exact top-K against a brute-force reference, bias, exclusions, faiss recall, auto choice."""

from __future__ import annotations

import numpy as np
import pytest

from bench.serving_load import clustered
from serving.index import ExactIndex, FaissIndex, augment_items, build_index


def _brute(items: np.ndarray, bias: np.ndarray | None, q: np.ndarray, k: int, excl: list[set[int]]) -> list[list[int]]:
    out = []
    for row, u in enumerate(q):
        s = [(float(np.dot(u.astype(np.float64), items[i])) + (float(bias[i]) if bias is not None else 0.0), i)
             for i in range(len(items)) if i not in excl[row]]  # fmt: skip
        out.append([i for _, i in sorted(s, key=lambda t: (-t[0], t[1]))[:k]])
    return out


def test_exact_matches_brute_force_with_bias_and_exclusions() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    bias = rng.normal(size=300).astype(np.float32) * 3
    q = rng.normal(size=(5, 8)).astype(np.float32)
    excl = [rng.choice(300, size=n, replace=False) for n in (0, 1, 5, 20, 50)]
    index = ExactIndex(items, bias, batch_size=2)
    idx, scores = index.search(q, 10, exclude=excl)
    assert idx.shape == (5, 10) and idx.dtype == np.int64 and scores.dtype == np.float32
    assert idx.tolist() == _brute(items, bias, q, 10, [set(e.tolist()) for e in excl])
    expected = np.take_along_axis(q @ items.T + bias[None, :], idx, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_bias_changes_the_ranking() -> None:
    items = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    q = np.array([[1.0]], dtype=np.float32)
    assert ExactIndex(items).search(q, 3)[0].tolist() == [[2, 1, 0]]
    idx, scores = ExactIndex(items, np.array([10.0, 0.0, 0.0])).search(q, 3)
    assert idx.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(scores, [[11.0, 3.0, 2.0]])


def test_exact_k_clamped_and_exclusion_fills_with_minus_inf() -> None:
    items = np.eye(3, dtype=np.float32)
    idx, scores = ExactIndex(items).search(np.ones((1, 3), np.float32), 5, exclude=[np.array([0, 1])])
    assert idx.shape == (1, 3) and idx[0, 0] == 2
    assert np.isfinite(scores[0, 0]) and np.all(np.isneginf(scores[0, 1:]))


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match="item_bias"):
        augment_items(np.zeros((3, 2)), np.zeros(4))
    index = ExactIndex(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="queries"):
        index.search(np.zeros((1, 5), np.float32), 2)
    with pytest.raises(ValueError, match="exclude"):
        index.search(np.zeros((2, 2), np.float32), 2, exclude=[np.array([0])])
    with pytest.raises(ValueError, match="kind"):
        build_index(np.zeros((3, 2)), kind="annoy")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_faiss_recall_at_10_on_clustered_catalogue(method: str) -> None:
    n = 50_000 if method == "ivf" else 20_000
    items, bias = clustered(n, 32, 128, seed=1)
    queries = clustered(200, 32, 128, seed=1)[0] + 0.3 * np.random.default_rng(2).normal(size=(200, 32))
    ann = FaissIndex(items, bias, method=method, threads=2)
    truth, _ = ExactIndex(items, bias).search(queries, 10)
    got, scores = ann.search(queries, 10)
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(got.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.95, f"{method} recall@10 = {recall:.3f}"
    exact_scores = np.take_along_axis(queries.astype(np.float32) @ items.T + bias, got, axis=1)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-4, atol=1e-4)


def test_faiss_honours_exclude_and_still_returns_k() -> None:
    items, bias = clustered(3_000, 16, 16, seed=3)
    q = items[:4] * 2
    exact = ExactIndex(items, bias)
    top, _ = exact.search(q, 30)
    excl = [top[0, :20], np.array([], dtype=np.int64), top[2, :5], np.arange(0, 3_000, 2)]
    ann = FaissIndex(items, bias, nprobe=8, threads=1)
    idx, scores = ann.search(q, 10, exclude=excl)
    assert idx.shape == (4, 10)
    for row, e in enumerate(excl):
        assert not set(idx[row].tolist()) & set(e.tolist())
        assert len(set(idx[row].tolist())) == 10 and np.all(np.isfinite(scores[row]))
    want, _ = exact.search(q, 10, exclude=excl)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx.tolist(), want.tolist(), strict=True)]) >= 0.9


def test_faiss_short_rows_fall_back_to_exact_and_are_counted() -> None:
    items, bias = clustered(2_000, 8, 50, seed=4)
    ann = FaissIndex(items, bias, nlist=50, nprobe=1, threads=1)
    excl = [np.arange(1_990)]
    idx, _ = ann.search(items[:1], 10, exclude=excl)
    assert sorted(idx[0].tolist()) == list(range(1_990, 2_000))
    assert ann.exact_fallbacks == 1 and ann.describe()["exact_fallbacks"] == 1


def test_auto_picks_exact_below_threshold_and_faiss_above() -> None:
    items, bias = clustered(1_000, 8, 10, seed=5)
    small = build_index(items, bias, kind="auto", exact_max_items=1_000)
    large = build_index(items, bias, kind="auto", exact_max_items=999, nprobe=4, threads=1, batch_size=8)
    assert (small.kind, small.n_items) == ("exact", 1_000)
    assert isinstance(large, FaissIndex) and (large.kind, large.n_items, large.nprobe) == ("faiss", 1_000, 4)
    assert build_index(items, kind="exact", exact_max_items=10).kind == "exact"
