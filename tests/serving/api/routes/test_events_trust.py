"""``POST /v1/events`` keeps its promise: one bad event never fails the batch, retries land once, a full
landing zone answers 503 with Retry-After instead of buffering without bound."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.clusters import AUTH, live_cfg, settings_for


def landed(client: TestClient) -> list[dict]:
    landing = client.app.state.landing
    landing.flush()
    return [json.loads(line) for f in sorted(landing.lake.landing_events().rglob("*.jsonl")) for line in f.open()]


def metric(client: TestClient, name: str, labels: dict[str, str] | None = None) -> float | None:
    return client.app.state.metrics.registry.get_sample_value(name, labels or {})


def test_an_out_of_range_ts_rejects_that_event_only(client: TestClient) -> None:
    events = [
        {"user_id": "u", "item_id": "a1", "event_type": "view", "ts": "0001-01-01T00:00:00+01:00"},
        {"user_id": "u", "item_id": "a2", "event_type": "view", "ts": "2024-01-01T10:00:00Z"},
        {"user_id": "u", "item_id": "a3", "event_type": "view", "ts": "9999-12-31T23:59:59-01:00"},
    ]
    resp = client.post("/v1/events", json={"events": events})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "ts"), (2, "ts")]
    assert "out of range once converted to UTC" in body["errors"][0]["message"]
    assert [r["item_id"] for r in landed(client)] == ["a2"]


def test_an_idempotency_key_makes_a_retry_land_once(client: TestClient) -> None:
    batch = {"events": [{"user_id": "r", "item_id": f"a{n}", "event_type": "view"} for n in range(3)]}
    first = client.post("/v1/events", json=batch, headers={"Idempotency-Key": "batch-1"})
    again = client.post("/v1/events", json=batch, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert len(landed(client)) == 3, "no ts given: without the key the retry would land 3 more (new ts)"
    assert client.app.state.user_state.get("r").recent == ("a0", "a1", "a2"), "the live state counted it once"
    other = client.post("/v1/events", json={"events": batch["events"][:1]}, headers={"Idempotency-Key": "batch-1"})
    assert other.status_code == 422 and "different body" in other.json()["error"]
    bad = client.post("/v1/events", json=batch, headers={"Idempotency-Key": "spaces are not allowed"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("Idempotency-Key:")
    assert metric(client, "mercato_idempotent_replays_total") == 1


def test_event_ids_seen_before_are_duplicates_or_conflicts_never_first_wins(client: TestClient) -> None:
    event = {"user_id": "d", "item_id": "a1", "event_type": "click", "event_id": "ev-1", "ts": "2024-01-01T10:00:00Z"}
    assert client.post("/v1/events", json={"events": [event]}).json()["accepted"] == 1
    retry = client.post("/v1/events", json={"events": [event, {**event, "event_id": "ev-2"}]}).json()
    assert retry == {"accepted": 2, "rejected": 0, "duplicates": 1, "errors": []}
    changed = client.post("/v1/events", json={"events": [{**event, "item_id": "a2"}]}).json()
    assert changed["accepted"] == 0 and changed["rejected"] == 1
    assert changed["errors"][0]["field"] == "event_id" and "different payload" in changed["errors"][0]["message"]
    twice = client.post("/v1/events", json={"events": [{**event, "event_id": "ev-3"}, {**event, "event_id": "ev-3"}]})
    assert twice.json()["duplicates"] == 1
    assert sorted(r["event_id"] for r in landed(client)) == ["ev-1", "ev-2", "ev-3"]
    assert metric(client, "mercato_event_duplicates_total") == 2
    assert metric(client, "mercato_events_rejected_total", {"reason": "event_id"}) == 1


def test_a_landing_zone_that_cannot_keep_up_gets_503_with_retry_after(tmp_path: Path, registry_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", registry_dir)
    lake = Path(settings.lake)
    cfg = live_cfg(landing_flush_events=2, landing_max_pending=4, landing_flush_seconds=0.2)
    app = create_app(settings, cfg=cfg, poll=False)
    (lake / "landing").mkdir(parents=True)
    (lake / "landing" / "events").write_text("a file where the landing folder should be: every write fails")
    event = {"user_id": "f", "item_id": "a1", "event_type": "view"}
    with TestClient(app, headers=AUTH) as client:
        assert client.post("/v1/events", json={"events": [event] * 3}).status_code == 202
        refused = client.post("/v1/events", json={"events": [event] * 2})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "waiting for the landing zone" in refused.json()["error"]
        assert app.state.landing.pending == 3 and app.state.landing.write_errors >= 1
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "landing" in health["degraded"]
        (lake / "landing" / "events").unlink()  # space again: the writer's timer retries on its own
        deadline = time.monotonic() + 10
        while app.state.landing.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.landing.pending == 0, "the next flush lands everything kept"
        assert client.post("/v1/events", json={"events": [event] * 2}).status_code == 202
    assert len([line for f in (lake / "landing" / "events").rglob("*.jsonl") for line in f.open()]) == 5
