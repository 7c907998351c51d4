"""Promotion against a real MLflow SQLite store and the real serving registry."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from core.config import load_config
from core.settings import get_settings
from tests.evaluation.test_data import _write_gold
from tests.training.test_train_tracking import small_events
from training.promote import compare_and_promote, decide
from training.train import train_model


def test_decide_rules() -> None:
    # guardrail: bpr below popularity is not eligible, so popularity wins when there is no champion
    assert decide({"bpr": 0.1, "popularity": 0.2}, 0.2, None, 0.01)[:2] == ("popularity", True)
    assert decide({"bpr": 0.3, "popularity": 0.2}, 0.2, None, 0.01)[:2] == ("bpr", True)
    # margin is relative: 0.2 * 1.05 = 0.21
    assert decide({"bpr": 0.3}, 0.1, 0.29, 0.05)[:2] == ("bpr", False)
    assert decide({"bpr": 0.3}, 0.1, 0.28, 0.05)[:2] == ("bpr", True)
    assert decide({"bpr": 0.05}, 0.1, None, 0.05) == (
        None,
        False,
        "no candidate passed the guardrail (beat popularity) with a finite metric",
    )
    assert decide({"bpr": 0.05}, 0.1, None, 0.05, must_beat_popularity=False)[:2] == ("bpr", True)
    assert decide({"bpr": None, "popularity": 0.1}, 0.1, None, 0.0)[0] == "popularity"


def _gold(root: Path, seed: int, n_users: int) -> Path:
    events, items = small_events(seed, n_users)
    root.mkdir(parents=True)
    _write_gold(events, items, root)
    return root


@pytest.mark.slow
def test_promotion_cycle(recsys_home: Path, tmp_path: Path) -> None:
    settings = get_settings()
    cfg = load_config()
    published: list[dict[str, Any]] = []
    day1 = _gold(tmp_path / "gold" / "2024-01-03", seed=0, n_users=60)
    pop = train_model("popularity", day1, "2024-01-03")

    # first run: no champion anywhere → promoted and published
    first = compare_and_promote([pop], day1, "2024-01-03", cfg=cfg, publish=published.append)
    assert first["promoted"] and first["winner"] == "popularity" and first["champion"] is None
    assert published == [pop | {"metrics": pop["metrics"]}]
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    assert str(client.get_model_version_by_alias(settings.mlflow_registered_model, "champion").version) == "1"
    comparison = client.get_run(first["comparison_run_id"])
    assert comparison.data.tags["winner"] == "popularity"
    assert comparison.data.metrics["popularity.ndcg_10"] == pytest.approx(pop["metrics"]["ndcg@10"])
    plots = [a.path for a in client.list_artifacts(first["comparison_run_id"], "plots")]
    assert plots == ["plots/model_comparison.png"]

    # a retrained equal model does not beat the champion by the margin; serving already has one
    again = train_model("popularity", day1, "2024-01-03")
    second = compare_and_promote(
        [again], day1, "2024-01-03", cfg=cfg, publish=published.append, serving_has_champion=lambda: True
    )
    assert not second["promoted"] and "does not beat" in second["reason"]
    assert second["champion"]["metrics"]["ndcg@10"] == pytest.approx(again["metrics"]["ndcg@10"])
    assert len(published) == 1
    assert str(client.get_model_version_by_alias(settings.mlflow_registered_model, "champion").version) == "1"

    # next day: more users; the champion is re-evaluated on the new split, fetched back from MLflow
    # because its local export is gone
    shutil.rmtree(pop["artifact_dir"])
    day2 = _gold(tmp_path / "gold" / "2024-01-04", seed=1, n_users=80)
    cand = train_model("popularity", day2, "2024-01-04")
    third = compare_and_promote([cand], day2, "2024-01-04", cfg=cfg, promote=False, publish=published.append)
    assert third["champion"]["metrics"]["n_users"] == 80.0
    assert third["champion"]["model_version"] == "1"
    assert not third["promoted"] and len(published) == 1


@pytest.mark.slow
def test_publishes_to_the_real_serving_registry(recsys_home: Path, tmp_path: Path) -> None:
    from core.registry import ServingRegistry, publish_champion

    day1 = _gold(tmp_path / "gold" / "2024-01-03", seed=0, n_users=40)
    pop = train_model("popularity", day1, "2024-01-03")
    decision = compare_and_promote([pop], day1, "2024-01-03", publish=publish_champion)
    assert decision["promoted"]
    pointer = ServingRegistry.from_settings(get_settings()).champion()
    assert pointer is not None and pointer["model_name"] == "popularity" and str(pointer["version"]) == "1"
    assert (Path(get_settings().registry) / "popularity" / "1" / "fallback.json").exists()
    assert pd.notna(decision["popularity_baseline"])


@pytest.mark.slow
def test_canary_mode_starts_the_winner_as_an_experiment_instead_of_switching(recsys_home: Path, tmp_path: Path) -> None:
    from core.registry import ServingRegistry, publish_champion
    from training.experiment import promote_winner

    settings = get_settings()
    canary_cfg = load_config().replace(promotion={"canary_share": 0.1})
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    def alias() -> str:
        return str(client.get_model_version_by_alias(settings.mlflow_registered_model, "champion").version)

    day1 = _gold(tmp_path / "gold" / "2024-01-03", seed=0, n_users=60)
    pop = train_model("popularity", day1, "2024-01-03")
    first = compare_and_promote([pop], day1, "2024-01-03", cfg=canary_cfg, publish=publish_champion)
    assert first["promoted"] and "canary" not in first, "nothing serves yet: no canary, the winner is champion"

    knn = train_model("item_knn", day1, "2024-01-03")
    boosted = {**knn, "metrics": {**knn["metrics"], "ndcg@10": 0.99}}  # pins the decision: this tests the canary
    decision = compare_and_promote([boosted], day1, "2024-01-03", cfg=canary_cfg, publish=publish_champion)
    assert decision["winner"] == "item_knn" and decision["promoted"] is False
    version = str(knn["model_version"])
    assert decision["canary"] == {
        "started": True,
        "share": 0.1,
        "experiment": f"canary-2024-01-03-item_knn-v{version}",
        "arms": {"control": "popularity/1", "treatment": f"item_knn/{version}"},
    }
    assert "canary: item_knn v" in decision["reason"] and "alias did not move" in decision["reason"]
    registry = ServingRegistry.from_settings(settings)
    doc = registry.experiment()
    assert doc["status"] == "running" and [a["share"] for a in doc["arms"]] == [0.9, 0.1]
    assert doc["origin"] == "promotion 2024-01-03"
    assert registry.champion()["model_name"] == "popularity" and alias() == "1", "the champion did not move"
    gate = registry.manifest("item_knn", version)["offline_gate"]
    assert gate["value"] == 0.99 and gate["popularity"] == pytest.approx(decision["popularity_baseline"])

    again = compare_and_promote([boosted], day1, "2024-01-03", cfg=canary_cfg, publish=publish_champion)
    assert again["canary"]["started"] is False and "is running; stop it first" in again["canary"]["refused"]
    assert registry.experiment()["name"] == doc["name"] and alias() == "1"

    promote_winner("treatment", reason="the canary won")  # what the experiment report does
    assert alias() == version and registry.champion()["model_name"] == "item_knn"
    assert registry.experiment()["status"] == "concluded"
