"""Torch helpers shared by the neural models: device choice, seeding, progress bars, mixed precision,
early stopping on a validation sample."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:
    from evaluation.data import TrainData
    from models.base import Recommender

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda")


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    pref = (preference or "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {preference!r} asked for but no CUDA device is visible; set RECSYS_DEVICE=auto or cpu"
            )
        return torch.device(pref)
    if pref == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of {DEVICES}, got {preference!r}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on stderr (hidden when stderr is not a terminal, so logs stay readable)."""
    return iter(tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=None, mininterval=1.0))


def autocast_context(device: torch.device) -> Any:
    """Mixed precision (bf16 autocast) on CUDA; a no-op context on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EarlyStopping:
    """Track the best validation score and a copy of the weights that reached it."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, score: float, epoch: int, module: nn.Module) -> None:
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})
        else:
            self.bad_epochs += 1

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, module: nn.Module) -> None:
        """Load the best weights back (no-op when no validation score was recorded)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


def validation_users(data: TrainData, n_users: int, seed: int) -> np.ndarray | None:
    """A seeded sample of at most ``n_users`` validation users for early stopping (None: no valid split)."""
    if not data.valid or n_users <= 0:
        return None
    users = np.array(sorted(data.valid), dtype=np.int64)
    if len(users) <= n_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=n_users, replace=False))


def validation_ndcg(model: Recommender, data: TrainData, users: np.ndarray) -> float:
    """NDCG@10 on ``data.valid`` for ``users`` with the project's evaluator (full ranking, train excluded)."""
    from evaluation.evaluate import evaluate

    return float(evaluate(model, data, split="valid", ks=(10,), users=users)["ndcg@10"])
