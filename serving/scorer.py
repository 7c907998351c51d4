"""Turn a loaded model into ranked ``{item_id, score}`` lists for one user, with a popularity fallback.

Artifact files read next to the model (all optional):

* ``fallback.json`` (written by training): ``{"overall": [{"item_id", "score"}, ...],
  "by_category": {category: [{"item_id", "score"}, ...]}}``, best first. ``[item_id, score]`` pairs
  are accepted too. Without it, unknown users are scored by the model as ``UNKNOWN_USER`` with no
  history (popularity for BPR's fold-in).
* ``history.npz``: ``indptr``/``indices`` (CSR over user index) of each user's train item indices in
  time order. When present those items are the user's history: passed to the user encoder and
  excluded from the ranking. The base ``Recommender.export`` does not write it, so by default
  known users are scored from their index alone and nothing is excluded.

``recent_items`` (external ids, oldest first) is the hook for real-time user state: they extend the
history and are excluded, for known and unknown users alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.base import UNKNOWN_USER, Recommender

FALLBACK_FILE = "fallback.json"
HISTORY_FILE = "history.npz"


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class Ranking:
    items: list[ScoredItem]
    fallback: bool
    #: Recent item ids the model does not know (ignored for scoring, still excluded).
    unknown_recent: int = 0


@dataclass(frozen=True)
class Fallback:
    """Popular items overall and per category, best first."""

    overall: list[ScoredItem]
    by_category: dict[str, list[ScoredItem]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str = FALLBACK_FILE) -> Fallback:
        if not isinstance(obj, dict) or "overall" not in obj:
            raise ValueError(f"{where}: expected an object with an 'overall' list of {{item_id, score}}")
        cats = obj.get("by_category", obj.get("per_category")) or {}
        return cls(
            overall=_items(obj["overall"], f"{where}: overall"),
            by_category={str(c): _items(v, f"{where}: by_category[{c!r}]") for c, v in cats.items()},
        )

    def top(
        self, k: int, exclude: set[str] | frozenset[str] = frozenset(), category: str | None = None
    ) -> list[ScoredItem]:
        pool = self.by_category.get(category, self.overall) if category is not None else self.overall
        return [it for it in pool if it.item_id not in exclude][:k]


def _items(raw: Any, where: str) -> list[ScoredItem]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list, got {type(raw).__name__}")
    out = []
    for n, entry in enumerate(raw):
        if isinstance(entry, dict) and "item_id" in entry:
            out.append(ScoredItem(str(entry["item_id"]), float(entry.get("score", 0.0))))
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            out.append(ScoredItem(str(entry[0]), float(entry[1])))
        else:
            raise ValueError(f"{where}[{n}] = {entry!r}: expected {{item_id, score}} or [item_id, score]")
    return out


class Scorer:
    """Ranks items for one request; immutable after construction so it can be shared across threads."""

    def __init__(
        self,
        model: Recommender,
        fallback: Fallback | None = None,
        histories: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.model = model
        self.fallback = fallback
        self.user_index = {str(u): i for i, u in enumerate(model.user_ids)}
        self.item_index = {str(it): i for i, it in enumerate(model.item_ids)}
        self.item_ids = np.asarray([str(it) for it in model.item_ids], dtype=object)
        self._histories = histories
        if histories is not None:
            indptr, _ = histories
            if len(indptr) != len(self.user_index) + 1:
                raise ValueError(
                    f"{HISTORY_FILE}: indptr has {len(indptr)} entries, expected n_users + 1 = {len(self.user_index) + 1}"
                )

    @classmethod
    def from_artifact(cls, model: Recommender, artifact_dir: str | Path) -> Scorer:
        """Build a scorer from a fetched artifact folder (reads the optional files described above)."""
        src = Path(artifact_dir)
        fallback = None
        if (src / FALLBACK_FILE).is_file():
            fallback = Fallback.from_json(json.loads((src / FALLBACK_FILE).read_text()), str(src / FALLBACK_FILE))
        histories = None
        if (src / HISTORY_FILE).is_file():
            with np.load(src / HISTORY_FILE, allow_pickle=False) as npz:
                histories = (npz["indptr"].astype(np.int64), npz["indices"].astype(np.int64))
        return cls(model, fallback, histories)

    def is_known(self, user_id: str) -> bool:
        return user_id in self.user_index

    def train_history(self, user: int) -> np.ndarray:
        if self._histories is None:
            return np.zeros(0, dtype=np.int64)
        indptr, indices = self._histories
        return indices[indptr[user] : indptr[user + 1]]

    def recommend(self, user_id: str, k: int, recent_items: Sequence[str] = ()) -> Ranking:
        """Top-``k`` for ``user_id``: the model for a known user, the popularity fallback otherwise."""
        recent_idx = [self.item_index[i] for i in recent_items if i in self.item_index]
        unknown_recent = len(recent_items) - len(recent_idx)
        user = self.user_index.get(user_id)
        if user is None and self.fallback is not None:
            return Ranking(
                self.fallback.top(k, exclude=set(recent_items)), fallback=True, unknown_recent=unknown_recent
            )
        history = np.asarray(recent_idx, dtype=np.int64)
        if user is not None:
            history = np.concatenate([self.train_history(user), history])
        users = np.asarray([UNKNOWN_USER if user is None else user], dtype=np.int64)
        idx, scores = self.model.recommend(users, [history], k, exclude_seen=True)
        items = [
            ScoredItem(str(self.item_ids[i]), float(s))
            for i, s in zip(idx[0], scores[0], strict=True)
            if np.isfinite(s)
        ]
        return Ranking(items, fallback=user is None, unknown_recent=unknown_recent)
