"""``experiment.json`` in the serving registry: pinned to published versions, checksummed, written atomically,
refused when tampered with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.experiments import document_checksum, new_document
from core.registry import EXPERIMENT, RegistryError, ServingRegistry
from tests.core.test_registry import export_toy


@pytest.fixture
def reg(tmp_path: Path) -> ServingRegistry:
    registry = ServingRegistry(str(tmp_path / "registry"))
    for version in (1, 2):
        registry.publish(export_toy(tmp_path / f"art-{version}", seed=version), "toy", version)
    return registry


def planned(**kwargs: object) -> dict:
    return new_document("toy-ab", ("toy", "1"), [("toy", "2")], salt="pepper", **kwargs)  # type: ignore[arg-type]


def test_write_pins_each_arm_to_its_manifest_and_checksums_the_document(reg: ServingRegistry) -> None:
    written = reg.write_experiment(planned(shares=[0.7, 0.3]))
    assert [arm["checksum"] for arm in written["arms"]] == [reg.manifest("toy", v)["checksum"] for v in (1, 2)]
    assert written["checksum"] == document_checksum(written)
    assert reg.backend.write_log[-1] == EXPERIMENT
    on_disk = json.loads((Path(reg.uri) / EXPERIMENT).read_text())
    assert on_disk == written and reg.experiment() == written
    assert not [p.name for p in Path(reg.uri).iterdir() if p.name.startswith(".")], "no temp file left"


def test_a_tampered_or_broken_document_is_refused(reg: ServingRegistry) -> None:
    reg.write_experiment(planned())
    path = Path(reg.uri) / EXPERIMENT
    doc = json.loads(path.read_text())
    doc["arms"][1]["share"], doc["arms"][0]["share"] = 0.9, 0.1
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match=r"does not match its content.*edited outside the registry"):
        reg.experiment()
    path.write_text('{"name": ')
    with pytest.raises(RegistryError, match="not valid JSON"):
        reg.experiment()
    doc["arms"][1]["share"] = 0.5  # shares now sum to 0.6 and the checksum is stale
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match=r"sum to 0\.6"):
        reg.experiment()


def test_arms_must_be_complete_published_versions(reg: ServingRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"arm 'treatment'.*toy/7/manifest\.json not found"):
        reg.write_experiment(new_document("e", ("toy", "1"), [("toy", "7")]))
    (Path(reg.uri) / "toy" / "2" / "arrays.npz").unlink()
    with pytest.raises(RegistryError, match=r"arm 'treatment'.*lacks \['arrays.npz'\]"):
        reg.write_experiment(planned())
    stale = planned()
    stale["arms"][0]["checksum"] = "0" * 64
    with pytest.raises(RegistryError, match=r"arm 'control'.*the version changed"):
        reg.write_experiment(stale)
    with pytest.raises(RegistryError, match="experiment: arm variants must differ"):
        reg.write_experiment({**planned(), "arms": planned()["arms"][:1] + planned()["arms"]})
    assert reg.experiment() is None, "nothing was written"


def test_a_failed_write_leaves_the_previous_document(reg: ServingRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    first = reg.write_experiment(planned())

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        reg.write_experiment({**first, "status": "stopped", "checksum": None})
    monkeypatch.undo()
    assert reg.experiment() == first


def test_clear_removes_the_document(reg: ServingRegistry) -> None:
    assert reg.clear_experiment() is False
    reg.write_experiment(planned())
    assert reg.clear_experiment() is True
    assert reg.experiment() is None and not (Path(reg.uri) / EXPERIMENT).exists()


@pytest.mark.services
def test_experiment_on_s3(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    s3 = request.getfixturevalue("s3_env")
    registry = ServingRegistry(s3.fresh_prefix())
    for version in (1, 2):
        registry.publish(export_toy(tmp_path / f"art-{version}", seed=version), "toy", version)
    written = registry.write_experiment(planned())
    assert registry.experiment() == written
    assert registry.clear_experiment() is True and registry.experiment() is None
    assert registry.clear_experiment() is False
