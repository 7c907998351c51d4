"""Top-K over the item side: one interface, exact below a catalogue size, faiss ANN above it.

A model scores ``user_vector · item_vector + item_bias``. The bias is folded into the vectors
(queries get a trailing ``1``, items their bias as an extra column), so both indexes solve plain
maximum-inner-product search and return the model's own scores.

* :class:`ExactIndex` — float32 matmul over all items + ``torch.topk``; exact, O(n·d) per query. A
  batch of queries is one ``items @ queriesᵀ`` GEMM, which reads the item matrix once for the whole
  batch: 8 queries over 100k items cost about 2× one query, not 8×.
* :class:`FaissIndex` — faiss inner-product IVF (default) or HNSW. Candidates are re-scored exactly,
  so returned scores are true model scores; ``exclude`` is honoured by over-fetching, and a row the
  ANN cannot fill with ``k`` eligible items is answered by the exact scan (counted in ``exact_fallbacks``).

``build_index(..., kind="auto")`` picks exact up to ``exact_max_items`` items, faiss above.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

KINDS = ("auto", "exact", "faiss")
FAISS_METHODS = ("hnsw", "ivf")
#: Query rows scored per matmul in the exact scan: bounds the (rows, n_items) score buffer.
DEFAULT_EXACT_BATCH = 64
#: IVF k-means training points per list (faiss warns below 39).
TRAIN_PER_LIST = 40


class ItemIndex(Protocol):
    """What the scorer needs: ``search`` plus a description of the index."""

    kind: str
    n_items: int
    dim: int

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices (b, k) int64 and scores (b, k) float32 per query, best first."""
        ...


def augment_items(item_matrix: np.ndarray, item_bias: np.ndarray | None) -> np.ndarray:
    """Item vectors as contiguous float32 (n, d + 1): the bias (0 when absent) as the last column."""
    items = np.asarray(item_matrix, dtype=np.float32)
    if items.ndim != 2:
        raise ValueError(f"item_matrix must be 2-d (n_items, dim), got shape {items.shape}")
    bias = np.zeros(len(items), dtype=np.float32) if item_bias is None else np.asarray(item_bias, np.float32)
    if bias.shape != (len(items),):
        raise ValueError(f"item_bias must have shape ({len(items)},) to match item_matrix, got {bias.shape}")
    return np.ascontiguousarray(np.hstack([items, bias[:, None]]))


def augment_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Queries as contiguous float32 (b, dim + 1) with a trailing 1 that picks up the item bias."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (batch, {dim}) to match the item vectors, got {q.shape}")
    return np.ascontiguousarray(np.hstack([q, np.ones((len(q), 1), dtype=np.float32)]))


def _check_exclude(exclude: Sequence[np.ndarray] | None, batch: int) -> list[np.ndarray] | None:
    if exclude is None:
        return None
    if len(exclude) != batch:
        raise ValueError(f"exclude must hold one array per query ({batch}), got {len(exclude)}")
    return [np.asarray(e, dtype=np.int64).ravel() for e in exclude]


def _prepare(
    queries: np.ndarray, dim: int, k: int, n_items: int, exclude: Sequence[np.ndarray] | None
) -> tuple[np.ndarray, list[np.ndarray] | None, int]:
    """What both indexes' ``search`` start from: augmented queries, checked exclusions, ``k`` clamped to the catalogue."""
    q = augment_queries(queries, dim)
    return q, _check_exclude(exclude, len(q)), max(0, min(int(k), n_items))


def _empty(batch: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((batch, 0), dtype=np.int64), np.zeros((batch, 0), dtype=np.float32)


class ExactIndex:
    """Exact top-K by a float32 matmul over every item, in query chunks of ``batch_size`` rows."""

    kind = "exact"

    def __init__(
        self, item_matrix: np.ndarray, item_bias: np.ndarray | None = None, batch_size: int = DEFAULT_EXACT_BATCH
    ) -> None:
        self.items = augment_items(item_matrix, item_bias)
        self.n_items, self.dim = len(self.items), self.items.shape[1] - 1
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def over_augmented(cls, items: np.ndarray, batch_size: int = DEFAULT_EXACT_BATCH) -> ExactIndex:
        """An exact index sharing (not copying) another index's augmented ``(n, d + 1)`` item array."""
        index = cls.__new__(cls)
        index.items, index.n_items, index.dim = items, len(items), items.shape[1] - 1
        index.batch_size = max(1, int(batch_size))
        return index

    def _block(self, q: np.ndarray) -> Any:
        """Scores (b, n_items) of augmented queries as a torch tensor (a transposed view when b > 1).

        One query: ``torch.mm`` (a GEMV, ~1.5× numpy's ``q @ itemsᵀ`` here); several: numpy's
        ``items @ qᵀ`` (n, b), the GEMM shape OpenBLAS runs fastest, read through a transposed view.
        """
        if len(q) == 1:
            return torch.mm(torch.from_numpy(q), torch.from_numpy(self.items).T)
        return torch.from_numpy(self.items @ q.T).T

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """All item scores (b, n_items) float32 for raw (un-augmented) queries."""
        return np.ascontiguousarray(self._block(augment_queries(queries, self.dim)).numpy())

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k``; excluded items score ``-inf`` and appear only when fewer than ``k`` remain."""
        q, excl, k = _prepare(queries, self.dim, k, self.n_items, exclude)
        if k == 0:
            return _empty(len(q))
        idx = np.empty((len(q), k), dtype=np.int64)
        out = np.empty((len(q), k), dtype=np.float32)
        for lo in range(0, len(q), self.batch_size):
            hi = min(lo + self.batch_size, len(q))
            s = self._block(q[lo:hi])
            if excl is not None:
                for row in range(lo, hi):
                    if len(excl[row]):
                        s[row - lo, torch.from_numpy(excl[row])] = -np.inf
            values, best = torch.topk(s, k, dim=1)
            idx[lo:hi], out[lo:hi] = best.numpy(), values.numpy()
        return idx, out


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("kind='faiss' needs faiss: pip install faiss-cpu (or pass kind='exact')") from exc
    return faiss


def default_threads() -> int:
    """CPU cores this process may run on (faiss's OpenMP pool size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class FaissIndex:
    """Approximate MIPS with faiss; candidates are re-scored exactly and ``exclude`` is honoured.

    ``method="ivf"`` (default): ``IndexIVFFlat`` (inner product) with ``nlist`` lists (default √n),
    ``nprobe`` probed per query, k-means on ``train_size`` samples (default 40·nlist) — builds in
    seconds at 1M items. ``method="hnsw"``: ``IndexHNSWFlat`` (inner product), ``hnsw_m`` links per
    node, ``ef_construction``/``ef_search`` beam widths — similar query speed and recall, but its build
    is ~25× slower (≈50 s for 200k items on 2 busy cores), too slow for a hot swap at 1M.
    ``threads`` sizes faiss's OpenMP pool (process-wide; default: the cores this process may use).
    """

    kind = "faiss"

    def __init__(
        self,
        item_matrix: np.ndarray,
        item_bias: np.ndarray | None = None,
        method: str = "ivf",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 16,
        train_size: int | None = None,
        threads: int | None = None,
        seed: int = 42,
    ) -> None:
        if method not in FAISS_METHODS:
            raise ValueError(f"method={method!r} is not a faiss method; use one of {FAISS_METHODS}")
        faiss = _faiss()
        self.threads = int(threads) if threads else default_threads()
        faiss.omp_set_num_threads(self.threads)
        self.items = augment_items(item_matrix, item_bias)
        self.n_items, self.dim = len(self.items), self.items.shape[1] - 1
        self.method = method
        self.ef_search = int(ef_search)
        self.nprobe = int(nprobe)
        self.exact_fallbacks = 0
        self._lock = threading.Lock()
        d = self.items.shape[1]
        if method == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.add(self.items)
            self.nlist = 0
        else:
            self.nlist = min(self.n_items, int(nlist) if nlist else max(1, round(np.sqrt(self.n_items))))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            n_train = min(self.n_items, int(train_size) if train_size else TRAIN_PER_LIST * self.nlist)
            sample = (
                self.items[rng.choice(self.n_items, n_train, replace=False)] if n_train < self.n_items else self.items
            )
            index.cp.seed = int(seed)
            index.train(np.ascontiguousarray(sample))
            index.add(self.items)
        self.index = index
        self._exact: ExactIndex | None = None

    def describe(self) -> dict[str, Any]:
        """Index parameters (logged at load and printed by the benchmark)."""
        out: dict[str, Any] = {"kind": self.kind, "method": self.method, "n_items": self.n_items, "dim": self.dim}
        out.update(
            {"ef_search": self.ef_search} if self.method == "hnsw" else {"nlist": self.nlist, "nprobe": self.nprobe}
        )
        out.update({"threads": self.threads, "exact_fallbacks": self.exact_fallbacks})
        return out

    def _raw_search(self, q: np.ndarray, fetch: int) -> np.ndarray:
        faiss = _faiss()
        if self.method == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
        else:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        _, idx = self.index.search(q, fetch, params=params)
        return idx

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` with exact scores; rows the ANN cannot fill fall back to the exact scan."""
        q, excl, k = _prepare(queries, self.dim, k, self.n_items, exclude)
        if k == 0:
            return _empty(len(q))
        extra = max((len(e) for e in excl), default=0) if excl is not None else 0
        fetch = min(self.n_items, k + extra)
        cand = self._raw_search(q, fetch)
        idx = np.empty((len(q), k), dtype=np.int64)
        out = np.empty((len(q), k), dtype=np.float32)
        short: list[int] = []
        for row in range(len(q)):
            c = cand[row]
            c = c[c >= 0]
            if excl is not None and len(excl[row]):
                c = c[~np.isin(c, excl[row])]
            if len(c) < k:
                short.append(row)
                continue
            s = self.items[c] @ q[row]
            best = np.argsort(-s, kind="stable")[:k]
            idx[row], out[row] = c[best], s[best]
        if short:
            with self._lock:
                self.exact_fallbacks += len(short)
                if self._exact is None:
                    self._exact = ExactIndex.over_augmented(self.items)
            rows = np.asarray(short)
            sub_excl = [excl[r] for r in short] if excl is not None else None
            idx[rows], out[rows] = self._exact.search(q[rows, :-1], k, sub_excl)
        return idx, out


def build_index(
    item_matrix: np.ndarray,
    item_bias: np.ndarray | None = None,
    kind: str = "auto",
    exact_max_items: int = 200_000,
    **opts: Any,
) -> ExactIndex | FaissIndex:
    """Index over the item side: ``exact``, ``faiss``, or ``auto`` (exact up to ``exact_max_items`` items).

    ``opts`` go to the chosen index (``batch_size`` for exact; ``method``, ``ef_search``, ``nprobe``,
    ``threads``, ... for faiss — see :class:`FaissIndex`); options meant for the other kind are ignored.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not an index kind; use one of {KINDS}")
    n_items = len(item_matrix)
    if kind == "auto":
        kind = "exact" if n_items <= exact_max_items else "faiss"
    if kind == "exact":
        return ExactIndex(item_matrix, item_bias, **{k: v for k, v in opts.items() if k == "batch_size"})
    faiss_opts = {k: v for k, v in opts.items() if k != "batch_size"}
    return FaissIndex(item_matrix, item_bias, **faiss_opts)
