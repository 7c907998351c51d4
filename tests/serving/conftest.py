"""Serving fixtures shared by the real-time tests: one small trained BPR artifact per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.clusters import export_bpr


@pytest.fixture(scope="session")
def bpr_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BPR model trained on two item clusters (alpha/beta), with fallback, history and items files."""
    return export_bpr(tmp_path_factory.mktemp("bpr") / "artifact")
