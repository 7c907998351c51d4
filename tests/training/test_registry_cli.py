"""``python -m training.registry status|rollback|prune``: champion.json and the MLflow alias move together, pruning
keeps the newest N (never the champion, its previous, an experiment arm or the alias target). Local registry +
SQLite MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from core.registry import ServingRegistry
from core.settings import get_settings
from tests.training.test_experiment import alias, publish
from training import tracking
from training.experiment import start_experiment
from training.registry import main

GATE = {"metric": "ndcg@10", "popularity": 0.1}


@pytest.fixture
def home(recsys_home: Path, tmp_path: Path) -> tuple[ServingRegistry, MlflowClient]:
    """toy/1..5 (MLflow versions 1..5), popularity/1..2 (no MLflow version); champion toy/2 (previous toy/1)."""
    settings = get_settings()
    tracking.configure(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.create_registered_model(settings.mlflow_registered_model)
    for _ in range(5):
        client.create_model_version(settings.mlflow_registered_model, source=str(tmp_path), run_id=None)
    reg = ServingRegistry.from_settings(settings)
    for version in range(1, 6):
        publish(reg, tmp_path, "toy", version, metrics={"ndcg@10": 0.2}, offline_gate=GATE,
                mlflow_model_version=str(version))  # fmt: skip
    for version in (1, 2):
        publish(reg, tmp_path, "popularity", version, metrics={"ndcg@10": 0.1})
    reg.set_champion("toy", 1)
    reg.set_champion("toy", 2)
    tracking.set_champion(settings, "2")
    return reg, client


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else out.out, out.err


def test_rollback_moves_champion_json_and_the_alias_together(
    home: tuple[ServingRegistry, MlflowClient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg, client = home
    code, out, err = cli(capsys, "rollback")
    assert code == 0, err
    assert (reg.champion()["model_name"], reg.champion()["version"]) == ("toy", "1") and alias(client) == "1"
    assert out["replaced"] == "toy/2" and out["previous_mlflow_alias"] == "2" and out["mlflow_alias"] == "1"
    assert reg.champion()["previous"]["version"] == "2" and reg.champion()["reason"] == "rollback"

    # a named version, even one trained on older data (a rollback is forced)
    publish(reg, tmp_path, "toy", 6, data_window={"start": "2023-01-01", "end": "2023-02-01"}, mlflow_model_version="3")
    code, _, err = cli(capsys, "rollback", "toy", "6", "--reason", "bad release")
    assert code == 0, err
    assert reg.champion()["version"] == "6" and reg.champion()["reason"] == "bad release" and alias(client) == "3"

    code, _, err = cli(capsys, "rollback", "popularity", "1")
    assert code == 2 and "popularity/1 names no MLflow registered version" in err
    code, _, err = cli(capsys, "rollback", "toy", "9")
    assert code == 2 and "not found" in err
    code, _, err = cli(capsys, "rollback", "toy")
    assert code == 2 and "MODEL VERSION" in err
    assert reg.champion()["version"] == "6" and alias(client) == "3", "refusals move nothing"


def test_prune_keeps_the_newest_and_never_the_champion_previous_arms_or_alias(
    home: tuple[ServingRegistry, MlflowClient], capsys: pytest.CaptureFixture[str]
) -> None:
    reg, client = home
    start_experiment("exp", ("toy", "2"), [("toy", "3")], registry=reg)
    lake = Path(get_settings().lake)
    for name in ("2024-01-01", "2024-01-02", "2024-01-03", "experiments"):
        (lake / "gold" / name).mkdir(parents=True)
        (lake / "gold" / name / "part.parquet").write_bytes(b"x")

    expected = {
        "registry_versions": ["popularity/1", "toy/4"],
        "gold_run_dates": ["2024-01-01", "2024-01-02"],
        "mlflow_versions": ["4"],
        "protected": ["toy/1", "toy/2", "toy/3"],
    }
    code, out, err = cli(capsys, "prune", "--keep", "1", "--dry-run")
    assert code == 0, err
    assert {k: out[k] for k in expected} == expected and out["dry_run"] is True
    assert reg.versions("toy") == ["1", "2", "3", "4", "5"] and (lake / "gold" / "2024-01-01").is_dir()

    code, out, err = cli(capsys, "prune", "--keep", "1")
    assert code == 0, err
    assert {k: out[k] for k in expected} == expected
    assert reg.versions("toy") == ["1", "2", "3", "5"] and reg.versions("popularity") == ["2"]
    assert sorted(p.name for p in (lake / "gold").iterdir()) == ["2024-01-03", "experiments"]
    name = get_settings().mlflow_registered_model
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")) == [1, 2, 3, 5]
    assert alias(client) == "2" and reg.champion()["version"] == "2"
    assert main(["prune", "--keep", "0"]) == 2


def test_status(home: tuple[ServingRegistry, MlflowClient], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status")
    assert code == 0, err
    assert out["champion"]["version"] == "2" and out["champion"]["previous"]["version"] == "1"
    assert out["mlflow_alias"] == "2" and out["experiment"] is None
    assert [v["version"] for v in out["versions"]["toy"]] == ["1", "2", "3", "4", "5"]
    assert out["versions"]["toy"][0]["mlflow_model_version"] == "1" and out["versions"]["toy"][0]["data_end"]
