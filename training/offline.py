"""Offline evaluation CLI: load a dataset, train one model, rank every item, print one JSON line.

``python -m models.offline --data PATH --format s3rec --protocol leave-one-out --model auto --profile full``

Progress goes to stderr; the last line on stdout is the JSON result (HR/Recall/NDCG/MRR at 10 and
20, catalogue coverage, intra-list diversity, novelty, train_seconds, model). ``--topk-out`` writes
``user_id,rank,item_id`` (top 20, rank from 1) for every test user in the dataset's own ids.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import PROFILES, load_config
from core.contract import FORMATS, PROTOCOLS
from evaluation.data import TrainData
from models.base import available_models, get_model_class

#: The project's default model (``--model auto``).
DEFAULT_MODEL = "sasrec"
TOPK_OUT = 20


def resolve_model(name: str) -> str:
    """``auto`` → the default model; any other name must be registered."""
    name = DEFAULT_MODEL if name == "auto" else name
    if name not in available_models():
        raise ValueError(f"--model {name!r} is unknown; choose one of {available_models()} or 'auto'")
    return name


def simulate_events(
    folder: Path, n_users: int, n_items: int, days: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Simulate a shop into ``folder`` (a lake root) and read its landing zone back as contract frames."""
    from jobs.loaders import read_events
    from jobs.simulator import SimConfig, simulate_to_landing

    cfg = SimConfig(n_users=n_users, n_items=n_items, days=days, seed=seed)
    simulate_to_landing(cfg, folder)
    return read_events(folder / "landing")


def load_dataset(
    fmt: str,
    data: str | None,
    sim_users: int = 5000,
    sim_items: int = 2000,
    sim_days: int = 30,
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Contract ``(events, items)`` for ``fmt``; ``simulated`` without ``data`` simulates a shop in a temp dir."""
    from jobs.loaders import read_events, read_source

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is unknown; use one of {FORMATS}")
    if fmt == "simulated":
        if data is None:
            with tempfile.TemporaryDirectory(prefix="mercato-sim-") as tmp:
                return simulate_events(Path(tmp), sim_users, sim_items, sim_days, seed)
        root = Path(data)
        return read_events(root / "landing" if (root / "landing").is_dir() else root)
    if data is None:
        raise ValueError(f"--data is required for --format {fmt} (only 'simulated' can generate its own data)")
    return read_source(data, fmt)


def write_topk_csv(lists: dict[str, list[str]], path: str | Path) -> int:
    """Write ``user_id,rank,item_id`` rows (rank from 1); returns the number of rows."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "rank", "item_id"])
        for user, items in lists.items():
            for rank, item in enumerate(items, start=1):
                writer.writerow([user, rank, item])
                rows += 1
    return rows


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_offline(
    fmt: str,
    data: str | None,
    protocol: str,
    model: str = "auto",
    profile: str = "full",
    device: str = "auto",
    topk_out: str | None = None,
    seed: int | None = None,
    sim_users: int = 5000,
    sim_items: int = 2000,
    sim_days: int = 30,
) -> dict[str, Any]:
    """Load → ``TrainData.from_events`` → fit (progress on stderr) → ``evaluate`` on test; the result dict."""
    from evaluation.evaluate import evaluate

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {protocol!r} is unknown; use one of {PROTOCOLS}")
    if profile not in PROFILES:
        raise ValueError(f"--profile {profile!r} is unknown; use one of {PROFILES}")
    cfg = load_config()
    seed = cfg.train.seed if seed is None else seed
    name = resolve_model(model)
    t0 = time.perf_counter()
    events, items = load_dataset(fmt, data, sim_users, sim_items, sim_days, seed)
    train_data = TrainData.from_events(events, items, protocol=protocol, cfg=cfg)
    load_seconds = time.perf_counter() - t0
    if not train_data.test:
        raise ValueError(
            f"no test users after the {protocol} split ({train_data.n_users} users): "
            f"each needs at least {cfg.split.min_user_items} distinct items (leave-one-out) or recent data (temporal)"
        )
    print(
        f"[offline] {fmt}: {train_data.n_users} users, {train_data.n_items} items, "
        f"{train_data.train.nnz} train interactions, {len(train_data.test)} test users; training {name} ({profile})",
        file=sys.stderr,
    )

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"[offline] {name} epoch {epoch}: {shown}", file=sys.stderr, flush=True)

    recommender = get_model_class(name)(profile=profile, seed=seed, device=device)
    t1 = time.perf_counter()
    recommender.fit(train_data, callback=log_epoch)
    train_seconds = time.perf_counter() - t1
    lists: dict[str, list[str]] = {}
    t2 = time.perf_counter()
    metrics = evaluate(recommender, train_data, split="test", ks=(10, TOPK_OUT), topk_out=lists)
    eval_seconds = time.perf_counter() - t2
    result: dict[str, Any] = {k: _finite(float(v)) for k, v in metrics.items()}
    result.update(
        {
            "model": name,
            "profile": profile,
            "format": fmt,
            "protocol": protocol,
            "device": getattr(recommender, "device_used", "cpu"),
            "n_items": train_data.n_items,
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "load_seconds": round(load_seconds, 3),
            "epochs": len(recommender.history),
            "best_epoch": getattr(recommender, "best_epoch", None),
        }
    )
    if topk_out:
        result["topk_rows"] = write_topk_csv(lists, topk_out)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.offline", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset file or folder (optional for --format simulated)")
    parser.add_argument("--format", default="events", choices=FORMATS)
    parser.add_argument("--protocol", default="leave-one-out", choices=PROTOCOLS)
    parser.add_argument("--model", default="auto", help=f"model name or 'auto' (= {DEFAULT_MODEL})")
    parser.add_argument("--profile", default="full", choices=PROFILES)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--topk-out", default=None, help="write user_id,rank,item_id (top 20) for every test user")
    parser.add_argument("--seed", type=int, default=None, help="default: config [train].seed")
    parser.add_argument(
        "--sim-users", type=int, default=5000, help="simulated shop size (--format simulated, no --data)"
    )
    parser.add_argument("--sim-items", type=int, default=2000)
    parser.add_argument("--sim-days", type=int, default=30)
    parser.add_argument("--list-models", action="store_true", help="print the model names and exit")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    if args.list_models:
        print("\n".join(available_models()))
        return None
    result = run_offline(
        args.format,
        args.data,
        args.protocol,
        model=args.model,
        profile=args.profile,
        device=args.device,
        topk_out=args.topk_out,
        seed=args.seed,
        sim_users=args.sim_users,
        sim_items=args.sim_items,
        sim_days=args.sim_days,
    )
    print(json.dumps(result, sort_keys=True), flush=True)
    return result


if __name__ == "__main__":
    main()
