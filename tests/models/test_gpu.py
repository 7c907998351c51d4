"""The neural models on CUDA: they train there, learn the planted pattern, and the artifact they export
loads and serves on a CPU-only box with the same rankings. Skipped where no CUDA device is visible
(CI has none); run them on a GPU machine with ``pytest -m gpu``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evaluation.evaluate import evaluate
from models.base import Recommender, get_model_class
from tests.models.test_knn import planted_data, popularity_hr

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible)"),
]

CASES: dict[str, dict[str, Any]] = {
    "bpr": {"dim": 16, "epochs": 60, "batch_size": 32, "lr": 0.02, "l2": 1e-2, "patience": 0},
    "two_tower": {
        "dim": 32,
        "epochs": 30,
        "patience": 30,
        "batch_size": 32,
        "n_negatives": 16,
        "samples_per_user": 4,
        "lr": 1e-2,
        "max_minutes": 5.0,
    },
    "sasrec": {
        "hidden": 32,
        "dropout": 0.1,
        "lr": 5e-3,
        "epochs": 40,
        "patience": 40,
        "batch_size": 32,
        "max_len": 10,
        "max_minutes": 5.0,
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_on_cuda_and_serves_on_cpu(name: str, tmp_path: Path) -> None:
    data = planted_data()
    model = get_model_class(name)(profile="quick", device="cuda", **CASES[name]).fit(data)
    assert str(getattr(model, "device_used", "")).startswith("cuda"), f"{name} did not train on CUDA"
    metrics = evaluate(model, data, ks=(10,))
    assert metrics["hr@10"] > popularity_hr(data, 10) + 0.2, metrics

    loaded = Recommender.load(model.export(tmp_path / name))
    assert loaded.params["device"] == "cpu", "an artifact trained on CUDA must load on a CPU-only server"
    users = np.array(sorted(data.test))
    hists = [np.concatenate([data.sequences[u], data.valid[u]]) for u in users]
    gpu_top, gpu_scores = model.recommend(users, hists, k=10)
    cpu_top, cpu_scores = loaded.recommend(users, hists, k=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(gpu_top.tolist(), cpu_top.tolist(), strict=True)])
    assert overlap >= 0.95, f"CPU rankings drift from the CUDA ones: top-10 overlap {overlap:.3f}"
    np.testing.assert_allclose(np.sort(cpu_scores, axis=1), np.sort(gpu_scores, axis=1), rtol=1e-3, atol=1e-3)
