"""Torch helpers shared by the neural models: device choice, seeding, progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

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
