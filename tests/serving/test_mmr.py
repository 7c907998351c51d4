"""``serving.scorer.mmr``: greedy maximal marginal relevance over item categories (code 0 = unknown)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.scorer import mmr


def picks(scores: list[float], categories: list[int], k: int, diversity: float) -> list[int]:
    return mmr(np.asarray(scores, dtype=np.float64), np.asarray(categories, dtype=np.int32), k, diversity).tolist()


def test_diversity_zero_keeps_score_order() -> None:
    assert picks([0.1, 0.9, 0.5, 0.7], [1, 1, 2, 2], 4, 0.0) == [1, 3, 2, 0]
    assert picks([0.1, 0.9, 0.5, 0.7], [1, 1, 2, 2], 2, 0.0) == [1, 3]


def test_diversity_one_takes_each_category_before_any_repeat() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # best first, as the scorer's pool comes
    assert picks(scores, [1, 1, 2, 2, 3, 3], 3, 1.0) == [0, 2, 4]
    assert picks(scores, [1, 1, 1, 2, 2, 2], 2, 1.0) == [0, 3]


def test_partial_diversity_trades_score_against_repeats() -> None:
    scores, categories = [1.0, 0.9, 0.8, 0.7], [2, 2, 2, 1]
    assert picks(scores, categories, 4, 0.5) == [0, 3, 1, 2]  # the other category jumps two places
    assert picks(scores, categories, 4, 0.1) == [0, 1, 2, 3]  # a small weight does not outweigh the score gap


def test_unknown_category_never_counts_as_a_repeat() -> None:
    scores = [1.0, 0.9, 0.8, 0.7]
    assert picks(scores, [0, 0, 0, 1], 4, 0.5) == [0, 1, 2, 3]
    assert picks(scores, [2, 2, 2, 1], 4, 0.5) == [0, 3, 1, 2], "the same scores with a known category are penalised"


def test_k_larger_than_the_pool_returns_every_position_once() -> None:
    got = picks([0.3, 0.1, 0.2], [1, 2, 1], 10, 0.5)
    assert sorted(got) == [0, 1, 2] and got[0] == 0
    assert picks([], [], 5, 0.5) == []
    assert picks([0.3, 0.1], [1, 2], 0, 0.5) == []


@pytest.mark.parametrize("diversity", [0.0, 0.5])
def test_ties_keep_the_input_order(diversity: float) -> None:
    assert picks([0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0], 4, diversity) == [0, 1, 2, 3]
    assert picks([0.5, 0.5, 0.5], [1, 2, 1], 3, diversity) == [0, 1, 2]


def test_result_is_int_positions_into_scores() -> None:
    out = mmr(np.array([0.2, 0.8]), np.array([1, 2]), 2, 0.3)
    assert out.dtype == np.int64 and out.tolist() == [1, 0]
