"""The scorer: exclusions, filters, availability, fallback, reasons, and batches equal to single requests.

Most tests use a hand-made model whose scores can be read off its vectors (``ITEMS``), dense (exact
index search) and sparse (no index: the masked scan); the others a toy artifact and a trained BPR model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from core.artifacts import FallbackLists, ItemRecord, RankedItem
from models.base import UNKNOWN_USER, Recommender
from serving.scorer import ItemCatalog, RankOptions, RecRequest, Scorer
from tests.core.test_registry import export_toy, make_toy

#: item -> (vector, category, price, available). Known users: u_alpha = (1, 0), u_beta = (0, 1).
ITEMS: dict[str, tuple[tuple[float, float], str | None, float | None, bool]] = {
    "a0": ((1.0, 0.0), "alpha", 10.0, True),
    "a1": ((0.9, 0.1), "alpha", 20.0, True),
    "a2": ((0.8, 0.2), "alpha", 30.0, True),
    "b0": ((0.0, 1.0), "beta", 10.0, True),
    "b1": ((0.1, 0.9), "beta", 20.0, True),
    "n0": ((0.5, 0.5), None, None, True),
    "gone": ((2.0, 0.0), "alpha", 5.0, False),  # the best item for u_alpha and for popularity, but unavailable
}
EVERY_AVAILABLE = 6
#: u_alpha's train history is a0; u_beta has none.
HISTORIES = (np.array([0, 1, 1]), np.array([0]))
FALLBACK = FallbackLists(
    overall=[RankedItem(i, s) for i, s in (("gone", 100.0), ("b0", 50.0), ("a1", 40.0), ("n0", 30.0), ("a0", 20.0))],
    by_category={"beta": [RankedItem("b1", 10.0)]},
)


class Handmade(Recommender):
    """Fixed 2-d vectors: a known user's own, an unknown user's the mean of its history's items."""

    name = "handmade-scorer-test"

    def __init__(self, sparse: bool = False) -> None:
        super().__init__(profile="quick")
        self.user_ids = np.asarray(["u_alpha", "u_beta"], dtype=object)
        self.item_ids = np.asarray(list(ITEMS), dtype=object)
        self.users = np.asarray([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        self.items = np.asarray([vector for vector, *_ in ITEMS.values()], dtype=np.float32)
        self.sparse = sparse

    def _fit(self, data, callback) -> None:
        raise NotImplementedError("built by hand")

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), 2), dtype=np.float32)
        for row, (user, history) in enumerate(zip(users, histories, strict=True)):
            if user != UNKNOWN_USER:
                out[row] = self.users[user]
            elif len(history):
                out[row] = self.items[np.asarray(history, dtype=np.int64)].mean(axis=0)
        return out

    def item_matrix(self) -> np.ndarray | sp.csr_matrix:
        return sp.csr_matrix(self.items) if self.sparse else self.items

    def _state(self) -> dict[str, np.ndarray]:
        return {"users": self.users, "items": self.items}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.users, self.items = state["users"], state["items"]


def handmade_scorer(sparse: bool = False, fallback: FallbackLists | None = FALLBACK) -> Scorer:
    model = Handmade(sparse)
    records = [
        ItemRecord(item, category, None, price, available) for item, (_, category, price, available) in ITEMS.items()
    ]
    catalog = ItemCatalog.from_records(records, {item: n for n, item in enumerate(ITEMS)})
    return Scorer(model, fallback, HISTORIES, catalog, index_kind="exact")


@pytest.fixture(params=["dense", "sparse"])
def scorer(request: pytest.FixtureRequest) -> Scorer:
    """Dense: unfiltered requests go through the exact index. Sparse: no index, every request is a masked scan."""
    built = handmade_scorer(sparse=request.param == "sparse")
    assert (built.index is None) == (request.param == "sparse")
    return built


def ids(ranking) -> list[str]:
    return [item.item_id for item in ranking.items]


@pytest.mark.parametrize(
    ("exclude", "expected"),
    [
        ("seen", ["a2", "b1", "b0"]),  # train a0, live a1 and purchased n0 all removed
        ("purchased", ["a0", "a1", "a2", "b1", "b0"]),
        ("none", ["a0", "a1", "a2", "n0", "b1", "b0"]),
    ],
)
def test_exclusion_policies(scorer: Scorer, exclude: str, expected: list[str]) -> None:
    ranking = scorer.recommend("u_alpha", 10, recent_items=["a1"], purchased={"n0"}, options=RankOptions(exclude))
    assert ids(ranking) == expected
    assert ranking.fallback is False


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (RankOptions("none", category="alpha"), ["a0", "a1", "a2"]),
        (RankOptions("none", category="beta"), ["b1", "b0"]),
        (RankOptions("none", category="no-such-category"), []),
        (RankOptions("none", min_price=15.0), ["a1", "a2", "b1"]),  # unknown price (n0) never passes a bound
        (RankOptions("none", max_price=10.0), ["a0", "b0"]),  # bounds are inclusive
        (RankOptions("none", category="beta", min_price=10.0, max_price=15.0), ["b0"]),
    ],
)
def test_category_and_price_filters(scorer: Scorer, options: RankOptions, expected: list[str]) -> None:
    assert ids(scorer.recommend("u_alpha", 10, options=options)) == expected


def test_unavailable_items_are_never_returned(scorer: Scorer) -> None:
    everything = RankOptions("none")
    answers = {
        "model": scorer.recommend("u_alpha", 10, options=everything),
        "fallback": scorer.recommend("stranger", 10, options=everything),
        "session viewing it": scorer.recommend(None, 10, recent_items=["gone"], options=everything),
        "category filter": scorer.recommend("u_alpha", 10, options=RankOptions("none", category="alpha")),
        "price filter": scorer.recommend("u_alpha", 10, options=RankOptions("none", max_price=5.0)),
    }
    for what, ranking in answers.items():
        assert "gone" not in ids(ranking), what
    assert len(answers["model"].items) == EVERY_AVAILABLE
    assert answers["session viewing it"].fallback is False, "an unavailable item still counts as history"
    similar = scorer.similar("a0", 10)
    assert similar is not None and "gone" not in [item.item_id for item in similar]


def test_unknown_user_gets_the_popularity_fallback(scorer: Scorer) -> None:
    ranking = scorer.recommend("stranger", 3)
    assert ranking.fallback is True
    assert [(item.item_id, item.score) for item in ranking.items] == [("b0", 50.0), ("a1", 40.0), ("n0", 30.0)]
    assert scorer.recommend(None, 3).items == ranking.items, "an empty session is a stranger too"
    per_category = scorer.recommend("stranger", 10, options=RankOptions(category="beta"))
    assert [(item.item_id, item.score) for item in per_category.items] == [("b0", 50.0), ("b1", 10.0)]

    viewed = scorer.recommend("stranger", 3, recent_items=["b0"])
    assert viewed.fallback is False, "a live history is scored by the model's encoder"
    assert ids(viewed) == ["b1", "n0", "a2"]  # the mean of b0's vector, b0 itself excluded as seen


def test_unknown_recent_items_are_counted_and_ignored(scorer: Scorer) -> None:
    ranking = scorer.recommend("stranger", 3, recent_items=["zz", "b0", "yy"])
    assert ranking.unknown_recent == 2
    assert ids(ranking) == ids(scorer.recommend("stranger", 3, recent_items=["b0"]))
    assert scorer.recommend("stranger", 3, recent_items=["zz"]).fallback is True


def test_reasons(scorer: Scorer) -> None:
    alpha = scorer.recommend("u_alpha", 10, options=RankOptions("none"))
    assert [(item.item_id, item.reason) for item in alpha.items] == [
        ("a0", "because you viewed a0"),
        ("a1", "because you viewed a0"),
        ("a2", "because you viewed a0"),
        ("n0", "because you viewed a0"),
        ("b1", "because you viewed a0"),
        ("b0", "popular in beta"),  # orthogonal to everything viewed: its category instead
    ]
    both = scorer.recommend("u_alpha", 10, recent_items=["b0"], options=RankOptions("none"))
    reasons = {item.item_id: item.reason for item in both.items}
    assert reasons["b1"] == "because you viewed b0" and reasons["a1"] == "because you viewed a0", "the most similar"

    no_history = scorer.recommend("u_beta", 3)
    assert [(item.item_id, item.reason) for item in no_history.items] == [
        ("b0", "popular in beta"),
        ("b1", "popular in beta"),
        ("n0", "trending"),  # no category
    ]
    fallback = scorer.recommend("stranger", 3)
    assert [item.reason for item in fallback.items] == ["popular in beta", "popular in alpha", "trending"]


def test_diversity_mixes_categories(scorer: Scorer) -> None:
    plain = scorer.recommend("u_alpha", 3, options=RankOptions("none"))
    diverse = scorer.recommend("u_alpha", 3, options=RankOptions("none", diversity=1.0, diversity_pool=5))
    assert ids(plain) == ["a0", "a1", "a2"]
    assert ids(diverse) == ["a0", "n0", "b1"]  # one alpha, then the best of what is not alpha


def test_batch_equals_one_request_at_a_time(scorer: Scorer) -> None:
    requests = [
        RecRequest("u_alpha", 3),
        RecRequest("stranger", 4),  # fallback
        RecRequest(None, 2, recent_items=("b0",)),  # session: model
        RecRequest("u_beta", 5, options=RankOptions(category="alpha")),  # filtered: masked scan
        RecRequest("u_alpha", 2, options=RankOptions("none", diversity=0.8, diversity_pool=3)),  # larger pool
        RecRequest("u_beta", 6, purchased=frozenset({"b0"}), options=RankOptions("purchased")),
        RecRequest("u_alpha", 2, options=RankOptions("none", diversity=1.0, diversity_pool=1)),  # pool of 2: no MMR
    ]
    batched = scorer.recommend_many(requests)
    alone = [scorer.recommend_many([request])[0] for request in requests]
    assert batched == alone
    assert [ranking.fallback for ranking in batched] == [False, True, False, False, False, False, False]
    assert ids(batched[-1]) == ["a0", "a1"], "each request keeps its own pool when the batch searches a larger one"
    assert scorer.recommend_many([]) == []


def test_without_a_fallback_file_the_model_scores_strangers() -> None:
    scorer = handmade_scorer(fallback=None)
    ranking = scorer.recommend("stranger", 3)
    assert ranking.fallback is True and len(ranking.items) == 3
    assert {item.score for item in ranking.items} == {0.0}, "an unknown user's zero vector"


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
