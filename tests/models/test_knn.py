"""item-kNN / user-kNN on a planted dataset: users stay inside one item group and walk a chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation.data import ItemFeatures, TrainData
from evaluation.evaluate import evaluate
from models.base import Recommender, get_model_class
from models.knn import ItemKNN, UserKNN, history_matrix, keep_top_n
from serving.scorer import RankOptions, Scorer

N_GROUPS, PER_GROUP, N_USERS, SEQ_LEN = 4, 10, 120, 7


def planted_data(seed: int = 0) -> TrainData:
    """Users of group g (= user % 4) visit consecutive items of group g's 10-item ring, in order.

    Last item → test, second to last → valid. Items carry category = group + 1 and one attribute
    per group, so content, collaborative and sequential models can all find the pattern.
    """
    rng = np.random.default_rng(seed)
    n_items = N_GROUPS * PER_GROUP
    seqs, valid, test = [], {}, {}
    for u in range(N_USERS):
        g, start = u % N_GROUPS, int(rng.integers(PER_GROUP))
        items = np.array([g * PER_GROUP + (start + t) % PER_GROUP for t in range(SEQ_LEN)], dtype=np.int64)
        seqs.append(items[:-2])
        valid[u], test[u] = items[-2:-1], items[-1:]
    rows = np.repeat(np.arange(N_USERS), [len(s) for s in seqs])
    train = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(seqs))), shape=(N_USERS, n_items))
    group = np.arange(n_items) // PER_GROUP
    attrs = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), group)), shape=(n_items, N_GROUPS))
    features = ItemFeatures(
        category=group + 1,
        brand=np.zeros(n_items, dtype=np.int64),
        price_band=(np.arange(n_items) % 5 + 1).astype(np.int64),
        attributes=attrs,
        available=np.ones(n_items, dtype=bool),
        category_names=[f"c{g}" for g in range(N_GROUPS)],
    )
    return TrainData(
        user_ids=np.array([f"u{u}" for u in range(N_USERS)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        train=train,
        sequences=seqs,
        valid=valid,
        test=test,
        item_features=features,
    )


def popularity_hr(data: TrainData, k: int) -> float:
    return evaluate(get_model_class("popularity")(profile="quick").fit(data), data, ks=(k,))[f"hr@{k}"]


def assert_export_roundtrip(model: Recommender, data: TrainData, tmp_path: Path) -> Recommender:
    """Export → load gives the same class and the same top-10 for every test user."""
    loaded = Recommender.load(model.export(tmp_path / model.name))
    assert type(loaded) is type(model)
    users = np.array(sorted(data.test))
    hists = [np.concatenate([data.sequences[u], data.valid[u]]) for u in users]
    before, _ = model.recommend(users, hists, k=10)
    after, _ = loaded.recommend(users, hists, k=10)
    np.testing.assert_array_equal(before, after)
    return loaded


def test_keep_top_n_keeps_largest_per_row() -> None:
    mat = sp.csr_matrix(np.array([[0.1, 0.5, 0.3, 0.0], [0.0, 0.0, 0.2, 0.9]], dtype=np.float32))
    kept = keep_top_n(mat, 2).toarray()
    np.testing.assert_allclose(kept, [[0, 0.5, 0.3, 0], [0, 0, 0.2, 0.9]])


def test_history_matrix_weights_latest_item_most() -> None:
    h = history_matrix([np.array([3, 1, 2])], 5, recency_decay=0.5).toarray()[0]
    np.testing.assert_allclose(h, [0, 0.5, 1.0, 0.25, 0])


@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
def test_item_knn_finds_group_and_beats_popularity(similarity: str, tmp_path: Path) -> None:
    data = planted_data()
    model = ItemKNN(profile="quick", similarity=similarity).fit(data)
    metrics = evaluate(model, data, ks=(3,))
    assert metrics["hr@3"] > 0.9
    assert metrics["hr@3"] > popularity_hr(data, 3) + 0.5
    # neighbours stay in the item's own group
    sim = model.sim.tocoo()
    assert np.all(sim.row // PER_GROUP == sim.col // PER_GROUP)
    loaded = assert_export_roundtrip(model, data, tmp_path)
    assert loaded.params["similarity"] == similarity


def test_item_knn_neighbour_cap_bounds_memory() -> None:
    model = ItemKNN(profile="quick", neighbours=3).fit(planted_data())
    assert np.diff(model.sim.indptr).max() <= 3


def test_item_knn_dense_scorer_matches_sparse() -> None:
    data = planted_data()
    model = ItemKNN(profile="quick").fit(data)
    users = np.arange(5)
    hists = [data.sequences[u] for u in users]
    items = model.item_matrix()
    assert sp.issparse(items) and items.nnz == model.sim.nnz, "the served item side stays sparse"
    dense = model.user_vectors(users, hists) @ items.toarray().T
    np.testing.assert_allclose(model.score(users, hists), dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Recommender.score(model, users, hists), dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("klass", [ItemKNN, UserKNN])
def test_knn_serves_from_its_sparse_item_side(klass: type[Recommender]) -> None:
    """The serving scorer keeps the sparse item side (no n_items² dense copy) and ranks as the model does."""
    data = planted_data()
    model = klass(profile="quick").fit(data)
    scorer = Scorer(model)
    assert scorer._sparse and sp.issparse(scorer._items) and sp.issparse(scorer._normed)
    for u in range(6):
        user_id = str(model.user_ids[u])
        want, _ = model.recommend(np.array([u]), [np.zeros(0, dtype=np.int64)], k=5, exclude_seen=False)
        got = scorer.recommend(user_id, 5, options=RankOptions(exclude="none"))
        assert [it.item_id for it in got.items] == [str(model.item_ids[i]) for i in want[0]]


def test_user_knn_finds_group_and_roundtrips(tmp_path: Path) -> None:
    data = planted_data()
    model = UserKNN(profile="quick").fit(data)
    metrics = evaluate(model, data, ks=(5,))
    assert metrics["hr@5"] > 0.8
    assert metrics["hr@5"] > popularity_hr(data, 5) + 0.4
    # a known user is never its own neighbour
    nb = model.neighbours(np.array([0, 1]), [data.sequences[0], data.sequences[1]])
    assert nb[0, 0] == 0 and nb[1, 1] == 0
    assert_export_roundtrip(model, data, tmp_path)


def test_user_knn_dense_scorer_matches_sparse() -> None:
    data = planted_data()
    model = UserKNN(profile="quick").fit(data)
    users = np.array([2, -1])
    hists = [data.sequences[2], data.sequences[3]]
    dense = model.user_vectors(users, hists) @ model.item_matrix().toarray().T
    np.testing.assert_allclose(model.score(users, hists), dense, rtol=1e-5, atol=1e-6)


def test_unknown_similarity_is_rejected() -> None:
    with pytest.raises(ValueError, match="similarity must be one of"):
        ItemKNN(profile="quick", similarity="pearson").fit(planted_data())
