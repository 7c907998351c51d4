"""Serving registry on a local directory: round trip, verification, write order, publish_champion."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.registry import (
    CHAMPION,
    MANIFEST,
    RegistryError,
    ServingRegistry,
    overall_checksum,
    publish_champion,
    sha256_file,
)
from models.base import UNKNOWN_USER, Recommender, register


@register
class ToyRecommender(Recommender):
    """Throwaway dot-product model with fixed factors: enough to exercise export/fetch/load/score."""

    name = "toy-registry-test"

    def _fit(self, data, callback) -> None:
        raise NotImplementedError("built directly by make_toy")

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), self.users.shape[1]), dtype=np.float32)
        known = users != UNKNOWN_USER
        out[known] = self.users[users[known]]
        return out

    def item_matrix(self) -> np.ndarray:
        return self.items

    def _state(self) -> dict[str, np.ndarray]:
        return {"users": self.users, "items": self.items}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.users, self.items = state["users"], state["items"]


def make_toy(n_users: int = 5, n_items: int = 8, seed: int = 0) -> ToyRecommender:
    rng = np.random.default_rng(seed)
    model = ToyRecommender(profile="quick")
    model.user_ids = np.asarray([f"u{i}" for i in range(n_users)], dtype=object)
    model.item_ids = np.asarray([f"i{i}" for i in range(n_items)], dtype=object)
    model.users = rng.normal(size=(n_users, 3)).astype(np.float32)
    model.items = rng.normal(size=(n_items, 3)).astype(np.float32)
    return model


def export_toy(path: Path, seed: int = 0) -> Path:
    out = make_toy(seed=seed).export(path)
    (out / "fallback.json").write_text(json.dumps({"overall": [{"item_id": "i3", "score": 9.0}], "by_category": {}}))
    return out


def test_local_round_trip(tmp_path: Path) -> None:
    art = export_toy(tmp_path / "art")
    reg = ServingRegistry(str(tmp_path / "registry"))
    extra = {
        "mlflow_run_id": "r1",
        "metrics": {"ndcg@10": 0.3},
        "data_window": {"start": "2024-01-01", "end": "2024-01-31"},
    }
    manifest = reg.publish(art, "toy", 1, extra)

    assert manifest["files"] == {
        n: sha256_file(art / n) for n in ("arrays.npz", "fallback.json", "ids.json", "model.json")
    }
    assert manifest["checksum"] == overall_checksum(manifest["files"])
    assert manifest["mlflow_run_id"] == "r1" and manifest["metrics"] == {"ndcg@10": 0.3}
    assert manifest["schema"]["name"] == "toy-registry-test" and manifest["schema"]["n_items"] == 8
    assert reg.versions("toy") == ["1"]
    assert reg.champion() is None

    pointer = reg.set_champion("toy", 1)
    assert reg.champion() == pointer
    assert pointer["checksum"] == manifest["checksum"] and pointer["path"] == str(tmp_path / "registry" / "toy" / "1")

    dest = reg.fetch("toy", "1", tmp_path / "cache" / "toy-1", expected_checksum=pointer["checksum"])
    loaded = Recommender.load(dest)
    original = make_toy()
    users = np.arange(5)
    hist = [np.zeros(0, dtype=np.int64)] * 5
    np.testing.assert_array_equal(loaded.recommend(users, hist, 4)[0], original.recommend(users, hist, 4)[0])
    assert json.loads((dest / MANIFEST).read_text())["checksum"] == manifest["checksum"]


def test_versions_sorted_numerically_and_republish_is_idempotent(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"))
    for version, seed in ((2, 2), (10, 10), (1, 1)):
        reg.publish(export_toy(tmp_path / f"art{version}", seed=seed), "toy", version)
    assert reg.versions("toy") == ["1", "2", "10"]
    again = reg.publish(tmp_path / "art2", "toy", 2)
    assert again["checksum"] == reg.manifest("toy", 2)["checksum"]
    with pytest.raises(RegistryError, match="already published"):
        reg.publish(tmp_path / "art10", "toy", 2)


def test_tampered_file_is_refused_and_nothing_lands(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(export_toy(tmp_path / "art"), "toy", 1)
    stored = tmp_path / "registry" / "toy" / "1" / "arrays.npz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    dest = tmp_path / "cache" / "toy-1"
    with pytest.raises(RegistryError, match=r"arrays\.npz: sha256 .* does not match"):
        reg.fetch("toy", 1, dest)
    assert not dest.exists()
    assert not [p for p in (tmp_path / "cache").iterdir()], "staging folder must be cleaned up"


def test_missing_file_is_refused_by_fetch_and_set_champion(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(export_toy(tmp_path / "art"), "toy", 1)
    (tmp_path / "registry" / "toy" / "1" / "ids.json").unlink()
    with pytest.raises(RegistryError, match=r"ids\.json is missing"):
        reg.fetch("toy", 1, tmp_path / "cache")
    with pytest.raises(RegistryError, match=r"lacks \['ids.json'\]"):
        reg.set_champion("toy", 1)
    assert reg.champion() is None


def test_pointer_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(export_toy(tmp_path / "art"), "toy", 1)
    with pytest.raises(RegistryError, match="differs from the champion pointer"):
        reg.fetch("toy", 1, tmp_path / "cache", expected_checksum="0" * 64)


def test_champion_written_last_and_atomically(tmp_path: Path) -> None:
    reg = ServingRegistry(str(tmp_path / "registry"))
    art = export_toy(tmp_path / "art")
    reg.publish(art, "toy", 7)
    reg.set_champion("toy", 7)

    log = reg.backend.write_log
    assert log[-1] == CHAMPION
    assert log[-2] == f"toy/7/{MANIFEST}"
    assert sorted(log[:-2]) == sorted(f"toy/7/{p.name}" for p in art.iterdir())
    root = tmp_path / "registry"
    mtimes = {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert (
        mtimes[CHAMPION]
        >= mtimes[f"toy/7/{MANIFEST}"]
        >= max(t for k, t in mtimes.items() if k not in (CHAMPION, f"toy/7/{MANIFEST}"))
    )
    assert not [p for p in root.rglob(".*")], "no temp files may remain after atomic writes"


def test_corrupt_champion_pointer_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    (root / CHAMPION).write_text("{not json")
    with pytest.raises(RegistryError, match=r"champion\.json is not valid JSON"):
        ServingRegistry(str(root)).champion()


def test_bad_inputs_name_the_field(tmp_path: Path) -> None:
    art = export_toy(tmp_path / "art")
    reg = ServingRegistry(str(tmp_path / "registry"))
    with pytest.raises(ValueError, match=re.escape("model_name='../x'")):
        reg.publish(art, "../x", 1)
    with pytest.raises(ValueError, match=r"manifest_extra may not set \['checksum'\]"):
        reg.publish(art, "toy", 1, {"checksum": "x"})
    with pytest.raises(ValueError, match="only a local path"):
        ServingRegistry("gs://bucket/x")
    (art / MANIFEST).write_text("{}")
    with pytest.raises(RegistryError, match="registry writes the manifest"):
        reg.publish(art, "toy", 1)


def test_publish_champion_uses_settings_registry(tmp_path: Path, recsys_home: Path) -> None:
    art = export_toy(tmp_path / "art")
    candidate = {
        "model_name": "toy",
        "model_version": 3,
        "run_id": "abc123",
        "metrics": {"ndcg@10": 0.25},
        "artifact_dir": str(art),
        "data_window": {"start": "2024-01-01", "end": "2024-02-01"},
        "run_date": "2024-02-01",
    }
    pointer = publish_champion(candidate)
    reg = ServingRegistry(str(recsys_home / "registry"))
    assert reg.champion() == pointer
    manifest = reg.manifest("toy", "3")
    assert manifest["mlflow_run_id"] == "abc123"
    assert manifest["mlflow_model_version"] == "3"
    assert manifest["data_window"] == {"start": "2024-01-01", "end": "2024-02-01"}
    assert manifest["run_date"] == "2024-02-01"
    assert os.path.isdir(pointer["path"])
    with pytest.raises(ValueError, match="artifact_dir"):
        publish_champion({"model_name": "toy", "model_version": 4})
