"""Issue 11, erasure everywhere: after an erasure request and one run, a byte search of the whole RECSYS_HOME —
lake, reports, serving registry, MLflow store and artifacts, training exports, the API's model cache — finds
no trace of the user (Parquet values and npz arrays read, not only raw bytes); the other users are intact and
the champion still loads and serves.

The home is built with the real components at small size: the real Spark jobs plant the user in every lake
layer (``tests.jobs.test_erasure``), ``training.train`` trains and logs a model to MLflow, the registry
publishes it (the champion, and the same files as an older version), the serving ``ModelStore`` caches the champion; then
``jobs.erasure`` runs and the day's training publishes the next model.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.lake import Lake
from core.registry import ServingRegistry, publish_candidate, publish_champion
from core.settings import get_settings
from jobs import clean, erasure, features, ingest, split
from serving.store import ModelStore
from tests.jobs.test_erasure import DAY2, OTHERS, SALT, VICTIM, _plant
from training.train import train_model

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.integration]


def _npz_strings(data: bytes) -> str:
    """Every array of an ``.npz`` as text (string arrays by value; numbers cannot hold an id)."""
    out = []
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for name in npz.files:
            out.append(name)
            array = npz[name]
            if array.dtype.kind in "USO":
                out.extend(str(v) for v in array.ravel())
    return "\n".join(out)


def traces(root: Path, needle: str) -> set[str]:
    """Files under ``root`` holding ``needle``: raw bytes, gzip content, zip members, Parquet values and
    metadata, npz arrays."""
    found = set()
    raw = needle.encode()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hit = raw in data
        if not hit and path.name.endswith(".gz"):
            hit = raw in gzip.decompress(data)
        if not hit and path.name.endswith(".parquet"):
            table = pq.read_table(path)
            hit = needle in json.dumps(table.to_pylist(), default=str) or needle in str(pq.read_metadata(path))
        if not hit and path.name.endswith(".npz"):
            hit = needle in _npz_strings(data)
        elif not hit and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                hit = any(raw in archive.read(member) for member in archive.namelist())
        if hit:
            found.add(path.relative_to(root).as_posix())
    return found


def test_after_erasure_and_one_run_no_file_under_home_holds_the_user(spark, recsys_home: Path) -> None:
    from core.config import load_config

    cfg = load_config().replace(split={"min_user_items": 3})
    settings = get_settings()
    lake = Lake(settings.lake)
    _plant(lake)
    for job in (ingest, clean):
        job.run(lake.root, DAY2, cfg, spark, window_days=2)
    features.run(lake.root, DAY2, cfg, spark)
    split.run(lake.root, DAY2, cfg, spark)
    gold = lake.gold(DAY2)

    champion = train_model("popularity", gold, DAY2, cfg=cfg)
    publish_candidate({**champion, "model_version": "0"}, settings)  # an older registry version, same files
    publish_champion(champion, settings)
    registry = ServingRegistry.from_settings(settings)
    store = ModelStore(registry, settings.home / "serving" / "cache", poll_seconds=60)
    assert store.refresh() and store.current is not None
    assert VICTIM in store.current.model.user_ids.tolist()

    before = traces(recsys_home, VICTIM)
    where = {p.split("/")[0] for p in before}
    assert {"lake", "registry", "mlflow", "artifacts", "serving"} <= where, before
    assert any(p.endswith("ids.json") and p.startswith("mlflow/artifacts") for p in before), before

    erasure.write_request(lake.root, VICTIM, "api:support", request_id="req-1")
    report = erasure.run(lake.root, DAY2, cfg, spark, salt=SALT)
    assert report["models"]["registry"]["versions_redacted"] == 2
    assert report["models"]["registry"]["repinned"] == ["champion.json"]
    assert report["models"]["model_folders_redacted"] >= 2, report["models"]  # the MLflow artifact + the export

    # the rest of the day's run: the next model is trained on the erased gold and published
    nxt = train_model("popularity", gold, DAY2, cfg=cfg)
    publish_candidate(nxt, settings)

    # the API notices the re-pinned champion and swaps to the redacted files (its old cache goes)
    assert store.refresh() and store.current is not None
    assert traces(recsys_home, VICTIM) == set()

    loaded = store.current
    assert loaded.checksum == registry.champion()["checksum"] and loaded.version == str(champion["model_version"])
    users = loaded.model.user_ids.tolist()
    assert set(OTHERS) <= set(users) and VICTIM not in users
    for user in OTHERS:
        ranking = loaded.scorer.recommend(user, 3)
        assert not ranking.fallback and ranking.items, user
    anonymous = loaded.scorer.recommend(VICTIM, 3)
    assert anonymous.fallback and anonymous.fallback_reason == "unknown_user"
