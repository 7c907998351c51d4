"""``python -m training.experiment``: the offline gate that refuses treatments (saying why), start/status/stop,
and ``promote_winner`` moving champion.json and the MLflow alias together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from core.registry import ServingRegistry
from core.settings import get_settings
from tests.core.test_registry import export_toy
from training import tracking
from training.experiment import ExperimentRefused, main, promote_winner, start_experiment
from training.promote import PublishFailed

RUN = {"run_date": "2024-01-03", "data_window": {"start": "2023-12-01", "end": "2024-01-03"}}


def publish(reg: ServingRegistry, tmp_path: Path, model: str, version: int, **extra: Any) -> None:
    reg.publish(export_toy(tmp_path / f"{model}-{version}", seed=version), model, version, {**RUN, **extra})


@pytest.fixture
def reg(recsys_home: Path, tmp_path: Path) -> ServingRegistry:
    """toy/1 (control), toy/2 (beat popularity at promotion), toy/3 (did not), toy/4 (no metric), toy/5 (no baseline)."""
    registry = ServingRegistry.from_settings(get_settings())
    gate = {"metric": "ndcg@10", "popularity": 0.25}
    publish(registry, tmp_path, "toy", 1, metrics={"ndcg@10": 0.2})
    publish(registry, tmp_path, "toy", 2, metrics={"ndcg@10": 0.3}, offline_gate=gate)
    publish(registry, tmp_path, "toy", 3, metrics={"ndcg@10": 0.1}, offline_gate=gate)
    publish(registry, tmp_path, "toy", 4, metrics={"hr@10": 0.5})
    publish(registry, tmp_path, "toy", 5, metrics={"ndcg@10": 0.3})
    return registry


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_start_refuses_treatments_that_did_not_pass_the_offline_gates(
    reg: ServingRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("start", "--name", "exp", "--control", "toy:1")
    refusals = {
        "toy:9": "refused: treatment toy/9 is not a published registry version: ",
        "toy:3": "refused: treatment toy/3 did not pass the offline gate: ndcg@10 0.100000 does not beat popularity's "
        "0.250000 (recorded at promotion on 2024-01-03); [promotion] must_beat_popularity refuses it",
        "toy:4": "refused: treatment toy/4 was not evaluated offline on the promotion metric: its manifest has no "
        "finite 'ndcg@10' (it has ['hr@10'])",
        "toy:5": "refused: treatment toy/5 cannot be checked against popularity on ndcg@10: no popularity version "
        "published for run date 2024-01-03",
    }
    for treatment, message in refusals.items():
        code, out, err = cli(capsys, *base, "--treatment", treatment)
        assert code == 2 and out == "" and err.startswith(message), err
    code, _, err = cli(capsys, *base, "--treatment", "toy:2", "--treatment", "toy:3")
    assert code == 2 and "toy/3 did not pass" in err and "toy/2" not in err, "each failing treatment is named"
    assert reg.experiment() is None, "nothing was written"

    # a popularity version of the same run date and window supplies the baseline
    publish(reg, tmp_path, "popularity", 1, metrics={"ndcg@10": 0.29})
    code, out, _ = cli(capsys, *base, "--treatment", "toy:5")
    assert code == 0 and json.loads(out)["arms"][1]["version"] == "5"


def test_start_status_stop(reg: ServingRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        capsys, "start", "--name", "exp", "--control", "toy:1", "--treatment", "toy:2",
        "--shares", "0.9,0.1", "--salt", "pepper",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc == reg.experiment()
    assert [(a["variant"], a["model_name"], a["version"], a["share"]) for a in doc["arms"]] == [
        ("control", "toy", "1", 0.9),
        ("treatment", "toy", "2", 0.1),
    ]
    assert doc["status"] == "running" and doc["salt"] == "pepper" and doc["type"] == "ab"
    assert doc["arms"][1]["checksum"] == reg.manifest("toy", 2)["checksum"]

    code, _, err = cli(capsys, "start", "--name", "other", "--control", "toy:1", "--treatment", "toy:2")
    assert code == 2 and "experiment 'exp' is running; stop it first" in err
    code, out, _ = cli(capsys, "status")
    assert code == 0 and json.loads(out)["name"] == "exp"
    code, out, _ = cli(capsys, "stop", "--reason", "enough")
    stopped = json.loads(out)
    assert code == 0 and stopped["status"] == "stopped" and stopped["reason"] == "enough" and stopped["ended_at"]
    code, _, err = cli(capsys, "stop")
    assert code == 2 and "nothing to stop: experiment 'exp' is already stopped" in err

    code, _, err = cli(
        capsys, "start", "--name", "il", "--control", "toy:1", "--treatment", "toy:2", "--treatment", "toy:2",
        "--type", "interleaving",
    )  # fmt: skip
    assert code == 2 and "exactly two arms" in err
    code, out, _ = cli(
        capsys, "start", "--name", "il", "--control", "toy:1", "--treatment", "toy:2", "--type", "interleaving"
    )
    assert code == 0 and json.loads(out)["type"] == "interleaving"
    with pytest.raises(SystemExit):
        main(["start", "--name", "x", "--control", "toy", "--treatment", "toy:2"])
    assert "expected MODEL:VERSION" in capsys.readouterr().err


@pytest.fixture
def mlflow_versions(recsys_home: Path, tmp_path: Path) -> MlflowClient:
    """Registered versions 1..3 of the project's MLflow model; alias champion → 1."""
    settings = get_settings()
    tracking.configure(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.create_registered_model(settings.mlflow_registered_model)
    for _ in range(3):
        client.create_model_version(settings.mlflow_registered_model, source=str(tmp_path), run_id=None)
    tracking.set_champion(settings, "1")
    return client


def alias(client: MlflowClient) -> str:
    settings = get_settings()
    return str(client.get_model_version_by_alias(settings.mlflow_registered_model, "champion").version)


def test_promote_winner_moves_champion_json_and_the_mlflow_alias_together(
    mlflow_versions: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = ServingRegistry.from_settings(get_settings())
    gate = {"metric": "ndcg@10", "popularity": 0.1}
    for version in (1, 2, 3):
        publish(reg, tmp_path, "toy", version, metrics={"ndcg@10": 0.2}, offline_gate=gate,
                mlflow_model_version=str(version))  # fmt: skip
    reg.set_champion("toy", 1)
    start_experiment("exp", ("toy", "1"), [("toy", "2")], registry=reg)

    result = promote_winner("treatment", reason="ctr +4%")
    assert alias(mlflow_versions) == "2"
    pointer = reg.champion()
    assert pointer is not None and (pointer["model_name"], pointer["version"]) == ("toy", "2")
    assert pointer["checksum"] == reg.manifest("toy", 2)["checksum"]
    doc = reg.experiment()
    assert doc["status"] == "concluded" and doc["winner"] == "treatment" and doc["reason"] == "ctr +4%"
    assert result["previous_mlflow_champion"] == "1" and result["mlflow_model_version"] == "2"
    with pytest.raises(ExperimentRefused, match="already concluded"):
        promote_winner("treatment")

    # champion.json cannot be written (after its retries): the alias never moved, nothing is concluded
    start_experiment("exp2", ("toy", "2"), [("toy", "3")], registry=reg)

    def broken(self: ServingRegistry, model_name: str, version: str) -> dict:
        raise OSError("registry unreachable")

    monkeypatch.setattr(ServingRegistry, "set_champion", broken)
    with pytest.raises(PublishFailed, match="registry unreachable"):
        promote_winner("treatment", sleep=lambda _: None)
    monkeypatch.undo()
    assert alias(mlflow_versions) == "2" and reg.champion()["version"] == "2"
    assert reg.experiment()["status"] == "running"
    with pytest.raises(ExperimentRefused, match=r"variant 'treatment-9' is not an arm"):
        promote_winner("treatment-9")


def test_promote_winner_needs_the_mlflow_version(mlflow_versions: MlflowClient, tmp_path: Path) -> None:
    reg = ServingRegistry.from_settings(get_settings())
    publish(reg, tmp_path, "toy", 1, metrics={"ndcg@10": 0.2}, mlflow_model_version="1")
    publish(reg, tmp_path, "toy", 2, metrics={"ndcg@10": 0.3}, offline_gate={"metric": "ndcg@10", "popularity": 0.1})
    reg.set_champion("toy", 1)
    start_experiment("exp", ("toy", "1"), [("toy", "2")], registry=reg)
    with pytest.raises(ExperimentRefused, match=r"toy/2 names no MLflow registered version"):
        promote_winner("treatment")
    assert alias(mlflow_versions) == "1" and reg.champion()["version"] == "1"
