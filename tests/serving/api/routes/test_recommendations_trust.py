"""``GET /v1/recommendations`` under trouble: a model that throws answers from the popularity fallback (flagged,
counted); an overloaded scorer sheds with 503 + Retry-After instead of queueing without bound, and recovers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.scorer import Scorer
from tests.serving.clusters import AUTH, live_cfg, served, settings_for


def test_a_model_that_throws_answers_from_the_popularity_fallback(
    tmp_path: Path, registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings_for(tmp_path / "home", registry_dir), cfg=live_cfg(), poll=False)
    with TestClient(app, headers=AUTH) as client:
        assert client.get("/v1/recommendations/ua0").json()["fallback"] is False

        def broken(self: Scorer, requests: object) -> list:
            raise FloatingPointError("NaN in the user tower")

        monkeypatch.setattr(Scorer, "recommend_many", broken)
        resp = client.get("/v1/recommendations/ua0", params={"k": 5})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["fallback"] is True and body["fallback_reason"] == "model_error"
        assert len(body["items"]) == 5 and body["model"] == {"name": "bpr", "version": "1"}
        errors = app.state.metrics.registry.get_sample_value("mercato_model_errors_total", {"model": "bpr/1"})
        assert errors == 1
        monkeypatch.undo()
        assert client.get("/v1/recommendations/ua0").json()["fallback"] is False, "the next batch uses the model again"


def test_an_overloaded_scorer_sheds_with_503_and_retry_after_then_recovers(
    tmp_path: Path, registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model slowed to 0.3 s per batch, a queue of 2 and a deadline of 0.2 s: 8 concurrent requests are all
    shed (the deadline, or a full queue) instead of waiting; at normal speed everything is answered again."""
    cfg = live_cfg(score_max_queue=2, score_max_batch=1, request_deadline_seconds=0.2)
    app = create_app(settings_for(tmp_path / "home", registry_dir), cfg=cfg, poll=False)
    fast = Scorer.recommend_many

    def slow(self: Scorer, requests: list) -> list:
        time.sleep(0.3)
        return fast(self, requests)

    with served(app) as base:
        monkeypatch.setattr(Scorer, "recommend_many", slow)
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def call(n: int) -> None:
            resp = httpx.get(f"{base}/v1/recommendations/ua{2 * n}", headers=AUTH, timeout=30)
            with lock:
                answers.append(resp)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert Counter(r.status_code for r in answers) == {503: 8}, [r.text for r in answers]
        assert all(r.headers["Retry-After"] == "1" and "overloaded" in r.json()["error"] for r in answers)
        shed = app.state.metrics.registry
        assert (shed.get_sample_value("mercato_shed_total", {"reason": "queue_full"}) or 0) >= 1
        assert (shed.get_sample_value("mercato_shed_total", {"reason": "deadline"}) or 0) >= 1
        monkeypatch.undo()
        time.sleep(0.7)  # the slowed batches still running finish
        again = httpx.get(f"{base}/v1/recommendations/ua0", headers=AUTH, timeout=30)
        assert again.status_code == 200 and again.json()["items"], again.text
