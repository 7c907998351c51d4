"""Two-tower hybrid: learns the planted groups, scores a new item from its attributes alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from evaluation.data import ItemFeatures
from evaluation.evaluate import evaluate
from models.two_tower import TwoTower
from tests.models.test_knn import N_GROUPS, PER_GROUP, assert_export_roundtrip, planted_data, popularity_hr

TINY = {"dim": 32, "epochs": 30, "patience": 30, "batch_size": 32, "n_negatives": 16, "samples_per_user": 4, "lr": 1e-2}


@pytest.fixture(scope="module")
def fitted() -> TwoTower:
    torch.set_num_threads(1)
    return TwoTower(profile="quick", max_minutes=5.0, **TINY).fit(planted_data())


def test_learns_the_groups_and_beats_popularity(fitted: TwoTower) -> None:
    data = planted_data()
    metrics = evaluate(fitted, data, ks=(5,))
    assert metrics["hr@5"] > 0.6, metrics
    assert metrics["hr@5"] > popularity_hr(data, 5) + 0.3
    losses = [h["loss"] for h in fitted.history]
    assert losses[-1] < losses[0]


def group_user_histories(data_group: int) -> list[np.ndarray]:
    base = data_group * PER_GROUP
    return [np.array([base + 1, base + 2, base + 3])]


def test_new_item_with_attributes_gets_a_sensible_score(fitted: TwoTower) -> None:
    """An unseen item of group g (category g+1, attribute g) scores higher for a group-g user than
    for users of the other groups, and its score is finite."""
    new = ItemFeatures(
        category=np.arange(N_GROUPS) + 1,
        brand=np.zeros(N_GROUPS, dtype=np.int64),
        price_band=np.ones(N_GROUPS, dtype=np.int64),
        attributes=sp.csr_matrix(
            (np.ones(N_GROUPS), (np.arange(N_GROUPS), np.arange(N_GROUPS))), shape=(N_GROUPS, N_GROUPS)
        ),
        available=np.ones(N_GROUPS, dtype=bool),
    )
    item_vecs = fitted.encode_items(new)
    users = np.vstack([fitted.user_vectors(np.array([-1]), group_user_histories(g)) for g in range(N_GROUPS)])
    scores = users @ item_vecs.T  # (user group, new item group)
    assert np.isfinite(scores).all()
    assert np.array_equal(scores.argmax(axis=1), np.arange(N_GROUPS)), scores


def test_cold_catalogue_item_scores_by_content() -> None:
    """An item in the catalogue with no interactions at all is ranked by its content."""
    data = planted_data()
    cold = 7  # item 7 of group 0: drop it from every train sequence
    data.sequences = [s[s != cold] for s in data.sequences]
    data.train = data.train.tolil()
    data.train[:, cold] = 0
    data.train = sp.csr_matrix(data.train)
    data.train.eliminate_zeros()
    model = TwoTower(profile="quick", max_minutes=5.0, **TINY).fit(data)
    scores = model.score(np.array([-1] * N_GROUPS), [group_user_histories(g)[0] for g in range(N_GROUPS)])
    assert np.isfinite(scores[:, cold]).all()
    assert scores[:, cold].argmax() == 0
    # the cold item's vector is its content alone (no trained ID part)
    content_only = model.encode_items(_features_of(data, [cold]))
    np.testing.assert_allclose(model.item_matrix()[cold], content_only[0], rtol=1e-5, atol=1e-5)


def _features_of(data, rows: list[int]) -> ItemFeatures:
    f = data.item_features
    return ItemFeatures(f.category[rows], f.brand[rows], f.price_band[rows], f.attributes[rows], f.available[rows])


def test_export_load_same_top_k(fitted: TwoTower, tmp_path: Path) -> None:
    loaded = assert_export_roundtrip(fitted, planted_data(), tmp_path)
    np.testing.assert_allclose(loaded.item_matrix(), fitted.item_matrix(), rtol=1e-5, atol=1e-6)


def test_encode_items_rejects_unknown_codes(fitted: TwoTower) -> None:
    bad = ItemFeatures(
        category=np.array([99]),
        brand=np.array([0]),
        price_band=np.array([0]),
        attributes=sp.csr_matrix((1, N_GROUPS), dtype=np.float32),
        available=np.ones(1, dtype=bool),
    )
    with pytest.raises(ValueError, match="category code 99"):
        fitted.encode_items(bad)
