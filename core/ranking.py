"""The one top-K ranking primitive shared by the models, offline evaluation and serving.

Offline metrics and served lists rank with the same function, so a tie or a -inf is treated the
same way on both sides.
"""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k (indices int64, scores float32), best first.

    ``torch.topk`` rather than numpy's argpartition: 3-5× faster on one 100k-item row (the serving hot
    path) and it does not degrade on the many ties of popularity-like scores (evaluation).
    """
    import torch

    k = max(0, min(k, scores.shape[1]))
    values, idx = torch.topk(torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), k, dim=1)
    return idx.numpy().astype(np.int64), values.numpy()
