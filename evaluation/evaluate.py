"""Offline evaluation: full ranking over every item, seen items excluded, one protocol for all models.

History and exclusion per split (standard leave-one-out protocol):

* ``valid``: the model sees the user's train sequence; the train items are excluded from the ranking.
* ``test``: by test time the validation interaction has happened, so the model sees the train
  sequence followed by the valid item(s), and both train and valid items are excluded.

A model trained on other indices (e.g. yesterday's champion) is mapped onto ``data`` by external id:
items it does not know score −inf, users it does not know are encoded from their history
(the model's ``UNKNOWN_USER`` fold-in path).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from core.ranking import top_k
from evaluation.data import TrainData
from evaluation.metrics import catalogue_coverage, intra_list_diversity, novelty, ranking_metrics

SPLITS = ("valid", "test")


class Ranker(Protocol):
    """What evaluation needs of a model (every ``models.base.Recommender`` is one): its ids and full scores."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray: ...


def align_indices(model: Ranker, data: TrainData) -> tuple[np.ndarray, np.ndarray] | None:
    """``(user_map, item_map)`` from ``data`` indices to the model's (−1 where unknown), or ``None``
    when the model was trained on exactly ``data``'s indices."""
    if len(model.item_ids) == 0 or (
        len(model.item_ids) == data.n_items
        and len(model.user_ids) == data.n_users
        and np.array_equal(model.item_ids.astype(str), data.item_ids.astype(str))
        and np.array_equal(model.user_ids.astype(str), data.user_ids.astype(str))
    ):
        return None
    user_map = pd.Index(model.user_ids.astype(str)).get_indexer(data.user_ids.astype(str)).astype(np.int64)
    item_map = pd.Index(model.item_ids.astype(str)).get_indexer(data.item_ids.astype(str)).astype(np.int64)
    return user_map, item_map


def split_histories(data: TrainData, split: str, users: np.ndarray) -> list[np.ndarray]:
    """What the model may see for each user of ``split`` (see module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    empty = np.zeros(0, dtype=np.int64)
    if split == "valid":
        return [data.sequences[u] for u in users]
    return [np.concatenate([data.sequences[u], data.valid.get(int(u), empty)]) for u in users]


def score_users(
    model: Ranker,
    data: TrainData,
    users: np.ndarray,
    histories: Sequence[np.ndarray],
    alignment: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Scores (len(users) × data.n_items) in ``data``'s item order, mapping indices when needed."""
    if alignment is None:
        return model.score(users, histories)
    user_map, item_map = alignment
    mapped_hist = [item_map[h][item_map[h] >= 0] for h in histories]
    raw = model.score(user_map[users], mapped_hist)
    known = item_map >= 0
    scores = np.full((len(users), data.n_items), -np.inf, dtype=np.float32)
    scores[:, known] = raw[:, item_map[known]]
    return scores


def evaluate(
    model: Ranker,
    data: TrainData,
    split: str = "test",
    ks: Sequence[int] = (10, 20),
    batch_size: int = 1024,
    exclude_seen: bool = True,
    topk_out: dict[str, list[str]] | str | os.PathLike[str] | None = None,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``data``'s ``split``.

    Returns ``hr@K, recall@K, ndcg@K, mrr@K`` for each K in ``ks``, ``coverage@k``, ``diversity@k``,
    ``novelty@k`` at the smallest K, and ``n_users``. ``users`` restricts the evaluation to a subset
    (e.g. a sample for early stopping). ``topk_out`` receives the top-max(ks) external item ids per
    external user id: a dict is filled in place, a path gets a JSON object.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must hold positive cut-offs, got {ks}")
    targets_by_user = data.valid if split == "valid" else data.test
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    eval_users = np.array(sorted(targets_by_user), dtype=np.int64)
    if users is not None:
        eval_users = np.intersect1d(eval_users, np.asarray(users, dtype=np.int64))
    k_max = ks[-1]
    alignment = align_indices(model, data)
    ranked_parts: list[np.ndarray] = []
    for start in range(0, len(eval_users), batch_size):
        batch = eval_users[start : start + batch_size]
        histories = split_histories(data, split, batch)
        scores = score_users(model, data, batch, histories, alignment)
        if exclude_seen:
            lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
            if lengths.sum():
                rows = np.repeat(np.arange(len(batch)), lengths)
                scores[rows, np.concatenate(histories).astype(np.int64)] = -np.inf
        idx, top_scores = top_k(scores, k_max)
        idx[np.isneginf(top_scores)] = -1
        ranked_parts.append(idx)
    ranked = np.concatenate(ranked_parts) if ranked_parts else np.zeros((0, k_max), dtype=np.int64)
    targets = [targets_by_user[int(u)] for u in eval_users]
    out = ranking_metrics(ranked, targets, ks)
    k0 = ks[0]
    head = ranked[:, :k0]
    features = data.item_features
    popularity = data.item_popularity()
    out[f"coverage@{k0}"] = catalogue_coverage(head, data.n_items) if len(head) else 0.0
    out[f"diversity@{k0}"] = intra_list_diversity(
        head,
        categories=features.category if features is not None else None,
        attributes=features.attributes if features is not None and features.attributes.shape[1] else None,
    )
    out[f"novelty@{k0}"] = novelty(head, popularity) if len(head) and popularity.sum() > 0 else float("nan")
    out["n_users"] = float(len(eval_users))
    if topk_out is not None:
        lists = {
            str(data.user_ids[u]): [str(data.item_ids[i]) for i in row if i >= 0]
            for u, row in zip(eval_users, ranked, strict=True)
        }
        if isinstance(topk_out, dict):
            topk_out.update(lists)
        else:
            Path(topk_out).parent.mkdir(parents=True, exist_ok=True)
            Path(topk_out).write_text(json.dumps(lists))
    return out
