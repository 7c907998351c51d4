"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation import metrics

RANKED = np.array([[3, 1, 2], [0, 4, 5]])
TARGETS = [{1}, np.array([5, 0])]


def test_hit_rate() -> None:
    assert metrics.hit_rate_at_k(RANKED, TARGETS, 1) == pytest.approx(0.5)
    assert metrics.hit_rate_at_k(RANKED, TARGETS, 3) == pytest.approx(1.0)


def test_recall() -> None:
    assert metrics.recall_at_k(RANKED, TARGETS, 2) == pytest.approx(0.75)
    assert metrics.recall_at_k(RANKED, TARGETS, 3) == pytest.approx(1.0)


def test_ndcg() -> None:
    row0 = 1 / math.log2(3)
    row1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx((row0 + row1) / 2)
    assert metrics.ndcg_at_k(np.array([[7, 8]]), [[7]], 2) == pytest.approx(1.0)


def test_mrr() -> None:
    assert metrics.mrr_at_k(RANKED, TARGETS, 3) == pytest.approx(0.75)
    assert metrics.mrr_at_k(RANKED, TARGETS, 1) == pytest.approx(0.5)


def test_empty_targets_and_padding_count_zero() -> None:
    ranked = np.array([[-1, 2], [1, 2]])
    targets = [set(), [2]]
    assert metrics.hit_rate_at_k(ranked, targets, 2) == pytest.approx(0.5)
    assert metrics.ndcg_at_k(ranked, targets, 2) == pytest.approx(0.5 / math.log2(3))
    assert metrics.hit_matrix(np.array([[-1]]), [[0]]).sum() == 0


def test_ranking_metrics_matches_single_functions() -> None:
    out = metrics.ranking_metrics(RANKED, TARGETS, ks=(1, 3))
    assert out["hr@1"] == pytest.approx(metrics.hit_rate_at_k(RANKED, TARGETS, 1))
    assert out["ndcg@3"] == pytest.approx(metrics.ndcg_at_k(RANKED, TARGETS, 3))
    assert out["recall@3"] == pytest.approx(1.0)
    assert out["mrr@3"] == pytest.approx(0.75)


def test_coverage() -> None:
    assert metrics.catalogue_coverage(RANKED, 10) == pytest.approx(0.6)


def test_diversity_by_category() -> None:
    categories = np.array([1, 1, 2, 2, 0, 0])
    # row 0: cats (2, 1, 2) -> one matching pair of 3; row 1: (1, 0, 0) -> unknown never matches
    assert metrics.intra_list_diversity(RANKED, categories=categories) == pytest.approx((2 / 3 + 1) / 2)


def test_diversity_by_attribute_jaccard() -> None:
    attrs = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0]]))
    # Jaccard(0,1) = 1/3, the empty item is similar to nothing -> 1 - (1/3)/3
    value = metrics.intra_list_diversity(np.array([[0, 1, 2]]), categories=np.zeros(3, int), attributes=attrs)
    assert value == pytest.approx(1 - 1 / 9)
    assert math.isnan(metrics.intra_list_diversity(np.array([[0, 1]])))


def test_novelty() -> None:
    pop = np.array([4, 2, 1, 1, 0])
    assert metrics.novelty(np.array([[0, 4]]), pop) == pytest.approx(2.0)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="targets"):
        metrics.hit_rate_at_k(RANKED, [{1}], 3)
    with pytest.raises(ValueError, match="k must be"):
        metrics.ndcg_at_k(RANKED, TARGETS, 0)
