"""Offline quality of every model on one dataset, next to the published table for that dataset.

``python -m bench.quality [--data ../shared/data/amazon-beauty --format s3rec] [--profile full] [--models a,b]``

Loads and splits the data once, trains each model with the same defaults the CLI uses, evaluates
with ``evaluation.evaluate`` (full ranking, seen items excluded) and prints a markdown table; the
published rows are read from the dataset folder's README table (``../shared/data/README.md``), plus
the later figures that README gives in prose (:data:`PUBLISHED_LATER`). Last lines: whether the
default model (``--model auto``) leads every other measured model on NDCG@10 and HR@10, and the
bench's wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from core.config import PROFILES, load_config
from core.contract import FORMATS, PROTOCOLS
from evaluation.data import TrainData
from models.base import available_models, get_model_class
from training.offline import DEFAULT_MODEL, load_dataset

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
COLUMNS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10")
#: Published full-ranking figures on the same files that the data README states in prose rather than
#: in its table (HR@10 / NDCG@10 only): the eSASRec benchmark (RecSys 2025), tuned per dataset on GPUs.
PUBLISHED_LATER: dict[str, list[dict[str, str]]] = {
    "amazon-beauty": [
        {"model": "SASRec + sampled softmax (eSASRec benchmark, 2025)", "hr@10": "0.0921", "ndcg@10": "0.0531"},
        {"model": "eSASRec (LiGR + sampled softmax, 2025)", "hr@10": "0.0928", "ndcg@10": "0.0523"},
        {"model": "DuoRec (eSASRec benchmark, 2025)", "hr@10": "0.0845", "ndcg@10": "0.0443"},
        {"model": "ActionPiece (eSASRec benchmark, 2025)", "hr@10": "0.0775", "ndcg@10": "0.0424"},
    ]
}


def published_table(readme: Path, dataset: str) -> list[dict[str, str]]:
    """Rows of the first markdown table after the ``## <dataset>`` heading of the data README."""
    if not readme.is_file():
        return []
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## ") and dataset in line), None)
    if start is None:
        return []
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.strip().startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    if len(table) < 3:
        return []
    header = [h.lower() for h in table[0]]
    return [dict(zip(header, row, strict=False)) for row in table[2:] if not re.fullmatch(r"-+", row[0])]


def run_all(data: TrainData, names: list[str], profile: str, seed: int, device: str) -> list[dict[str, Any]]:
    """Train and evaluate each model on ``data``; one result dict per model (progress on stderr)."""
    from evaluation.evaluate import evaluate

    results = []
    for name in names:
        model = get_model_class(name)(profile=profile, seed=seed, device=device)
        t0 = time.perf_counter()
        model.fit(data, callback=lambda e, m, n=name: print(f"[quality] {n} epoch {e}: {m}", file=sys.stderr))
        train_seconds = time.perf_counter() - t0
        metrics = evaluate(model, data, split="test", ks=(10, 20))
        results.append(
            {"model": name, "train_seconds": round(train_seconds, 1), "epochs": len(model.history), **metrics}
        )
        print(f"[quality] {name}: {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    return results


def default_model_leads(results: list[dict[str, Any]], default: str = DEFAULT_MODEL) -> str:
    """One line: does ``default`` beat every other measured model on NDCG@10 and HR@10?"""
    ours = next((r for r in results if r["model"] == default), None)
    others = [r for r in results if r["model"] != default]
    if ours is None or not others:
        return f"default model {default}: not compared (needs it and at least one other model)"
    verdicts = []
    for metric in ("ndcg@10", "hr@10"):
        best = max(others, key=lambda r: r.get(metric, float("-inf")))
        lead = ours[metric] - best[metric]
        verdicts.append(f"{metric} {ours[metric]:.4f} vs best other {best['model']} {best[metric]:.4f} ({lead:+.4f})")
    beats = all(ours[m] > max(r[m] for r in others) for m in ("ndcg@10", "hr@10"))
    return f"default model {default} {'beats' if beats else 'does NOT beat'} every other model: " + "; ".join(verdicts)


def render(results: list[dict[str, Any]], published: list[dict[str, str]]) -> str:
    """Markdown table: measured rows, then the published rows (same metric columns where given)."""
    head = "| source | model | " + " | ".join(COLUMNS) + " | train s |"
    out = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in results:
        cells = " | ".join(f"{r.get(c, float('nan')):.4f}" for c in COLUMNS)
        out.append(f"| measured | {r['model']} | {cells} | {r['train_seconds']:.0f} |")
    for row in published:
        cells = " | ".join(row.get(c, "") for c in COLUMNS)
        out.append(f"| published | {row.get('model', '?')} | {cells} | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: ../shared/data/amazon-beauty for s3rec")
    parser.add_argument("--format", default="s3rec", choices=FORMATS)
    parser.add_argument("--protocol", default="leave-one-out", choices=PROTOCOLS)
    parser.add_argument("--profile", default="full", choices=PROFILES)
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json-out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cfg = load_config()
    names = [n for n in args.models.split(",") if n] or available_models()
    if args.data is None and args.format == "s3rec":
        args.data = str(SHARED_DATA / "amazon-beauty")
    events, items = load_dataset(args.format, args.data)
    data = TrainData.from_events(events, items, protocol=args.protocol, cfg=cfg)
    results = run_all(data, names, args.profile, cfg.train.seed, args.device)
    readme = Path(args.data).parent / "README.md" if args.data else SHARED_DATA / "README.md"
    dataset = Path(args.data).name if args.data else ""
    print(
        f"{dataset or args.format}: {data.n_users} users, {data.n_items} items, protocol {args.protocol}, profile {args.profile}"
    )
    published = [*published_table(readme, dataset), *PUBLISHED_LATER.get(dataset, [])] if dataset else []
    print(render(results, published))
    print(default_model_leads(results))
    print(f"wall time: {time.perf_counter() - started:.0f} s (load, split, train and evaluate every model)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
