"""``POST /v1/events``: state before landing, the batch limit, and a state store that is down."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.state import LiveEvent, MemoryState
from tests.serving.clusters import AUTH, live_cfg, settings_for


class DownState(MemoryState):
    """A state store that cannot be reached."""

    def __init__(self) -> None:
        super().__init__(max_users=10, max_recent=10, ttl_seconds=60)

    def record(self, events: Sequence[LiveEvent]) -> None:
        raise ConnectionError("state store unreachable")

    def get_many(self, user_ids: Sequence[str]) -> list:
        raise ConnectionError("state store unreachable")


def metric(client: TestClient, name: str, labels: dict[str, str] | None = None) -> float | None:
    return client.app.state.metrics.registry.get_sample_value(name, labels or {})


def test_events_reach_the_state_oldest_first_and_the_landing_buffer(client: TestClient) -> None:
    events = [
        {"user_id": "ordered", "item_id": "a2", "event_type": "view", "ts": "2024-01-01T10:00:00Z"},
        {"user_id": "ordered", "item_id": "a1", "event_type": "purchase", "ts": "2024-01-01T09:00:00+00:00"},
    ]
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 202 and resp.json() == {"accepted": 2, "rejected": 0, "duplicates": 0, "errors": []}
    live = client.app.state.user_state.get("ordered")
    assert live.recent == ("a1", "a2") and live.purchased == {"a1"}
    assert client.app.state.landing.pending == 2
    assert metric(client, "mercato_events_accepted_total") == 2


def test_a_batch_over_the_limit_is_refused_whole(client: TestClient) -> None:
    events = [{"user_id": "many", "item_id": "a1", "event_type": "view"}] * 501
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 413
    assert resp.json() == {"error": "events: batch of 501 events exceeds max_events_per_batch=500; split it"}
    assert metric(client, "mercato_event_batches_rejected_total", {"reason": "too_large"}) == 1
    assert client.app.state.landing.pending == 0 and client.app.state.user_state.get("many").recent == ()


def test_state_down_refuses_the_batch_and_lands_nothing(tmp_path: Path, registry_dir: Path) -> None:
    app = create_app(settings_for(tmp_path / "home", registry_dir), cfg=live_cfg(), poll=False, state=DownState())
    with TestClient(app, headers=AUTH) as client:
        resp = client.post("/v1/events", json={"events": [{"user_id": "u", "item_id": "a1", "event_type": "view"}]})
        assert resp.status_code == 503
        assert resp.json() == {"error": "state: the real-time state store is unavailable (ConnectionError); retry"}
        assert app.state.landing.pending == 0 and app.state.landing.written == 0
        assert metric(client, "mercato_state_errors_total", {"op": "write"}) == 1
        assert metric(client, "mercato_event_batches_rejected_total", {"reason": "state_unavailable"}) == 1
        assert metric(client, "mercato_events_accepted_total") == 0

        answer = client.get("/v1/recommendations/ua0", params={"k": 3})
        assert answer.status_code == 200 and answer.json()["live_items"] == 0, "reads fall back to no live state"
        assert metric(client, "mercato_state_errors_total", {"op": "read"}) == 1


def test_events_carry_request_id_and_position_to_the_landing_zone(client: TestClient) -> None:
    shown = client.get("/v1/recommendations/ua0", params={"k": 3}).json()
    events = [
        {"user_id": "ua0", "item_id": shown["items"][1]["item_id"], "event_type": "click",
         "request_id": shown["request_id"], "position": 2, "ts": "2024-01-01T10:00:00Z"},
        {"user_id": "ua0", "item_id": "a1", "event_type": "view", "ts": "2024-01-01T10:01:00Z"},
        {"user_id": "ua0", "item_id": "a1", "event_type": "click", "request_id": "bad\u0007id"},
        {"user_id": "ua0", "item_id": "a1", "event_type": "click", "position": 0},
        {"user_id": "ua0", "item_id": "a1", "event_type": "click", "position": "third"},
        {"user_id": "ua0", "item_id": "a1", "event_type": "click", "request_id": "r" * 257},
    ]  # fmt: skip
    body = client.post("/v1/events", json={"events": events}).json()
    assert body["accepted"] == 2 and body["rejected"] == 4
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (2, "request_id"),
        (3, "position"),
        (4, "position"),
        (5, "request_id"),
    ]
    assert "U+0007" in body["errors"][0]["message"] and "256" in body["errors"][3]["message"]
    landing = client.app.state.landing
    landing.flush()
    lines = [json.loads(line) for f in Path(landing.lake.landing_events()).rglob("*.jsonl") for line in f.open()]
    assert lines == [
        {"user_id": "ua0", "item_id": shown["items"][1]["item_id"], "event_type": "click",
         "ts": "2024-01-01T10:00:00Z", "request_id": shown["request_id"], "position": 2},
        {"user_id": "ua0", "item_id": "a1", "event_type": "view", "ts": "2024-01-01T10:01:00Z"},
    ]  # fmt: skip
    # no experiment runs, so the API remembers no arm: the click is counted as unattributed
    assert metric(client, "mercato_unattributed_events_total", {"event_type": "click"}) == 1
