"""MLflow glue: experiment set-up from ``Settings``, metric names, the pyfunc wrapper that serves an
exported recommender, model registration and the ``champion`` alias.

Only training and promotion import this module (serving must not need MLflow).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from core.settings import Settings, get_settings
from models.base import UNKNOWN_USER, Recommender

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model_dir"


def metric_key(name: str) -> str:
    """MLflow-safe metric name: ``ndcg@10`` → ``ndcg_10`` (MLflow rejects '@')."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics MLflow can store (NaN/inf, e.g. diversity without item features, are left out)."""
    return {metric_key(k): float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def json_safe_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """NaN/inf become None so the metrics are valid JSON (Airflow XCom, reports, manifests)."""
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in metrics.items()}


def configure(settings: Settings) -> str:
    """Point MLflow at ``settings`` (tracking + registry URI) and return the experiment id, creating the
    experiment with ``settings.artifact_root`` as its artifact location when it does not exist.

    On a SQLite store the first use creates the schema; parallel training tasks (LocalExecutor) would
    race on that, so set-up holds an exclusive file lock next to the database.
    """
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if settings.tracking_uri.startswith("sqlite:///"):
        db = Path(settings.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(db.with_name(db.name + ".setup.lock"))
    with lock:
        experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
        if experiment is None:
            location = settings.artifact_root
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).absolute().as_uri()
            experiment_id = mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (other processes wait up to ``timeout_s``)."""
    import fcntl
    import time

    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} held by another process for {timeout_s:.0f}s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RecommenderPyfunc(PythonModel):
    """Serves an exported recommender through MLflow: input a DataFrame with ``user_id`` (and optionally
    ``history``: the user's recent item ids, oldest first); output ``user_id`` and ``item_ids`` (top ``k``,
    param, default 10, history items excluded)."""

    def load_context(self, context: Any) -> None:
        self.model = Recommender.load(context.artifacts[MODEL_ARTIFACT])
        self._users = {str(u): i for i, u in enumerate(self.model.user_ids)}
        self._items = {str(i): j for j, i in enumerate(self.model.item_ids)}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if "user_id" not in model_input.columns:
            raise ValueError(f"model input needs a 'user_id' column; got {list(model_input.columns)}")
        k = int((params or {}).get("k", 10))
        users = np.array([self._users.get(str(u), UNKNOWN_USER) for u in model_input["user_id"]], dtype=np.int64)
        raw_hist = model_input["history"] if "history" in model_input.columns else [[]] * len(model_input)
        histories = [
            np.array(
                [self._items[str(i)] for i in (h if h is not None else []) if str(i) in self._items], dtype=np.int64
            )
            for h in raw_hist
        ]
        idx, _ = self.model.recommend(users, histories, k)
        return pd.DataFrame(
            {
                "user_id": model_input["user_id"].astype(str).to_numpy(),
                "item_ids": [list(self.model.item_ids[r]) for r in idx],
            }
        )


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc model (explicit: MLflow's inference imports the world and is slow)."""
    import scipy
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"scipy=={scipy.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
    ]


def pyfunc_signature() -> ModelSignature:
    """Input ``user_id`` (+ optional ``history``), output ``user_id, item_ids``, inference param ``k``."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id"), ColSpec(Array("string"), "history", required=False)]),
        outputs=Schema([ColSpec("string", "user_id"), ColSpec(Array("string"), "item_ids")]),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )


def log_recommender(
    export_dir: str | os.PathLike[str],
    registered_model: str,
    tags: Mapping[str, str],
) -> tuple[str, str]:
    """Log ``export_dir`` as the active run's pyfunc model ``model``, register a new version of
    ``registered_model`` and tag it; returns ``(model_uri, version)``."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=RecommenderPyfunc(),
        artifacts={MODEL_ARTIFACT: str(export_dir)},
        pip_requirements=pip_requirements(),
        signature=pyfunc_signature(),
        registered_model_name=registered_model,
        await_registration_for=60,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, version, key, str(value))
    return info.model_uri, version


def champion_version(settings: Settings) -> Any | None:
    """The registered model version holding the ``champion`` alias, or None."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        return client.get_model_version_by_alias(settings.mlflow_registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return None


def set_champion(settings: Settings, version: str) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.set_registered_model_alias(settings.mlflow_registered_model, CHAMPION_ALIAS, str(version))


def materialize_version(settings: Settings, version: Any) -> Path:
    """Local directory of a registered version's exported recommender: its export (tag ``artifact_dir``)
    when that still exists on this machine, else a download from the MLflow artifact store into
    ``<home>/artifacts/<model_name>/<run_id>``."""
    tags = version.tags or {}
    local = tags.get("artifact_dir")
    if local and (Path(local) / "model.json").exists():
        return Path(local)
    uri = f"models:/{settings.mlflow_registered_model}/{version.version}"
    target = settings.home.absolute() / "artifacts" / tags.get("model_name", "unknown") / str(version.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        found = sorted(root.rglob("model.json"))
        if not found:
            raise FileNotFoundError(f"{uri}: no exported recommender (model.json) among its artifacts")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(found[0].parent, target)
    return target


def load_version(settings: Settings, version: Any) -> Recommender:
    """The recommender of a registered model version (see :func:`materialize_version`)."""
    return Recommender.load(materialize_version(settings, version))


def save_training_curve(history: Sequence[Mapping[str, float]], path: str | os.PathLike[str]) -> Path | None:
    """PNG of loss (and validation NDCG@10 when present) per epoch; None when there is no history."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h.get("loss", float("nan")) for h in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any("val_ndcg@10" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h.get("val_ndcg@10", float("nan")) for h in history], color="tab:orange", marker="s")
        ax2.set_ylabel("valid NDCG@10", color="tab:orange")
    ax.set_title("training curve")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


COMPARED_METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10")


def save_comparison_chart(candidates: dict[str, dict[str, Any]], path: str | Path, champion: str | None = None) -> Path:
    """Grouped bar chart of every candidate's test metrics (one DAG run, same test split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(candidates)
    x = np.arange(len(COMPARED_METRICS))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for n, name in enumerate(names):
        values = [float(candidates[name].get("metrics", {}).get(m) or 0.0) for m in COMPARED_METRICS]
        label = f"{name} (champion)" if name == champion else name
        ax.bar(x + n * width, values, width, label=label)
    ax.set_xticks(x + width * (len(names) - 1) / 2, COMPARED_METRICS)
    ax.set_ylabel("test split, full ranking")
    ax.set_title("model comparison")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def log_comparison(decision: dict[str, Any], run_date: str, settings: Settings | None = None) -> str:
    """One MLflow run per promotion: every candidate's metrics side by side, the chart and the decision.

    Metrics are logged as ``<model>.<metric>`` so the MLflow UI's table and compare view show which
    model won and by how much; returns the run id.
    """
    import json

    configure(settings or get_settings())
    candidates = decision.get("candidates", {})
    with mlflow.start_run(run_name=f"promotion-{run_date}") as run:
        mlflow.set_tags(
            {
                "kind": "promotion",
                "run_date": run_date,
                "winner": str(decision.get("winner")),
                "promoted": str(decision.get("promoted")),
            }
        )
        for name, cand in candidates.items():
            metrics = {f"{name}.{metric_key(m)}": v for m, v in (cand.get("metrics") or {}).items()}
            mlflow.log_metrics(finite_metrics(metrics))
        with tempfile.TemporaryDirectory() as tmp:
            chart = save_comparison_chart(candidates, Path(tmp) / "model_comparison.png", decision.get("winner"))
            mlflow.log_artifact(str(chart), artifact_path="plots")
            (Path(tmp) / "decision.json").write_text(json.dumps(decision, indent=2, default=str))
            mlflow.log_artifact(str(Path(tmp) / "decision.json"))
        return run.info.run_id
