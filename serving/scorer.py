"""Turn a loaded model into ranked, filtered, diversified ``{item_id, score, reason}`` lists.

The serving files next to the model (``fallback.json``, ``history.npz``, ``items.json``) are read by
``core.artifacts``, which documents their formats; each is optional.

Per request: the user encoder gets the train history followed by the live recent items (newest
last); candidates come from the item index (``serving.index``: exact or faiss) with excluded and
unavailable items removed, or from an exact masked scan when category/price filters apply; MMR
re-ranks them over categories when ``diversity > 0``; each item gets a reason. All item metadata is
held as arrays aligned with the model's item index, built once per artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.artifacts import HISTORY_FILE, FallbackLists, ItemRecord, read_serving_files
from core.ranking import top_k
from models.base import UNKNOWN_USER, Recommender
from serving.index import build_index

UNKNOWN_CATEGORY = ""
#: A request's candidate pool: item indices and their scores, best first.
Candidates = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str | None = None
    #: The experiment arm that placed the item (team-draft interleaving only).
    team: str | None = None


#: Why an answer is the popularity fallback: the user is unknown and has no history, or the model failed.
UNKNOWN_USER_REASON = "unknown_user"
MODEL_ERROR_REASON = "model_error"


@dataclass(frozen=True)
class Ranking:
    items: list[ScoredItem]
    fallback: bool
    #: Recent item ids the model does not know (ignored for scoring, still excluded).
    unknown_recent: int = 0
    #: ``unknown_user`` or ``model_error`` when ``fallback``.
    fallback_reason: str | None = None
    #: False when the real-time state could not be read (the answer uses the model and training history only).
    live: bool = True


@dataclass(frozen=True)
class RankOptions:
    """What one request asks of the ranking (defaults from ``[serving]``)."""

    exclude: str = "seen"
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    diversity: float = 0.0
    diversity_pool: int = 5

    @property
    def filtered(self) -> bool:
        return self.category is not None or self.min_price is not None or self.max_price is not None


@dataclass(frozen=True)
class RecRequest:
    """One recommendation request: the user (``None``: an anonymous session), ``k``, its live items."""

    user_id: str | None
    k: int
    recent_items: tuple[str, ...] = ()
    purchased: frozenset[str] = frozenset()
    options: RankOptions = field(default_factory=RankOptions)


@dataclass(frozen=True)
class _Plan:
    """A request resolved against the model: user index, history and banned item indices, pool size."""

    user: int | None
    k: int
    history: np.ndarray
    banned: np.ndarray
    pool: int
    fallback: bool
    unknown_recent: int
    options: RankOptions


@dataclass(frozen=True)
class ItemCatalog:
    """Item metadata as arrays over the model's item index (codes: 0 = unknown category)."""

    category: np.ndarray
    category_names: list[str]
    price: np.ndarray
    available: np.ndarray
    #: Item ids of ``items.json`` that the model does not know (reported, not used).
    unmatched: int = 0

    @classmethod
    def empty(cls, n_items: int) -> ItemCatalog:
        return cls(
            category=np.zeros(n_items, dtype=np.int32),
            category_names=[UNKNOWN_CATEGORY],
            price=np.full(n_items, np.nan),
            available=np.ones(n_items, dtype=bool),
        )

    @classmethod
    def from_records(cls, records: Sequence[ItemRecord], item_index: dict[str, int]) -> ItemCatalog:
        """Arrays over the model's item index from ``items.json`` rows; rows the model lacks are counted in ``unmatched``."""
        out = cls.empty(len(item_index))
        names = {UNKNOWN_CATEGORY: 0}
        unmatched = 0
        for row in records:
            idx = item_index.get(row.item_id)
            if idx is None:
                unmatched += 1
                continue
            if row.category is not None and row.category != UNKNOWN_CATEGORY:
                out.category[idx] = names.setdefault(row.category, len(names))
            if row.price is not None:
                out.price[idx] = row.price
            if not row.available:
                out.available[idx] = False
        return cls(out.category, list(names), out.price, out.available, unmatched)

    def code(self, category: str) -> int:
        try:
            return self.category_names.index(category)
        except ValueError:
            return -1

    def mask(self, options: RankOptions) -> np.ndarray:
        """True where an item may be recommended under the request's filters."""
        ok = self.available.copy()
        if options.category is not None:
            ok &= self.category == self.code(options.category)
        if options.min_price is not None:
            ok &= self.price >= options.min_price
        if options.max_price is not None:
            ok &= self.price <= options.max_price
        return ok


def _normalise_rows(m: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(m):
        csr = sp.csr_matrix(m, dtype=np.float32)
        norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
        return sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)) @ csr
    dense = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return np.where(norms > 0, dense / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _gram(a: np.ndarray | sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cosine block ``a[rows] · a[cols]ᵀ`` of row-normalised ``a``, dense."""
    block = a[rows] @ a[cols].T
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def mmr(scores: np.ndarray, categories: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Greedy maximal marginal relevance over categories: positions into ``scores``, best first.

    Each step picks ``argmax (1 - w)·rel - w·[category already picked]`` with ``rel`` the min-max
    normalised score and ``w = diversity``; unknown categories (code 0) never count as repeats.
    """
    n = len(scores)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(scores.max() - scores.min())
    rel = (scores - scores.min()) / span if span > 0 else np.ones(n, dtype=np.float64)
    picked = np.zeros(n, dtype=bool)
    used = np.zeros(int(categories.max()) + 1, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    for step in range(k):
        penalty = used[categories] & (categories > 0)
        value = (1.0 - diversity) * rel - diversity * penalty
        value[picked] = -np.inf
        best = int(np.argmax(value))
        out[step] = best
        picked[best] = True
        used[categories[best]] = True
    return out


class Scorer:
    """Ranks items for one request; immutable after construction so it can be shared across threads."""

    def __init__(
        self,
        model: Recommender,
        fallback: FallbackLists | None = None,
        histories: tuple[np.ndarray, np.ndarray] | None = None,
        catalog: ItemCatalog | None = None,
        index_kind: str = "auto",
        index_exact_max_items: int = 200_000,
    ) -> None:
        self.model = model
        self.fallback = fallback
        self.user_index = {str(u): i for i, u in enumerate(model.user_ids)}
        self.item_index = {str(it): i for i, it in enumerate(model.item_ids)}
        self.item_ids = np.asarray([str(it) for it in model.item_ids], dtype=object)
        n_items = len(self.item_ids)
        self.catalog = catalog or ItemCatalog.empty(n_items)
        self._histories = histories
        if histories is not None:
            indptr, _ = histories
            if len(indptr) != len(self.user_index) + 1:
                raise ValueError(
                    f"{HISTORY_FILE}: indptr has {len(indptr)} entries, expected n_users + 1 = {len(self.user_index) + 1}"
                )
        items = model.item_matrix()
        if items.shape[0] != n_items:
            raise ValueError(f"model item_matrix has {items.shape[0]} rows for {n_items} item ids")
        bias = model.item_bias()
        self._bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self._sparse = sp.issparse(items)
        self._items = sp.csr_matrix(items, dtype=np.float32) if self._sparse else np.asarray(items, dtype=np.float32)
        self.index = (
            None
            if self._sparse or n_items == 0
            else build_index(self._items, self._bias, kind=index_kind, exact_max_items=index_exact_max_items, threads=1)
        )
        self._normed = _normalise_rows(self._items)
        self._unavailable = np.flatnonzero(~self.catalog.available)
        self._fallback_scores = self._fallback_vector(fallback)

    @classmethod
    def from_artifact(cls, model: Recommender, artifact_dir: str | Path, **options: Any) -> Scorer:
        """Build a scorer from a fetched artifact folder and its optional serving files."""
        files = read_serving_files(artifact_dir)
        catalog = None
        if files.items is not None:
            item_index = {str(it): i for i, it in enumerate(model.item_ids)}
            catalog = ItemCatalog.from_records(files.items, item_index)
        return cls(model, files.fallback, files.histories, catalog, **options)

    def _fallback_vector(self, fallback: FallbackLists | None) -> np.ndarray | None:
        if fallback is None:
            return None
        out = np.full(len(self.item_ids), -np.inf, dtype=np.float32)
        for it in reversed(fallback.overall):
            idx = self.item_index.get(it.item_id)
            if idx is not None:
                out[idx] = it.score
        for entries in fallback.by_category.values():
            for it in entries:
                idx = self.item_index.get(it.item_id)
                if idx is not None and not np.isfinite(out[idx]):
                    out[idx] = it.score
        return out

    def is_known(self, user_id: str) -> bool:
        return user_id in self.user_index

    def train_history(self, user: int) -> np.ndarray:
        if self._histories is None:
            return np.zeros(0, dtype=np.int64)
        indptr, indices = self._histories
        return indices[indptr[user] : indptr[user + 1]]

    def _indices(self, ids: Sequence[str] | frozenset[str]) -> np.ndarray:
        return np.asarray([self.item_index[i] for i in ids if i in self.item_index], dtype=np.int64)

    def _all_scores(self, u: np.ndarray) -> np.ndarray:
        s = self._items @ u
        s = np.asarray(s, dtype=np.float32).ravel()
        return s + self._bias if self._bias is not None else s

    def _top(self, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx, sc = top_k(scores[None, :], n)
        keep = np.isfinite(sc[0])
        return idx[0][keep], sc[0][keep]

    def recommend(
        self,
        user_id: str | None,
        k: int,
        recent_items: Sequence[str] = (),
        purchased: Sequence[str] | frozenset[str] = (),
        options: RankOptions | None = None,
    ) -> Ranking:
        """Top-``k`` for ``user_id`` (``None``: an anonymous session) given its live recent/purchased items.

        The model scores a known user or any user with usable history; otherwise the popularity
        fallback ranks (``fallback=True``).
        """
        request = RecRequest(user_id, k, tuple(recent_items), frozenset(purchased), options or RankOptions())
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RecRequest]) -> list[Ranking]:
        """:meth:`recommend` for a batch: one user-encoder call and one index search for all of it.

        Each answer is what ``recommend`` gives for that request alone; batching only shares the work
        (the serving micro-batcher hands this everything queued while the previous batch ran).
        """
        plans = dict(enumerate(self._plan(r) for r in requests))
        candidates = self._fallback_candidates(plans)
        candidates.update(self._model_candidates({pos: plan for pos, plan in plans.items() if pos not in candidates}))
        return [self._finish(plan, *candidates[pos]) for pos, plan in plans.items()]

    def _fallback_candidates(self, plans: dict[int, _Plan]) -> dict[int, Candidates]:
        """Pools of the requests with neither a known user nor a usable history, from the popularity
        fallback (keyed by request position); ``{}`` without a fallback file: the model scores them."""
        popular = self._fallback_scores
        if popular is None:
            return {}
        return {pos: self._masked_top(popular.copy(), plan) for pos, plan in plans.items() if plan.fallback}

    def _model_candidates(self, plans: dict[int, _Plan]) -> dict[int, Candidates]:
        """Pools of the model-scored requests (keyed by request position): one user-encoder pass for all,
        then one index search for the unfiltered ones and a masked scan of every item for the filtered."""
        if not plans:
            return {}
        vectors = dict(zip(plans, self._user_vectors(list(plans.values())), strict=True))
        found = self._index_search({pos: plan for pos, plan in plans.items() if not plan.options.filtered}, vectors)
        for pos, plan in plans.items():
            if pos not in found:  # filtered, or no index (sparse item side): exact scan under the request's mask
                found[pos] = self._masked_top(self._all_scores(vectors[pos]), plan)
        return found

    def _user_vectors(self, plans: Sequence[_Plan]) -> np.ndarray:
        users = np.asarray([UNKNOWN_USER if plan.user is None else plan.user for plan in plans], np.int64)
        return np.asarray(self.model.user_vectors(users, [plan.history for plan in plans]), np.float32)

    def _index_search(self, plans: dict[int, _Plan], vectors: dict[int, np.ndarray]) -> dict[int, Candidates]:
        """One index search for all ``plans`` at the largest pool asked, each row cut to its own pool;
        ``{}`` when the scorer has no index."""
        if self.index is None or not plans:
            return {}
        pool = max(plan.pool for plan in plans.values())
        exclude = [np.union1d(plan.banned, self._unavailable) for plan in plans.values()]
        idx, sc = self.index.search(np.stack([vectors[pos] for pos in plans]), pool, exclude=exclude)
        found = {}
        for row, (pos, plan) in enumerate(plans.items()):
            keep = np.isfinite(sc[row])
            found[pos] = (idx[row][keep][: plan.pool], sc[row][keep][: plan.pool])
        return found

    def _plan(self, request: RecRequest) -> _Plan:
        opts = request.options
        recent_idx = self._indices(request.recent_items)
        user = self.user_index.get(request.user_id) if request.user_id is not None else None
        train_hist = self.train_history(user) if user is not None else np.zeros(0, dtype=np.int64)
        history = np.concatenate([train_hist, recent_idx])
        if opts.exclude == "seen":
            banned = np.concatenate([history, self._indices(request.purchased)])
        elif opts.exclude == "purchased":
            banned = self._indices(request.purchased)
        else:
            banned = np.zeros(0, dtype=np.int64)
        return _Plan(
            user=user,
            k=request.k,
            history=history,
            banned=banned,
            pool=request.k * opts.diversity_pool if opts.diversity > 0 else request.k,
            fallback=user is None and len(history) == 0,
            unknown_recent=len(request.recent_items) - len(recent_idx),
            options=opts,
        )

    def _masked_top(self, scores: np.ndarray, plan: _Plan) -> Candidates:
        scores[plan.banned] = -np.inf
        scores[~self.catalog.mask(plan.options)] = -np.inf
        return self._top(scores, plan.pool)

    def _finish(self, plan: _Plan, idx: np.ndarray, sc: np.ndarray) -> Ranking:
        k, opts = plan.k, plan.options
        if opts.diversity > 0 and len(idx) > k:
            order = mmr(sc.astype(np.float64), self.catalog.category[idx], k, opts.diversity)
            idx, sc = idx[order], sc[order]
        idx, sc = idx[:k], sc[:k]
        reasons = self._reasons(idx, plan.history, plan.fallback)
        items = [ScoredItem(str(self.item_ids[i]), float(s), r) for i, s, r in zip(idx, sc, reasons, strict=True)]
        reason = UNKNOWN_USER_REASON if plan.fallback else None
        return Ranking(items, fallback=plan.fallback, unknown_recent=plan.unknown_recent, fallback_reason=reason)

    def fallback_many(self, requests: Sequence[RecRequest], reason: str = MODEL_ERROR_REASON) -> list[Ranking]:
        """The popularity fallback for every request, the model not called: the answer when scoring failed.

        Same exclusions and filters as a normal answer; without a fallback file every item ties (catalogue order).
        """
        popular = self._fallback_scores
        if popular is None:
            popular = np.zeros(len(self.item_ids), dtype=np.float32)
        out = []
        for request in requests:
            plan = replace(self._plan(request), fallback=True)
            ranking = self._finish(plan, *self._masked_top(popular.copy(), plan))
            out.append(replace(ranking, fallback_reason=reason))
        return out

    def _reasons(self, idx: np.ndarray, history: np.ndarray, popular: bool) -> list[str]:
        """ "because you viewed <item>" (the most similar history item) else "popular in <category>" else "trending"."""
        out = []
        cats = self.catalog.category[idx]
        sims = None
        hist = np.unique(history)
        if not popular and len(hist) and len(idx):
            sims = _gram(self._normed, idx, hist)
        for row, cat in enumerate(cats):
            if sims is not None and sims[row].max() > 0:
                out.append(f"because you viewed {self.item_ids[hist[int(np.argmax(sims[row]))]]}")
            elif cat > 0:
                out.append(f"popular in {self.catalog.category_names[cat]}")
            else:
                out.append("trending")
        return out

    def similar(self, item_id: str, k: int, options: RankOptions | None = None) -> list[ScoredItem] | None:
        """Items most similar to ``item_id`` by cosine of the model's item vectors; None if unknown."""
        idx = self.item_index.get(item_id)
        if idx is None:
            return None
        opts = options or RankOptions(exclude="none")
        sims = _gram(self._normed, np.asarray([idx]), np.arange(len(self.item_ids)))[0].astype(np.float32)
        sims[idx] = -np.inf
        sims[~self.catalog.mask(opts)] = -np.inf
        top, sc = self._top(sims, k)
        return [
            ScoredItem(str(self.item_ids[i]), float(s), f"similar to {item_id}") for i, s in zip(top, sc, strict=True)
        ]
