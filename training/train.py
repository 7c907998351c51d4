"""Train one model on one gold partition inside one MLflow run, and register it.

Called by the DAG's ``train_<model>`` tasks and the pipeline runner; the returned dict is what
``training.promote.compare_and_promote`` and ``core.registry.publish_champion`` consume.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from core import artifacts
from core.config import Config, load_config
from core.reports import write_progress
from core.settings import Settings, get_settings
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.base import get_model_class
from models.popularity import fallback_lists
from training import tracking

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
    cfg: Config | None = None,
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
    model = klass(profile=profile, seed=cfg.train.seed, device=settings.device)
    ks = tuple(cfg.train.k)
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
                "protocol": data.meta.get("protocol", cfg.split.protocol),
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
            progress = {"epoch": len(curve), "epochs": model.params.get("epochs"), "metrics": metrics}
            write_progress(settings.lake, dt.date.fromisoformat(run_day), f"train_{model_name}", progress)

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
            (Path(tmp) / "metrics.json").write_text(json.dumps(tracking.json_safe_metrics(metrics), indent=2))
            mlflow.log_artifact(str(Path(tmp) / "metrics.json"))

        out = export_dir(settings, model_name, run_id)
        model.export(out)
        write_serving_files(out, data, read_gold_items(gold_dir))
        _, version = tracking.log_recommender(
            out,
            settings.mlflow_registered_model,
            tags={"model_name": model_name, "run_date": run_day, "artifact_dir": str(out)},
        )
    return {
        "model_name": model_name,
        "run_id": run_id,
        "model_version": version,
        "metrics": tracking.json_safe_metrics(metrics),
        "artifact_dir": str(out),
        "train_seconds": train_seconds,
        "run_date": run_day,
        "gold_dir": str(Path(gold_dir)),
        "data_window": window,
        "profile": profile,
        "params": dict(model.params),
    }


def write_serving_files(out: Path, data: TrainData, items: pd.DataFrame | None) -> list[str]:
    """The files the scoring API reads next to the model (``core.artifacts``): the cold-start lists,
    each known user's full history and the item metadata from the ``items`` catalogue frame."""
    return artifacts.write_serving_files(
        out,
        fallback=fallback_lists(data, n=FALLBACK_SIZE),
        histories=full_histories(data),
        items=item_metadata(data, items),
    )


def full_histories(data: TrainData) -> list[np.ndarray]:
    """Every user's items in time order: train sequence, then valid, then test.

    At serving time everything up to now has happened, so a user's most recent items (the ones a
    sequential encoder weighs most) include the held-out ones.
    """
    rows: list[np.ndarray] = []
    for user in range(data.n_users):
        parts = [np.asarray(data.sequences[user], dtype=np.int64)]
        for split in (data.valid, data.test):
            if user in split:
                parts.append(np.asarray(split[user], dtype=np.int64))
        rows.append(np.concatenate(parts))
    return rows


def item_metadata(data: TrainData, items: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Item metadata rows in the model's item order (``core.artifacts.ITEM_FIELDS``; unknown → default)."""
    ids = [str(i) for i in data.item_ids]
    frame = items if items is not None else pd.DataFrame({"item_id": ids})
    frame = frame.assign(item_id=frame["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    frame = frame.reindex(ids)
    columns = {
        col: (frame[col].tolist() if col in frame.columns else [default] * len(ids))
        for col, default in artifacts.ITEM_FIELDS.items()
    }
    return [{"item_id": item, **{col: columns[col][n] for col in artifacts.ITEM_FIELDS}} for n, item in enumerate(ids)]


def read_gold_items(gold_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The gold ``items`` table of a run, or None when the run has none."""
    path = Path(gold_dir) / "items"
    return pd.read_parquet(path) if path.exists() else None
