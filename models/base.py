"""One interface for every recommender, and the one scorer that ranks any of them.

At serving time each model is a **user encoder** (``user_vectors``: user index and/or recent history
→ vector) plus an **item side** (``item_matrix`` and optional ``item_bias``). A score is
``user_vector · item_vector + item_bias``; popularity is the 1-d case, kNN a sparse neighbour sum,
BPR/two-tower/SASRec dense embeddings. Models implement ``_fit``, ``user_vectors``, ``item_matrix``
and ``_state``/``_restore``; export/load, scoring and top-K are shared here.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from core.ranking import top_k
from evaluation.data import TrainData

FORMAT_VERSION = 1
EpochCallback = Callable[[int, dict[str, float]], None]
UNKNOWN_USER = -1


class Recommender(ABC):
    """Base class: ``fit`` / ``recommend`` / ``export`` / ``load``.

    ``params`` holds every hyperparameter (logged to MLflow, written to the artifact).
    ``user_ids``/``item_ids`` are the external ids the model was trained on.
    """

    name: ClassVar[str] = "base"
    #: Defaults per profile ("quick" for tests and ``make run``, "full" for benchmarks).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "full": {}}

    def __init__(self, profile: str = "full", **params: Any) -> None:
        base = dict(self.defaults.get("full", {}))
        base.update(self.defaults.get(profile, {}))
        unknown = set(params) - set(base) - {"seed", "device"}
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(base)}")
        base.setdefault("seed", 42)
        base.setdefault("device", "auto")
        base.update(params)
        self.params: dict[str, Any] = base
        self.user_ids: np.ndarray = np.array([], dtype=object)
        self.item_ids: np.ndarray = np.array([], dtype=object)
        self.history: list[dict[str, float]] = []

    # ---- training -------------------------------------------------------------------------
    def fit(self, data: TrainData, callback: EpochCallback | None = None) -> Recommender:
        """Train on ``data.train``/``data.sequences`` (``data.valid`` may be used for early stopping)."""
        self.user_ids = np.asarray(data.user_ids, dtype=object)
        self.item_ids = np.asarray(data.item_ids, dtype=object)
        self._fit(data, callback)
        return self

    @abstractmethod
    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None: ...

    # ---- scoring --------------------------------------------------------------------------
    @abstractmethod
    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Encode users: ``users`` are internal indices (``UNKNOWN_USER`` for a user the model never
        saw), ``histories`` their recent item indices, oldest first. Returns (len(users), dim)."""

    @abstractmethod
    def item_matrix(self) -> np.ndarray | sp.csr_matrix:
        """Item side, (n_items, dim): dense, or sparse where the item side is (neighbourhood models)."""

    def item_bias(self) -> np.ndarray | None:
        return None

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores over all items, (len(users), n_items), float32."""
        u = np.asarray(self.user_vectors(np.asarray(users), histories), dtype=np.float32)
        items = self.item_matrix()
        if sp.issparse(items):
            s = np.asarray((sp.csr_matrix(items, dtype=np.float32) @ u.T).T, dtype=np.float32)
        else:
            s = u @ np.asarray(items, dtype=np.float32).T
        b = self.item_bias()
        if b is not None:
            s += b[None, :].astype(np.float32)
        return s

    def recommend(
        self,
        users: np.ndarray,
        histories: Sequence[np.ndarray],
        k: int,
        exclude_seen: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores per user, best first; history items excluded if asked."""
        scores = self.score(users, histories)
        if exclude_seen:
            for row, hist in enumerate(histories):
                if len(hist):
                    scores[row, np.asarray(hist, dtype=np.int64)] = -np.inf
        return top_k(scores, k)

    # ---- persistence ----------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays needed to rebuild the fitted model."""

    @abstractmethod
    def _restore(self, state: dict[str, np.ndarray]) -> None: ...

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model to a directory: ``model.json``, ``ids.json``, ``arrays.npz``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": self.name,
            "format_version": FORMAT_VERSION,
            "params": _jsonable(self.params),
            "n_users": len(self.user_ids),
            "n_items": len(self.item_ids),
        }
        (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (out / "ids.json").write_text(
            json.dumps({"user_ids": [str(u) for u in self.user_ids], "item_ids": [str(i) for i in self.item_ids]})
        )
        with open(out / "arrays.npz", "wb") as fh:
            np.savez(fh, **self._state())  # type: ignore[arg-type]
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recommender:
        """Rebuild a model exported by :meth:`export` (dispatches on ``model.json``'s name)."""
        src = Path(path)
        meta = json.loads((src / "model.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{src}: unsupported artifact format_version {meta.get('format_version')}")
        klass = cls if cls.name == meta["name"] else get_model_class(meta["name"])
        params = dict(meta["params"])
        params["device"] = "cpu" if params.get("device") == "cuda" else params.get("device", "auto")
        model = klass.__new__(klass)
        Recommender.__init__(model, profile="full")
        model.params = params
        ids = json.loads((src / "ids.json").read_text())
        model.user_ids = np.asarray(ids["user_ids"], dtype=object)
        model.item_ids = np.asarray(ids["item_ids"], dtype=object)
        with np.load(src / "arrays.npz", allow_pickle=False) as npz:
            model._restore({k: npz[k] for k in npz.files})
        return model


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


_REGISTRY: dict[str, type[Recommender]] = {}


def register(klass: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model available by name (CLI, DAG, artifact loading)."""
    _REGISTRY[klass.name] = klass
    return klass


def get_model_class(name: str) -> type[Recommender]:
    import models.zoo  # noqa: F401  (imports every model module so they register)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}") from None


def available_models() -> list[str]:
    import models.zoo  # noqa: F401

    return sorted(_REGISTRY)
