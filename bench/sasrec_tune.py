"""Validation-only tuning runs of SASRec: one JSON line per configuration (never looks at test).

``python -m bench.sasrec_tune --data ../shared/data/amazon-beauty --format s3rec --set hidden=128 --set lr=1e-3``

Trains SASRec with the given overrides of the full profile and reports NDCG@10 / HR@10 on the whole
validation split (the second-to-last item of each user) and the wall time. ``--shift`` drops each
user's test item altogether and moves the split one step back (last train item → validation,
validation item → a held-out target reported as ``holdout_*``): a second, test-free split on which
choices that *use* the validation items (e.g. training on them at the end) can themselves be validated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.config import load_config
from core.contract import FORMATS
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.sasrec import SASRec
from training.offline import load_dataset


def shifted(data: TrainData) -> TrainData:
    """The split one step earlier: train = train minus its last item, valid = that item, test = valid."""
    seqs, valid, test = [], {}, {}
    for u, seq in enumerate(data.sequences):
        if int(u) in data.valid and len(seq) >= 2:
            seqs.append(seq[:-1])
            valid[u], test[u] = seq[-1:], data.valid[int(u)]
        else:
            seqs.append(seq)
    rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    cols = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    train = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(data.n_users, data.n_items))
    return TrainData(data.user_ids, data.item_ids, train, seqs, valid, test, data.item_features, dict(data.meta))


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.sasrec_tune", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--format", default="s3rec", choices=FORMATS)
    parser.add_argument("--profile", default="full")
    parser.add_argument("--set", action="append", default=[], help="param=value (JSON value), repeatable")
    parser.add_argument("--shift", action="store_true", help="validate on the split one step earlier (see doc)")
    parser.add_argument("--label", default="")
    parser.add_argument("--log", default=None, help="append the result line to this file")
    args = parser.parse_args(argv)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    t0 = time.perf_counter()
    events, items = load_dataset(args.format, args.data)
    data = TrainData.from_events(events, items, protocol="leave-one-out", cfg=load_config())
    if args.shift:
        data = shifted(data)
    load_s = time.perf_counter() - t0

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"[tune] epoch {epoch} {time.perf_counter() - t1:.0f}s: {shown}", file=sys.stderr, flush=True)

    model = SASRec(profile=args.profile, **overrides)
    t1 = time.perf_counter()
    model.fit(data, callback=log_epoch)
    fit_s = time.perf_counter() - t1
    valid = evaluate(model, data, split="valid", ks=(10, 20))
    result: dict[str, Any] = {
        "label": args.label,
        "data": Path(args.data).name if args.data else args.format,
        "shift": args.shift,
        "overrides": overrides,
        "valid_ndcg@10": round(valid["ndcg@10"], 5),
        "valid_hr@10": round(valid["hr@10"], 5),
        "valid_ndcg@20": round(valid["ndcg@20"], 5),
        "epochs": len(model.history),
        "best_epoch": getattr(model, "best_epoch", None),
        "fit_s": round(fit_s, 1),
        "load_s": round(load_s, 1),
    }
    if args.shift:  # the held-out step is the real validation item: still no test item involved
        held = evaluate(model, data, split="test", ks=(10,))
        result["holdout_ndcg@10"], result["holdout_hr@10"] = round(held["ndcg@10"], 5), round(held["hr@10"], 5)
    line = json.dumps(result)
    print(line, flush=True)
    if args.log:
        with open(args.log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
