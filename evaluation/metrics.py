"""Offline ranking metrics: pure functions over ranked item-index arrays and target sets.

Conventions shared by every function:

* ``ranked`` is an integer array (n_users × L), each row one user's recommendations best first, as
  item indices; a negative entry means "no item at this position" and never counts.
* ``targets`` is a sequence (one entry per row of ``ranked``) of the user's relevant item indices
  (array, list or set). Users with an empty target set count as zero for every accuracy metric.
* Accuracy metrics return the mean over users; ``k`` truncates each row to its first ``k`` columns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import scipy.sparse as sp

Targets = Sequence[Collection[int] | np.ndarray]


def _as_array(t: Collection[int] | np.ndarray) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t.astype(np.int64, copy=False).ravel()
    return np.fromiter(t, dtype=np.int64, count=len(t))


def hit_matrix(ranked: np.ndarray, targets: Targets) -> np.ndarray:
    """Boolean (n_users × L): ``ranked[u, r]`` is one of user ``u``'s targets (vectorised lookup)."""
    return _hits_and_sizes(ranked, targets)[0]


def _hits_and_sizes(ranked: np.ndarray, targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-d (n_users × k), got shape {ranked.shape}")
    if len(targets) != ranked.shape[0]:
        raise ValueError(f"targets has {len(targets)} entries but ranked has {ranked.shape[0]} rows")
    arrays = [_as_array(t) for t in targets]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    if lengths.sum() == 0 or ranked.size == 0:
        return np.zeros(ranked.shape, dtype=bool), np.zeros(len(arrays), dtype=np.float64)
    flat = np.concatenate(arrays)
    width = int(max(flat.max(), ranked.max(), 0)) + 1
    rows = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    target_codes = np.unique(rows * width + flat)
    sizes = np.bincount(target_codes // width, minlength=len(arrays)).astype(np.float64)
    codes = np.arange(ranked.shape[0], dtype=np.int64)[:, None] * width + ranked
    hits = np.isin(codes, target_codes)
    hits &= ranked >= 0
    return hits, sizes


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_rate_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """HR@K = mean_u 1[|top_K(u) ∩ T_u| > 0]."""
    _check_k(k)
    hits = hit_matrix(ranked, targets)[:, :k]
    return float(hits.any(axis=1).mean()) if len(hits) else 0.0


def recall_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """Recall@K = mean_u |top_K(u) ∩ T_u| / |T_u| (0 for an empty T_u)."""
    _check_k(k)
    hits, sizes = _hits_and_sizes(ranked, targets)
    return _recall(hits[:, :k], sizes)


def ndcg_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """NDCG@K = mean_u DCG_u / IDCG_u with binary gains:
    DCG_u = Σ_{r=1..K} hit(u, r) / log2(r + 1),  IDCG_u = Σ_{r=1..min(|T_u|, K)} 1 / log2(r + 1)."""
    _check_k(k)
    hits, sizes = _hits_and_sizes(ranked, targets)
    return _ndcg(hits[:, :k], sizes, k)


def mrr_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """MRR@K = mean_u 1 / rank of the first target in top_K(u) (0 when none is there)."""
    _check_k(k)
    hits = hit_matrix(ranked, targets)[:, :k]
    return _mrr(hits)


def _recall(hits: np.ndarray, sizes: np.ndarray) -> float:
    if not len(hits):
        return 0.0
    found = hits.sum(axis=1).astype(np.float64)
    return float(np.divide(found, sizes, out=np.zeros_like(found), where=sizes > 0).mean())


def _ndcg(hits: np.ndarray, sizes: np.ndarray, k: int) -> float:
    if not len(hits):
        return 0.0
    width = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))
    dcg = (hits * discounts[None, :]).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))])
    idcg = ideal_cum[np.minimum(sizes, k).astype(np.int64)]
    return float(np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0).mean())


def _mrr(hits: np.ndarray) -> float:
    if not len(hits):
        return 0.0
    any_hit = hits.any(axis=1)
    first = hits.argmax(axis=1)
    return float(np.where(any_hit, 1.0 / (first + 1.0), 0.0).mean())


def ranking_metrics(ranked: np.ndarray, targets: Targets, ks: Sequence[int] = (10, 20)) -> dict[str, float]:
    """``hr@K``, ``recall@K``, ``ndcg@K``, ``mrr@K`` for every K in ``ks``, with one target lookup."""
    hits, sizes = _hits_and_sizes(ranked, targets)
    out: dict[str, float] = {}
    for k in ks:
        _check_k(k)
        h = hits[:, :k]
        out[f"hr@{k}"] = float(h.any(axis=1).mean()) if len(h) else 0.0
        out[f"recall@{k}"] = _recall(h, sizes)
        out[f"ndcg@{k}"] = _ndcg(h, sizes, k)
        out[f"mrr@{k}"] = _mrr(h)
    return out


def catalogue_coverage(ranked: np.ndarray, n_items: int) -> float:
    """Coverage = |∪_u top_K(u)| / n_items: the share of the catalogue recommended to anyone."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    ranked = np.asarray(ranked)
    return float(len(np.unique(ranked[ranked >= 0])) / n_items)


def intra_list_diversity(
    ranked: np.ndarray,
    categories: np.ndarray | None = None,
    attributes: sp.spmatrix | None = None,
) -> float:
    """ILD = mean_u [1 − mean_{i<j in top_K(u)} sim(i, j)].

    ``sim`` is ``1[cat_i = cat_j]`` when ``categories`` (integer codes, 0 = unknown, an unknown category
    never matches) has any known code, else the Jaccard index |A_i ∩ A_j| / |A_i ∪ A_j| of the items'
    attribute sets (rows of ``attributes``; two empty sets have similarity 0). Lists with fewer than two
    items are skipped; returns NaN when no features are given or no list has two items.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or ranked.shape[1] < 2:
        return float("nan")
    valid = ranked >= 0
    safe = np.where(valid, ranked, 0)
    iu, ju = np.triu_indices(ranked.shape[1], k=1)
    pair_valid = valid[:, iu] & valid[:, ju]
    use_categories = categories is not None and bool(np.any(np.asarray(categories) > 0))
    if use_categories:
        cats = np.asarray(categories)[safe]
        sim = ((cats[:, iu] == cats[:, ju]) & (cats[:, iu] > 0)).astype(np.float64)
    elif attributes is not None:
        attrs = sp.csr_matrix(attributes, dtype=np.float64)
        attrs.data[:] = 1.0
        sizes = np.asarray(attrs.sum(axis=1)).ravel()
        sim = np.zeros((ranked.shape[0], len(iu)), dtype=np.float64)
        for p, (a, b) in enumerate(zip(iu, ju, strict=True)):
            inter = np.asarray(attrs[safe[:, a]].multiply(attrs[safe[:, b]]).sum(axis=1)).ravel()
            union = sizes[safe[:, a]] + sizes[safe[:, b]] - inter
            sim[:, p] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    else:
        return float("nan")
    n_pairs = pair_valid.sum(axis=1)
    keep = n_pairs > 0
    if not keep.any():
        return float("nan")
    mean_sim = (sim * pair_valid).sum(axis=1)[keep] / n_pairs[keep]
    return float((1.0 - mean_sim).mean())


def novelty(ranked: np.ndarray, popularity: np.ndarray) -> float:
    """Novelty = mean over recommended items of −log2 p_i, p_i = max(pop_i, 1) / Σ_j pop_j.

    ``popularity`` is per item index (e.g. distinct train users); an item nobody interacted with
    counts as if one had, so the value stays finite.
    """
    pop = np.asarray(popularity, dtype=np.float64)
    total = pop.sum()
    if total <= 0:
        raise ValueError("popularity sums to zero: novelty needs at least one interaction")
    ranked = np.asarray(ranked, dtype=np.int64)
    items = ranked[ranked >= 0]
    if not len(items):
        return float("nan")
    share = np.maximum(pop[items], 1.0) / total
    return float((-np.log2(share)).mean())
