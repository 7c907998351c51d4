"""Train one model on one gold partition inside one MLflow run, and register it.

Called by the DAG's ``train_<model>`` tasks and the pipeline runner; the returned dict is what
``models.promote.compare_and_promote`` and ``models.registry.publish_champion`` consume.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from core.config import load_config
from core.settings import Settings, get_settings
from models import tracking
from models.base import get_model_class
from models.data import TrainData
from models.evaluate import evaluate
from models.popularity import fallback_lists

FALLBACK_FILE = "fallback.json"
HISTORY_FILE = "history.npz"
ITEMS_FILE = "items.json"
FALLBACK_SIZE = 500


def _iso(day: dt.date | str) -> str:
    return day.isoformat() if isinstance(day, dt.date) else str(day)


def export_dir(settings: Settings, model_name: str, run_id: str) -> Path:
    """Where a run's exported model lives on this machine (kept: promotion publishes from it)."""
    return settings.home.absolute() / "artifacts" / model_name / run_id


def train_model(
    model_name: str,
    gold_dir: str | os.PathLike[str],
    run_date: dt.date | str,
    profile: str = "quick",
    settings: Settings | None = None,
    cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit ``model_name`` on ``gold_dir``'s train split, evaluate it on test, log everything to MLflow
    and register a version of ``settings.mlflow_registered_model``.

    Returns ``model_name, run_id, model_version, metrics`` (test, names with '@'), ``artifact_dir``,
    ``train_seconds``, ``run_date``, ``gold_dir``, ``data_window`` {start, end}, ``profile``, ``params``.
    """
    settings = settings or get_settings()
    cfg = cfg if cfg is not None else load_config()
    run_day = _iso(run_date)
    data = TrainData.from_gold(gold_dir, cfg)
    klass = get_model_class(model_name)
    model = klass(profile=profile, seed=int(cfg["train"]["seed"]), device=settings.device)
    ks = tuple(int(k) for k in cfg["train"]["k"])
    window = {"start": data.meta.get("data_start"), "end": data.meta.get("data_end")}

    tracking.configure(settings)
    with mlflow.start_run(run_name=f"{model_name}-{run_day}") as run:
        run_id = run.info.run_id
        mlflow.set_tags(
            {
                "model_name": model_name,
                "run_date": run_day,
                "profile": profile,
                "data_start": str(window["start"]),
                "data_end": str(window["end"]),
                "gold_dir": str(gold_dir),
            }
        )
        mlflow.log_params({**model.params, "profile": profile, "model_name": model_name})
        mlflow.log_params(
            {
                "protocol": data.meta.get("protocol", cfg["split"]["protocol"]),
                "n_users": data.n_users,
                "n_items": data.n_items,
                "n_train": data.train.nnz,
                "n_valid_users": len(data.valid),
                "n_test_users": len(data.test),
            }
        )
        curve: list[dict[str, float]] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            curve.append({"epoch": float(epoch), **metrics})
            mlflow.log_metrics(tracking.finite_metrics(metrics), step=epoch)

        start = time.perf_counter()
        model.fit(data, callback=on_epoch)
        train_seconds = time.perf_counter() - start
        metrics = evaluate(model, data, split="test", ks=ks)
        mlflow.log_metrics({**tracking.finite_metrics(metrics), "train_seconds": train_seconds})
        if hasattr(model, "device_used"):
            mlflow.set_tag("device", model.device_used)

        with tempfile.TemporaryDirectory() as tmp:
            png = tracking.save_training_curve(curve, Path(tmp) / "training_curve.png")
            if png is not None:
                mlflow.log_artifact(str(png), artifact_path="plots")
            (Path(tmp) / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
            mlflow.log_artifact(str(Path(tmp) / "metrics.json"))

        out = export_dir(settings, model_name, run_id)
        model.export(out)
        write_serving_files(out, data, gold_dir)
        _, version = tracking.log_recommender(
            out,
            settings.mlflow_registered_model,
            tags={"model_name": model_name, "run_date": run_day, "artifact_dir": str(out)},
        )
    return {
        "model_name": model_name,
        "run_id": run_id,
        "model_version": version,
        "metrics": _json_safe(metrics),
        "artifact_dir": str(out),
        "train_seconds": train_seconds,
        "run_date": run_day,
        "gold_dir": str(Path(gold_dir)),
        "data_window": window,
        "profile": profile,
        "params": dict(model.params),
    }


def write_serving_files(out: Path, data: TrainData, gold_dir: str | os.PathLike[str]) -> None:
    """Files the scoring API reads next to the model: the cold-start lists, each known user's full
    history and the item metadata (formats in docs/ARCHITECTURE.md, "Artifact files")."""
    (out / FALLBACK_FILE).write_text(json.dumps(fallback_lists(data, n=FALLBACK_SIZE)))
    indptr, indices = full_histories(data)
    with open(out / HISTORY_FILE, "wb") as fh:
        np.savez(fh, indptr=indptr, indices=indices)
    (out / ITEMS_FILE).write_text(json.dumps(item_metadata(data, Path(gold_dir) / "items")))


def full_histories(data: TrainData) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of every user's items in time order: train sequence, then valid, then test.

    At serving time everything up to now has happened, so a user's most recent items (the ones a
    sequential encoder weighs most) include the held-out ones.
    """
    rows: list[np.ndarray] = []
    for user in range(data.n_users):
        parts = [np.asarray(data.sequences[user], dtype=np.int64)]
        for split in (data.valid, data.test):
            if user in split:
                parts.append(np.asarray(split[user], dtype=np.int64))
        rows.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)
    return indptr, indices


def item_metadata(data: TrainData, items_dir: Path) -> list[dict[str, Any]]:
    """Item metadata in the model's item order: ``item_id, category, brand, price, available``."""
    ids = [str(i) for i in data.item_ids]
    frame = pd.read_parquet(items_dir) if items_dir.exists() else pd.DataFrame({"item_id": ids})
    frame = frame.assign(item_id=frame["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    frame = frame.reindex(ids)
    defaults = {"category": None, "brand": None, "price": None, "available": True}
    columns = {
        col: (frame[col].tolist() if col in frame.columns else [default] * len(ids))
        for col, default in defaults.items()
    }
    return [
        {"item_id": item, **{col: _plain(columns[col][n], default) for col, default in defaults.items()}}
        for n, item in enumerate(ids)
    ]


def _plain(value: Any, default: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return default
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN/inf become None so the result is valid JSON (Airflow XCom, reports)."""
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in metrics.items()}
