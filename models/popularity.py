"""Popularity: every user gets the same ranking. The baseline every model must beat, and the
cold-start fallback of serving (``fallback_lists``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.data import TrainData
from models.base import EpochCallback, Recommender, register

SCORE_BY = ("weight", "users")


def popularity_scores(data: TrainData, by: str = "weight") -> np.ndarray:
    """Per item: the decayed, event-weighted interaction sum (``weight``) or distinct train users (``users``)."""
    if by == "weight":
        return np.asarray(data.train.sum(axis=0)).ravel().astype(np.float64)
    if by == "users":
        return data.item_popularity()
    raise ValueError(f"popularity parameter 'by' must be one of {SCORE_BY}, got {by!r}")


def fallback_lists(data: TrainData, n: int = 500, by: str = "weight") -> dict[str, Any]:
    """Top-``n`` popular items overall and per category, for cold-start serving.

    ``{"by": by, "overall": [{"item_id", "score"}...], "by_category": {name: [...]}}``; items with no
    train interaction are left out; unknown-category items only appear in ``overall``.
    """
    scores = popularity_scores(data, by)
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] > 0]

    def listing(idx: np.ndarray) -> list[dict[str, Any]]:
        return [{"item_id": str(data.item_ids[i]), "score": float(scores[i])} for i in idx[:n]]

    by_category: dict[str, list[dict[str, Any]]] = {}
    features = data.item_features
    if features is not None:
        cats = features.category[order]
        for code in np.unique(cats[cats > 0]):
            by_category[features.category_names[code]] = listing(order[cats == code])
    return {"by": by, "overall": listing(order), "by_category": by_category}


@register
class PopularityRecommender(Recommender):
    """Score = item popularity; a 1-d user vector of ones times a 1-d item column."""

    name = "popularity"
    defaults = {"full": {"by": "weight"}, "quick": {}}

    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        scores = popularity_scores(data, self.params["by"])
        top = scores.max() if len(scores) and scores.max() > 0 else 1.0
        self._scores = (scores / top).astype(np.float32)
        if callback is not None:
            callback(0, {"loss": 0.0})

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.ones((len(users), 1), dtype=np.float32)

    def item_matrix(self) -> np.ndarray:
        return self._scores[:, None]

    def _state(self) -> dict[str, np.ndarray]:
        return {"scores": self._scores}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._scores = state["scores"].astype(np.float32)
