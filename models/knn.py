"""Neighbourhood collaborative filtering: item-kNN and user-kNN in the user-vector · item-matrix form.

* item-kNN: user vector = recency-weighted indicator of the history (n_items-dim), item matrix =
  item-item similarity (top-``neighbours`` per item kept, so memory is O(n_items · neighbours)).
* user-kNN: user vector = similarity to the train users (top-``neighbours`` kept, n_users-dim), item
  matrix = the train interaction matrix transposed: the score sums the neighbours' histories.

Both keep the sparse matrices internally and override ``score`` with a sparse product; the dense
``user_vectors``/``item_matrix`` give the same numbers for the generic scorer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from evaluation.data import TrainData
from models.base import EpochCallback, Recommender, register

SIMILARITIES = ("cosine", "jaccard")
#: Items per block of the item-item product: bounds the unpruned intermediate to block × n_items.
SIMILARITY_BLOCK_ROWS = 1024


def _check_similarity(name: str, model: str) -> str:
    if name not in SIMILARITIES:
        raise ValueError(f"{model}: similarity must be one of {SIMILARITIES}, got {name!r}")
    return name


def interaction_matrix(train: sp.csr_matrix, binary: bool) -> sp.csr_matrix:
    """The train matrix as float32 CSR, 0/1 when ``binary`` (implicit feedback) else its weights."""
    x = sp.csr_matrix(train, dtype=np.float32, copy=True)
    x.eliminate_zeros()
    if binary:
        x.data[:] = 1.0
    return x


def keep_top_n(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the ``n`` largest entries of each row (ties broken by column index)."""
    mat = sp.csr_matrix(mat)
    indptr, indices, data = [0], [], []
    for row in range(mat.shape[0]):
        lo, hi = mat.indptr[row], mat.indptr[row + 1]
        vals, cols = mat.data[lo:hi], mat.indices[lo:hi]
        if hi - lo > n:
            pick = np.lexsort((cols, -vals))[:n]
            vals, cols = vals[pick], cols[pick]
        indices.append(cols)
        data.append(vals)
        indptr.append(indptr[-1] + len(cols))
    out = sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.asarray(indptr),
        ),
        shape=mat.shape,
    )
    out.sort_indices()
    return out


def pairwise_similarity(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    similarity: str,
    shrink: float,
    left_norm: np.ndarray,
    right_norm: np.ndarray,
) -> sp.csr_matrix:
    """Row-vs-row similarity of two sparse matrices sharing columns (cosine or Jaccard, with shrinkage).

    ``*_norm`` are the rows' L2 norms (cosine) or sizes (Jaccard); shrinkage adds to the denominator,
    damping similarities that rest on few co-occurrences.
    """
    co = sp.csr_matrix(left @ right.T, dtype=np.float32)
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    a, b = left_norm[rows], right_norm[co.indices]
    if similarity == "cosine":
        denom = a * b + shrink
    else:
        denom = a + b - co.data + shrink
    co.data = np.where(denom > 0, co.data / np.maximum(denom, 1e-12), 0.0).astype(np.float32)
    co.eliminate_zeros()
    return co


def _norms(x: sp.csr_matrix, similarity: str) -> np.ndarray:
    if similarity == "cosine":
        return np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel()).astype(np.float32)
    return np.asarray((x > 0).sum(axis=1)).ravel().astype(np.float32)


def history_matrix(histories: Sequence[np.ndarray], n_items: int, recency_decay: float) -> sp.csr_matrix:
    """(len(histories), n_items) CSR: weight ``recency_decay**age`` per item (age 0 = latest), max per item."""
    rows, cols, vals = [], [], []
    for row, hist in enumerate(histories):
        h = np.asarray(hist, dtype=np.int64)
        h = h[(h >= 0) & (h < n_items)]
        if not len(h):
            continue
        w = np.power(recency_decay, np.arange(len(h) - 1, -1, -1, dtype=np.float64)).astype(np.float32)
        rows.append(np.full(len(h), row))
        cols.append(h)
        vals.append(w)
    if not rows:
        return sp.csr_matrix((len(histories), n_items), dtype=np.float32)
    coo = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(histories), n_items)
    )
    out = sp.csr_matrix(coo)
    out.sum_duplicates()  # duplicates summed: repeated items weigh more
    return out


@register
class ItemKNN(Recommender):
    """Item-based CF: score(j) = Σ_{i ∈ history} w_i · sim(i, j), top-``neighbours`` per item."""

    name = "item_knn"
    defaults = {
        "full": {"similarity": "cosine", "shrink": 10.0, "neighbours": 100, "binary": True, "recency_decay": 0.7},
        "quick": {"neighbours": 50},
    }

    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        params = self.params
        sim_name = _check_similarity(str(params["similarity"]), self.name)
        x = interaction_matrix(data.train, bool(params["binary"])).T.tocsr()
        norms = _norms(x, sim_name)
        blocks = []
        step = SIMILARITY_BLOCK_ROWS
        for start in range(0, x.shape[0], step):
            block = pairwise_similarity(
                x[start : start + step], x, sim_name, float(params["shrink"]), norms[start : start + step], norms
            )
            block.setdiag(0.0)
            block.eliminate_zeros()
            blocks.append(keep_top_n(block, int(params["neighbours"])))
        self.sim = sp.csr_matrix(sp.vstack(blocks), dtype=np.float32) if blocks else sp.csr_matrix((0, 0))
        self.history.append({"epoch": 1.0, "neighbour_pairs": float(self.sim.nnz)})
        if callback is not None:
            callback(1, {"loss": 0.0, "neighbour_pairs": float(self.sim.nnz)})

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        h = history_matrix(histories, self.sim.shape[0], float(self.params["recency_decay"]))
        return np.asarray((h @ self.sim).todense(), dtype=np.float32)

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        h = history_matrix(histories, self.sim.shape[0], float(self.params["recency_decay"]))
        return np.asarray(h.todense(), dtype=np.float32)

    def item_matrix(self) -> sp.csr_matrix:
        """Sparse (n_items, n_items) = similarity transposed (``neighbours`` per item, not n_items²)."""
        return sp.csr_matrix(self.sim.T, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return _csr_state("sim", self.sim)

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.sim = _csr_restore("sim", state)


@register
class UserKNN(Recommender):
    """User-based CF: score(j) = Σ_{v ∈ top neighbours} sim(u, v) · x_vj over the train users."""

    name = "user_knn"
    defaults = {
        "full": {"similarity": "cosine", "shrink": 10.0, "neighbours": 200, "binary": True, "recency_decay": 0.9},
        "quick": {"neighbours": 100},
    }

    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        sim_name = _check_similarity(str(self.params["similarity"]), self.name)
        self.x = interaction_matrix(data.train, bool(self.params["binary"]))
        self.norms = _norms(self.x, sim_name)
        self.history.append({"epoch": 1.0, "train_users": float(self.x.shape[0])})
        if callback is not None:
            callback(1, {"loss": 0.0, "train_users": float(self.x.shape[0])})

    def neighbours(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> sp.csr_matrix:
        """(len(users), n_train_users) sparse top-``neighbours`` similarities; a known user is not its own neighbour."""
        params = self.params
        sim_name = str(params["similarity"])
        h = history_matrix(histories, self.x.shape[1], float(params["recency_decay"]))
        sim = pairwise_similarity(h, self.x, sim_name, float(params["shrink"]), _norms(h, sim_name), self.norms)
        rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
        sim.data[sim.indices == np.asarray(users, dtype=np.int64)[rows]] = 0.0
        sim.eliminate_zeros()
        return keep_top_n(sim, int(params["neighbours"]))

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray((self.neighbours(users, histories) @ self.x).todense(), dtype=np.float32)

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.neighbours(users, histories).todense(), dtype=np.float32)

    def item_matrix(self) -> sp.csr_matrix:
        """Sparse (n_items, n_train_users) = interactions transposed."""
        return sp.csr_matrix(self.x.T, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {**_csr_state("x", self.x), "norms": self.norms}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.x = _csr_restore("x", state)
        self.norms = np.asarray(state["norms"], dtype=np.float32)


def _csr_state(prefix: str, mat: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": mat.data.astype(np.float32),
        f"{prefix}_indices": mat.indices.astype(np.int64),
        f"{prefix}_indptr": mat.indptr.astype(np.int64),
        f"{prefix}_shape": np.asarray(mat.shape, dtype=np.int64),
    }


def _csr_restore(prefix: str, state: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(v) for v in state[f"{prefix}_shape"])
    return sp.csr_matrix(
        (state[f"{prefix}_data"], state[f"{prefix}_indices"], state[f"{prefix}_indptr"]), shape=shape, dtype=np.float32
    )
