"""Training speed per model: seconds per epoch on CPU and, when CUDA is present, the GPU/CPU ratio.

``python -m bench.train_speed [--data ../shared/data/amazon-beauty --format s3rec] [--epochs 2] [--models a,b]``

Each model trains ``--epochs`` epochs (early stopping off, a small validation sample) with its
``full`` defaults; an epoch's time is the gap between two epoch callbacks (training plus the
validation pass). One-shot models (kNN, content, popularity) report their whole fit as one epoch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

import torch

from bench.quality import SHARED_DATA
from core.config import load_config
from core.contract import FORMATS
from evaluation.data import TrainData
from models.base import available_models, get_model_class
from training.offline import load_dataset


def epoch_seconds(name: str, data: TrainData, device: str, epochs: int, seed: int) -> dict[str, Any]:
    """Median seconds per epoch of ``name`` on ``device`` (and the epochs it ran)."""
    klass = get_model_class(name)
    defaults = klass.defaults["full"]
    overrides: dict[str, Any] = {}
    if "epochs" in defaults:
        overrides["epochs"] = epochs
    if "patience" in defaults:
        overrides["patience"] = epochs + 1
    if "val_users" in defaults:
        overrides["val_users"] = 1000
    model = klass(profile="full", seed=seed, device=device, **overrides)
    stamps = [time.perf_counter()]
    model.fit(data, callback=lambda e, m: stamps.append(time.perf_counter()))
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps)) or [time.perf_counter() - stamps[0]]
    return {"model": name, "device": device, "epochs": len(gaps), "s_per_epoch": round(gaps[len(gaps) // 2], 3)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: ../shared/data/amazon-beauty for s3rec")
    parser.add_argument("--format", default="s3rec", choices=FORMATS)
    parser.add_argument("--protocol", default="leave-one-out")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    args = parser.parse_args(argv)
    if args.data is None and args.format == "s3rec":
        args.data = str(SHARED_DATA / "amazon-beauty")
    cfg = load_config()
    events, items = load_dataset(args.format, args.data)
    data = TrainData.from_events(events, items, protocol=args.protocol, cfg=cfg)
    names = [n for n in args.models.split(",") if n] or available_models()
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rows = []
    for name in names:
        per_device = {d: epoch_seconds(name, data, d, args.epochs, cfg.train.seed) for d in devices}
        row: dict[str, Any] = {"model": name, "cpu_s_per_epoch": per_device["cpu"]["s_per_epoch"]}
        if "cuda" in per_device:
            row["cuda_s_per_epoch"] = per_device["cuda"]["s_per_epoch"]
            row["gpu_cpu_ratio"] = round(row["cuda_s_per_epoch"] / max(row["cpu_s_per_epoch"], 1e-9), 3)
        rows.append(row)
        print(f"[train_speed] {json.dumps(row)}", file=sys.stderr, flush=True)
    print(f"{data.n_users} users, {data.n_items} items, torch threads {torch.get_num_threads()}")
    header = "| model | CPU s/epoch |" + (" CUDA s/epoch | GPU/CPU |" if "cuda" in devices else "")
    print(header)
    print("|---|---|" + ("---|---|" if "cuda" in devices else ""))
    for r in rows:
        extra = f" {r['cuda_s_per_epoch']:.3f} | {r['gpu_cpu_ratio']:.3f} |" if "cuda_s_per_epoch" in r else ""
        print(f"| {r['model']} | {r['cpu_s_per_epoch']:.3f} |{extra}")
    return rows


if __name__ == "__main__":
    main()
