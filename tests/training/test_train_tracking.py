"""train_model against a real MLflow SQLite store: params, curves, metrics, artifacts, registered version."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from core.settings import get_settings
from evaluation.data import TrainData
from models.base import Recommender
from tests.evaluation.test_data import _write_gold
from training.tracking import metric_key
from training.train import train_model

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def small_events(seed: int = 0, n_users: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two taste clusters over 16 items with two categories, plus a catalogue."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        cluster = u % 2
        for k, item in enumerate(rng.choice(8, size=6, replace=False)):
            kind = "purchase" if k % 3 == 0 else "view"
            rows.append((f"u{u:03d}", f"c{cluster}-i{item}", kind, T0 + pd.Timedelta(hours=k + u)))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    items = pd.DataFrame(
        {
            "item_id": [f"c{c}-i{i}" for c in range(2) for i in range(8)],
            "category": [f"cat{c}" for c in range(2) for _ in range(8)],
            "brand": ["b"] * 16,
            "price": np.linspace(1, 16, 16),
            "available": True,
            "attributes": [[f"a{i % 3}"] for i in range(16)],
        }
    )
    return events, items


@pytest.fixture
def gold(tmp_path: Path) -> Path:
    events, items = small_events()
    root = tmp_path / "gold" / "2024-01-03"
    root.mkdir(parents=True)
    _write_gold(events, items, root)
    return root


@pytest.mark.slow
def test_train_model_logs_and_registers(recsys_home: Path, gold: Path) -> None:
    result = train_model("bpr", gold, "2024-01-03", profile="quick")
    settings = get_settings()
    assert set(result) >= {"model_name", "run_id", "model_version", "metrics", "artifact_dir", "train_seconds"}
    assert result["model_name"] == "bpr" and result["model_version"] == "1"
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0 and result["metrics"]["n_users"] == 60
    assert Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.tags["model_name"] == "bpr" and run.data.tags["run_date"] == "2024-01-03"
    assert run.data.params["dim"] == "32" and run.data.params["profile"] == "quick"
    assert run.data.metrics[metric_key("ndcg@10")] == pytest.approx(result["metrics"]["ndcg@10"])
    assert "train_seconds" in run.data.metrics
    losses = client.get_metric_history(result["run_id"], "loss")
    assert len(losses) >= 2 and [m.step for m in losses] == sorted(m.step for m in losses)
    assert client.get_metric_history(result["run_id"], "val_ndcg_10")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == settings.mlflow_experiment
    assert experiment.artifact_location.startswith(Path(settings.artifact_root).as_uri())
    listed = {a.path for a in client.list_artifacts(result["run_id"], "plots")}
    assert "plots/training_curve.png" in listed

    version = client.get_model_version(settings.mlflow_registered_model, result["model_version"])
    assert version.tags["model_name"] == "bpr" and version.run_id == result["run_id"]

    out = Path(result["artifact_dir"])
    fallback = json.loads((out / "fallback.json").read_text())
    assert fallback["overall"] and set(fallback["by_category"]) == {"cat0", "cat1"}
    model = Recommender.load(out)
    assert model.name == "bpr" and len(model.item_ids) == 16

    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.mlflow_registered_model}/1")
    pred = pyfunc.predict(pd.DataFrame({"user_id": ["u000", "stranger"], "history": [[], ["c1-i0"]]}), params={"k": 3})
    assert list(pred["user_id"]) == ["u000", "stranger"]
    assert all(len(x) == 3 for x in pred["item_ids"]) and "c1-i0" not in pred["item_ids"][1]


def test_popularity_run_registers_next_version(recsys_home: Path, gold: Path) -> None:
    first = train_model("popularity", gold, "2024-01-03")
    second = train_model("popularity", gold, "2024-01-03")
    assert (first["model_version"], second["model_version"]) == ("1", "2")
    assert first["metrics"] == second["metrics"]
    assert first["data_window"]["start"].startswith("2024-01-01")


def test_unknown_model_is_named(recsys_home: Path, gold: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        train_model("nope", gold, "2024-01-03")


def test_export_carries_serving_files(recsys_home: Path, gold: Path) -> None:
    """history.npz holds each user's full history in time order; items.json is aligned with ids.json."""
    result = train_model("popularity", gold, "2024-01-03", profile="quick")
    out = Path(result["artifact_dir"])
    ids = json.loads((out / "ids.json").read_text())
    items = json.loads((out / "items.json").read_text())
    assert [it["item_id"] for it in items] == ids["item_ids"]
    assert all(set(it) == {"item_id", "category", "brand", "price", "available"} for it in items)
    assert {it["category"] for it in items} == {"cat0", "cat1"}
    data = TrainData.from_gold(gold)
    with np.load(out / "history.npz") as npz:
        indptr, indices = npz["indptr"], npz["indices"]
    assert len(indptr) == len(ids["user_ids"]) + 1
    for user in range(data.n_users):
        row = indices[indptr[user] : indptr[user + 1]]
        expected = list(data.sequences[user]) + list(data.valid.get(user, [])) + list(data.test.get(user, []))
        assert row.tolist() == [int(i) for i in expected]
    fallback = json.loads((out / "fallback.json").read_text())
    assert len(fallback["overall"]) == 16
