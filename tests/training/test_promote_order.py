"""Promotion publishes first, then moves the MLflow alias: a failed publish is retried with backoff and, when it
keeps failing, leaves champion.json and the alias as they were; a backfill never replaces a champion trained
on newer data unless forced. Real MLflow (SQLite) and the real serving registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from core.config import load_config
from core.registry import RegistryError, RegistryUnreachable, ServingRegistry, publish_champion
from core.settings import get_settings
from tests.training.test_experiment import alias, mlflow_versions, publish  # noqa: F401  (fixture)
from tests.training.test_promote import _gold
from training.experiment import promote_winner, start_experiment
from training.promote import PublishFailed, compare_and_promote, newer_champion, with_retries
from training.train import train_model


def test_with_retries_backs_off_then_gives_up_and_never_retries_bad_content() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryUnreachable("timeout")
        return "ok"

    assert with_retries(flaky, "publishing", 3, 0.5, slept.append) == "ok"
    assert slept == [0.5, 1.0] and len(calls) == 3

    def down() -> None:
        raise OSError("disk gone")

    slept.clear()
    with pytest.raises(PublishFailed, match=r"publishing failed 2 time\(s\), last: OSError\('disk gone'\)"):
        with_retries(down, "publishing", 2, 1.0, slept.append)
    assert slept == [1.0]

    def corrupt() -> None:
        calls.append(1)
        raise RegistryError("checksum mismatch")

    calls.clear()
    with pytest.raises(RegistryError):
        with_retries(corrupt, "publishing", 5, 1.0, slept.append)
    assert len(calls) == 1, "bad content is refused for good, not retried"


def test_newer_champion_rule() -> None:
    cand = {"model_name": "bpr", "model_version": "7", "data_window": {"start": "2024-01-01", "end": "2024-01-02"}}
    assert newer_champion(cand, {"end": "2024-01-02T23:59:59+00:00"}) is None
    assert newer_champion(cand, None) is None and newer_champion({"data_window": {}}, {"end": "2024-01-09"}) is None
    reason = newer_champion(cand, {"end": "2024-01-04"})
    assert (
        reason is not None
        and "bpr v7 was trained on data up to 2024-01-02, older than the champion's (2024-01-04)" in reason
    )


def _alias() -> str | None:
    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    return str(client.get_model_version_by_alias(settings.mlflow_registered_model, "champion").version)


@pytest.mark.slow
def test_publish_first_retried_then_alias_and_a_failing_publish_moves_nothing(
    recsys_home: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    registry = ServingRegistry.from_settings(get_settings())
    day = _gold(tmp_path / "gold" / "2024-01-03", seed=0, n_users=40)
    pop = train_model("popularity", day, "2024-01-03")
    slept: list[float] = []
    attempts: list[str] = []

    def flaky_once(candidate: Any, **kw: Any) -> Any:
        attempts.append(candidate["model_name"])
        if len(attempts) == 1:
            raise RegistryUnreachable("registry timed out")
        return publish_champion(candidate, **kw)

    first = compare_and_promote([pop], day, "2024-01-03", cfg=cfg, publish=flaky_once, sleep=slept.append)
    assert first["promoted"] and attempts == ["popularity", "popularity"]
    assert slept == [cfg.promotion.publish_backoff_seconds]
    assert registry.champion()["model_name"] == "popularity" and _alias() == str(pop["model_version"])

    knn = train_model("item_knn", day, "2024-01-03")
    boosted = {**knn, "metrics": {**knn["metrics"], "ndcg@10": 0.99}}  # pins the decision: this tests the order
    before = registry.champion()

    def always_fails(candidate: Any, **kw: Any) -> Any:
        raise OSError("bucket unreachable")

    slept.clear()
    with pytest.raises(PublishFailed, match="publishing item_knn failed 3 time"):
        compare_and_promote([boosted], day, "2024-01-03", cfg=cfg, publish=always_fails, sleep=slept.append)
    assert slept == [2.0, 4.0]
    assert registry.champion() == before, "champion.json unchanged"
    assert _alias() == str(pop["model_version"]), "the MLflow alias did not move"

    # the task's retry (the publish works again) converges: published, then the alias
    again = compare_and_promote([boosted], day, "2024-01-03", cfg=cfg, publish=publish_champion)
    assert again["promoted"] and registry.champion()["model_name"] == "item_knn"
    assert _alias() == str(knn["model_version"])


@pytest.mark.slow
def test_a_backfill_never_replaces_a_champion_trained_on_newer_data_unless_forced(
    recsys_home: Path, tmp_path: Path
) -> None:
    registry = ServingRegistry.from_settings(get_settings())
    day = _gold(tmp_path / "gold" / "2024-01-04", seed=0, n_users=40)
    pop = train_model("popularity", day, "2024-01-04")
    pop = {**pop, "data_window": {"start": "2023-12-05", "end": "2024-01-04"}}
    assert compare_and_promote([pop], day, "2024-01-04", publish=publish_champion)["promoted"]

    knn = train_model("item_knn", day, "2024-01-04")
    backfill = {
        **knn,
        "metrics": {**knn["metrics"], "ndcg@10": 0.99},
        "data_window": {"start": "2023-12-01", "end": "2024-01-01"},
    }
    decision = compare_and_promote([backfill], day, "2024-01-01", publish=publish_champion)
    assert decision["winner"] == "item_knn" and decision["promoted"] is False and decision["forced"] is False
    assert "older than the champion's (2024-01-04); a backfill never replaces" in decision["refused"]
    assert decision["refused"] in decision["reason"]
    assert registry.champion()["model_name"] == "popularity" and _alias() == str(pop["model_version"])

    forced = compare_and_promote([backfill], day, "2024-01-01", publish=publish_champion, force=True)
    assert forced["promoted"] and forced["forced"] and "refused" not in forced
    assert registry.champion()["model_name"] == "item_knn" and _alias() == str(knn["model_version"])


def test_promote_winner_publishes_first_retries_and_puts_champion_json_back_when_the_alias_cannot_move(
    mlflow_versions: MlflowClient,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training import tracking

    reg = ServingRegistry.from_settings(get_settings())
    gate = {"metric": "ndcg@10", "popularity": 0.1}
    for version in (1, 2, 3):
        publish(reg, tmp_path, "toy", version, metrics={"ndcg@10": 0.2}, offline_gate=gate,
                mlflow_model_version=str(version))  # fmt: skip
    reg.set_champion("toy", 1)
    start_experiment("exp", ("toy", "1"), [("toy", "2")], registry=reg)

    real = ServingRegistry.set_champion
    failures = iter([RegistryUnreachable("timeout")])

    def flaky(self: ServingRegistry, *args: Any, **kwargs: Any) -> dict:
        for exc in failures:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ServingRegistry, "set_champion", flaky)
    slept: list[float] = []
    promote_winner("treatment", sleep=slept.append)
    assert slept == [2.0] and alias(mlflow_versions) == "2" and reg.champion()["version"] == "2"

    # the alias cannot move: champion.json goes back to toy/2, the experiment stays running
    monkeypatch.undo()
    start_experiment("exp2", ("toy", "2"), [("toy", "3")], registry=reg)

    def alias_down(settings: Any, version: str) -> None:
        raise ConnectionError("tracking server down")

    monkeypatch.setattr(tracking, "set_champion", alias_down)
    with pytest.raises(PublishFailed, match="moving the MLflow alias to v3"):
        promote_winner("treatment", sleep=slept.append)
    monkeypatch.undo()
    assert alias(mlflow_versions) == "2" and reg.champion()["version"] == "2"
    assert reg.experiment()["status"] == "running"
