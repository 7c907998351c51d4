"""The offline evaluation CLI end to end: real loaders, real split, real training, one JSON line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, require_shared
from training.offline import main, resolve_model, write_topk_csv

METRIC_KEYS = {f"{m}@{k}" for m in ("hr", "recall", "ndcg", "mrr") for k in (10, 20)} | {
    "coverage@10",
    "diversity@10",
    "novelty@10",
    "train_seconds",
    "model",
}


def run_cli(*args: str, timeout: int = 600) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "models.offline", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last), proc.stderr


def planted_events(tmp_path: Path) -> Path:
    """Events CSV: 60 users each buying 6 consecutive items of one of 3 item rings (strong pattern)."""
    rng = np.random.default_rng(1)
    rows = []
    for u in range(60):
        g, start = u % 3, int(rng.integers(8))
        for t in range(6):
            item = f"g{g}-{(start + t) % 8}"
            ts = pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(minutes=10 * t + u)
            rows.append({"user_id": f"user{u}", "item_id": item, "event_type": "purchase", "ts": ts.isoformat()})
    path = tmp_path / "events.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_list_models(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--list-models"])
    names = capsys.readouterr().out.split()
    assert {"sasrec", "item_knn", "user_knn", "content", "two_tower", "popularity"} <= set(names)


def test_resolve_model_auto_and_unknown() -> None:
    assert resolve_model("auto") == "sasrec"
    with pytest.raises(ValueError, match="unknown"):
        resolve_model("nope")


def test_write_topk_csv(tmp_path: Path) -> None:
    rows = write_topk_csv({"u1": ["a", "b"], "u2": ["c"]}, tmp_path / "top.csv")
    assert rows == 3
    assert (tmp_path / "top.csv").read_text().splitlines() == ["user_id,rank,item_id", "u1,1,a", "u1,2,b", "u2,1,c"]


@pytest.mark.slow
def test_cli_events_item_knn_beats_popularity_and_writes_topk(tmp_path: Path) -> None:
    events = planted_events(tmp_path)
    out = tmp_path / "top.csv"
    knn, _ = run_cli(
        "--data", str(events), "--format", "events", "--model", "item_knn", "--profile", "quick", "--topk-out", str(out)
    )
    pop, _ = run_cli("--data", str(events), "--format", "events", "--model", "popularity", "--profile", "quick")
    assert set(knn) >= METRIC_KEYS
    assert knn["model"] == "item_knn" and knn["n_users"] == 60
    assert knn["ndcg@10"] > pop["ndcg@10"] + 0.2
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["user_id", "rank", "item_id"]
    per_user = pd.DataFrame(rows).groupby("user_id")["rank"].apply(lambda r: sorted(map(int, r)))
    assert len(per_user) == 60
    assert all(ranks == list(range(1, len(ranks) + 1)) for ranks in per_user)
    assert max(len(r) for r in per_user) <= 20
    assert all(r["item_id"].startswith("g") and r["user_id"].startswith("user") for r in rows)


@pytest.mark.slow
def test_cli_simulated_default_model_quick(tmp_path: Path) -> None:
    result, stderr = run_cli(
        "--format",
        "simulated",
        "--sim-users",
        "300",
        "--sim-items",
        "120",
        "--sim-days",
        "8",
        "--model",
        "auto",
        "--profile",
        "quick",
        "--device",
        "cpu",
    )
    assert result["model"] == "sasrec"
    assert set(result) >= METRIC_KEYS
    assert 0.0 <= result["ndcg@10"] <= result["hr@10"] <= result["hr@20"] <= 1.0
    assert result["train_seconds"] > 0
    assert "epoch 1" in stderr


def test_cli_rejects_missing_data_for_files() -> None:
    with pytest.raises(ValueError, match="--data is required"):
        main(["--format", "s3rec", "--model", "popularity"])


@pytest.mark.shared
@pytest.mark.slow
def test_beauty_quick_default_model_beats_popularity() -> None:
    beauty = require_shared("amazon-beauty")
    common = ("--data", str(beauty), "--format", "s3rec", "--protocol", "leave-one-out", "--profile", "quick")
    model, _ = run_cli(*common, "--model", "auto", timeout=900)
    pop, _ = run_cli(*common, "--model", "popularity", timeout=900)
    assert model["n_users"] == pop["n_users"] == 22363
    assert model["ndcg@10"] > pop["ndcg@10"]
    assert model["hr@10"] > pop["hr@10"]
