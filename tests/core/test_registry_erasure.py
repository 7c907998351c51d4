"""Erasure in the serving registry: every version holding the user is rewritten without her id and history,
its manifest re-checksummed, champion.json and experiment.json re-pinned; the champion still verifies and loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.artifacts import HISTORY_FILE, erased_id, redact_model_folders, write_serving_files
from core.experiments import new_document
from core.registry import ServingRegistry
from models.base import Recommender
from tests.core.test_registry import export_toy

HISTORIES = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5]), np.array([6, 7]), np.array([1])]


def _export(path: Path, seed: int) -> Path:
    out = export_toy(path, seed=seed)
    write_serving_files(out, histories=HISTORIES)
    return out


def test_redact_users_rewrites_versions_and_repins_the_champion_and_the_experiment(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"), signing_key="k")
    for version in (1, 2, 3):
        reg.publish(
            _export(tmp_path / f"v{version}", version),
            "toy",
            version,
            {"data_window": {"end": "2024-01-0" + str(version)}},
        )
    reg.set_champion("toy", 1)
    reg.set_champion("toy", 2)
    reg.write_experiment(new_document("exp", ("toy", "2"), [("toy", "3")], salt="s"))
    generation = reg.champion()["generation"]

    report = reg.redact_users(["u1", "nobody"])
    assert report == {
        "versions_redacted": 3,
        "user_slots_redacted": 3,
        "repinned": ["champion.json", "experiment.json"],
    }
    for version in (1, 2, 3):
        manifest = reg.manifest("toy", version)
        assert manifest["erased_users"] == 1 and manifest["erased_at"]
        fetched = reg.fetch("toy", version, tmp_path / f"fetched{version}", expected_checksum=manifest["checksum"])
        assert b'"u1"' not in (fetched / "ids.json").read_bytes()
        ids = json.loads((fetched / "ids.json").read_text())
        assert ids["user_ids"] == ["u0", erased_id(1), "u2", "u3", "u4"]
        with np.load(fetched / HISTORY_FILE) as npz:
            indptr, indices = npz["indptr"], npz["indices"]
        rows = [indices[indptr[u] : indptr[u + 1]].tolist() for u in range(5)]
        assert rows == [[0, 1], [], [5], [6, 7], [1]], "only her row emptied, the others intact"
        assert Recommender.load(fetched).user_ids.tolist()[2] == "u2"
    pointer = reg.champion()
    assert (pointer["model_name"], pointer["version"]) == ("toy", "2") and pointer["generation"] == generation + 1
    assert pointer["checksum"] == reg.manifest("toy", 2)["checksum"]
    assert (
        pointer["previous"]["version"] == "1" and pointer["previous"]["checksum"] == reg.manifest("toy", 1)["checksum"]
    )
    doc = reg.experiment()
    assert [a["checksum"] for a in doc["arms"]] == [reg.manifest("toy", v)["checksum"] for v in (2, 3)]

    assert reg.redact_users(["u1"]) == {"versions_redacted": 0, "user_slots_redacted": 0, "repinned": []}


def test_redact_model_folders_in_place(tmp_path: Path) -> None:
    _export(tmp_path / "mlflow" / "x" / "artifacts" / "model_dir", 0)
    _export(tmp_path / "exports" / "toy" / "run1", 1)
    (tmp_path / "exports" / "ids.json").write_text('{"user_ids": ["u3"]}')  # not a model folder: no model.json
    assert redact_model_folders(tmp_path, ["u3"]) == (2, 2)
    for folder in (tmp_path / "mlflow" / "x" / "artifacts" / "model_dir", tmp_path / "exports" / "toy" / "run1"):
        assert "u3" not in (folder / "ids.json").read_text()
        assert Recommender.load(folder).user_ids.tolist() == ["u0", "u1", "u2", erased_id(3), "u4"]
    assert redact_model_folders(tmp_path / "missing", ["u3"]) == (0, 0)
