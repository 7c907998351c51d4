"""Real-time serving: events in, live state, ranking options, routes, metrics, graceful shutdown.

All against a real BPR model trained on two item clusters (``tests/serving/clusters.py``); the
``registry_dir`` and ``client`` fixtures are in ``tests/serving/conftest.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.lake import Lake
from serving.app import create_app
from serving.state import LiveEvent, MemoryState, open_state
from tests.serving.clusters import AUTH, UNAVAILABLE, cluster_items, live_cfg, served, settings_for


def ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def post(client: TestClient, *events: dict) -> dict:
    resp = client.post("/v1/events", json={"events": list(events)})
    assert resp.status_code == 202, resp.text
    return resp.json()


def alpha_share(items: list[str]) -> float:
    return sum(i.startswith("a") for i in items) / len(items)


def test_events_make_the_next_page_follow_the_user(client: TestClient) -> None:
    before = client.get("/v1/recommendations/newbie", params={"k": 6}).json()
    assert before["fallback"] is True and before["live_items"] == 0
    assert 0 < alpha_share(ids(before)) < 1, "the popularity fallback mixes both clusters"

    body = post(client, *({"user_id": "newbie", "item_id": i, "event_type": "view"} for i in ("b0", "b1", "b2")))
    assert body == {"accepted": 3, "rejected": 0, "duplicates": 0, "errors": []}
    after = client.get("/v1/recommendations/newbie", params={"k": 6}).json()
    assert after["fallback"] is False and after["live_items"] == 3
    assert alpha_share(ids(after)) == 0.0, f"beta items must rise after viewing beta: {ids(after)}"
    assert not {"b0", "b1", "b2"} & set(ids(after)), "seen items are excluded by default"
    assert all(it["reason"].startswith("because you viewed b") for it in after["items"])

    post(client, *({"user_id": "newbie", "item_id": i, "event_type": "click"} for i in ("a0", "a1", "a2", "a3", "a4")))
    shifted = client.get("/v1/recommendations/newbie", params={"k": 6}).json()
    assert alpha_share(ids(shifted)) > alpha_share(ids(after)), "the newest events move the ranking"


def test_known_user_live_purchase_disappears(client: TestClient) -> None:
    first = client.get("/v1/recommendations/ua0", params={"k": 5, "exclude": "purchased"}).json()
    assert first["fallback"] is False
    top = first["items"][0]["item_id"]
    post(client, {"user_id": "ua0", "item_id": top, "event_type": "purchase", "price": 12.5, "quantity": 1})
    second = client.get("/v1/recommendations/ua0", params={"k": 5, "exclude": "purchased"}).json()
    assert top not in ids(second)
    none = client.get("/v1/recommendations/ua0", params={"k": 24, "exclude": "none"}).json()
    assert top in ids(none), "exclude=none keeps purchased items"


def test_no_stale_read_when_events_and_reads_alternate(client: TestClient) -> None:
    catalogue = [i for i in cluster_items()["item_id"] if i != UNAVAILABLE]
    stale = 0
    for n, item in enumerate(catalogue * 2):
        post(client, {"user_id": "alternator", "item_id": item, "event_type": "purchase"})
        body = client.get("/v1/recommendations/alternator", params={"k": 24, "exclude": "purchased"}).json()
        bought = set(catalogue[: n + 1]) if n < len(catalogue) else set(catalogue)
        stale += bool(bought & set(ids(body)))
    assert stale == 0


def test_anonymous_session_route(client: TestClient) -> None:
    resp = client.post("/v1/recommendations", json={"recent_items": ["a1", "a2", "zz-unknown"], "k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] is None and body["fallback"] is False and body["live_items"] == 3
    assert alpha_share(ids(body)) == 1.0 and not {"a1", "a2"} & set(ids(body))
    empty = client.post("/v1/recommendations", json={"k": 3}).json()
    assert empty["fallback"] is True and len(empty["items"]) == 3
    bad = client.post("/v1/recommendations", json={"recent_items": "a1"})
    assert bad.status_code == 422 and "recent_items" in bad.json()["error"]


def test_similar_items_by_cosine(client: TestClient, bpr_artifact: Path) -> None:
    from models.base import Recommender

    body = client.get("/v1/items/a0/similar", params={"k": 4}).json()
    model = Recommender.load(bpr_artifact)
    items = model.item_matrix()
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    row = list(model.item_ids).index("a0")
    cos = unit @ unit[row]
    cos[row] = -np.inf
    cos[list(model.item_ids).index(UNAVAILABLE)] = -np.inf
    expected = [str(model.item_ids[i]) for i in np.argsort(-cos)[:4]]
    assert ids(body) == expected
    assert [it["score"] for it in body["items"]] == pytest.approx(np.sort(cos)[::-1][:4].tolist(), rel=1e-4)
    missing = client.get("/v1/items/nope/similar")
    assert missing.status_code == 404 and "item_id" in missing.json()["error"]


def test_filters_availability_diversity_and_reasons(client: TestClient) -> None:
    every = client.get("/v1/recommendations/ub1", params={"k": 24, "exclude": "none"}).json()
    assert UNAVAILABLE not in ids(every) and len(every["items"]) == 23
    beta = client.get("/v1/recommendations/ua0", params={"k": 5, "category": "beta"}).json()
    assert ids(beta) and all(i.startswith("b") for i in ids(beta))
    priced = client.get("/v1/recommendations/ua0", params={"k": 24, "min_price": 12, "max_price": 14}).json()
    prices = dict(zip(cluster_items()["item_id"], cluster_items()["price"], strict=True))
    assert priced["items"] and all(12 <= prices[i] <= 14 for i in ids(priced))

    post(client, *({"user_id": "div", "item_id": i, "event_type": "view"} for i in ("a0", "a1", "a2")))
    plain = ids(client.get("/v1/recommendations/div", params={"k": 4, "diversity": 0}).json())
    diverse = ids(client.get("/v1/recommendations/div", params={"k": 4, "diversity": 0.9}).json())
    assert alpha_share(plain) == 1.0
    assert 0 < alpha_share(diverse) < 1 and diverse[0] == plain[0], "MMR keeps the best item, then mixes categories"

    fallback = client.get("/v1/recommendations/stranger", params={"k": 5}).json()
    assert {it["reason"] for it in fallback["items"]} <= {"popular in alpha", "popular in beta"}
    assert client.get("/v1/recommendations/ua0", params={"diversity": 2}).status_code == 422
    assert "min_price" in client.get("/v1/recommendations/ua0", params={"min_price": 5, "max_price": 1}).json()["error"]


def test_event_validation_names_index_and_field(client: TestClient) -> None:
    long_id = "x" * 257
    events = [
        {"user_id": "v1", "item_id": "a1", "event_type": "view", "ts": "2024-05-01T10:00:00+02:00"},
        {"user_id": "v1", "item_id": "a1", "event_type": "teleport"},
        {"user_id": "v1", "item_id": "a1", "event_type": "purchase", "price": -1},
        {"user_id": "v1", "item_id": "a1", "event_type": "purchase", "quantity": 0},
        {"user_id": "bad\u0007id", "item_id": "a1", "event_type": "view"},
        {"user_id": long_id, "item_id": "a1", "event_type": "view"},
        "not an object",
        {"user_id": "v1", "event_type": "view"},
        {"user_id": "v1", "item_id": "a1", "event_type": "view", "ts": "yesterday"},
        {"user_id": 7, "item_id": "a1", "event_type": "view"},
        {"user_id": "v1", "item_id": "é", "event_type": "click", "session_id": "s1", "event_id": "e1"},
    ]
    body = post(client, *events)
    assert body["accepted"] == 2 and body["rejected"] == 9
    got = {(e["index"], e["field"]) for e in body["errors"]}
    assert got == {
        (1, "event_type"),
        (2, "price"),
        (3, "quantity"),
        (4, "user_id"),
        (5, "user_id"),
        (6, "event"),
        (7, "item_id"),
        (8, "ts"),
        (9, "user_id"),
    }
    messages = {e["index"]: e["message"] for e in body["errors"]}
    assert "U+0007" in messages[4] and "256" in messages[5]

    too_many = {"events": [{"user_id": "u", "item_id": "i", "event_type": "view"}] * 501}
    resp = client.post("/v1/events", json=too_many)
    assert resp.status_code == 413 and "max_events_per_batch=500" in resp.json()["error"]
    resp = client.post("/v1/events", content=b'{"events": [', headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "malformed JSON" in resp.json()["error"]
    resp = client.post("/v1/events", json=[1, 2])
    assert resp.status_code == 422 and resp.json()["error"].startswith("body: ")
    huge = client.post("/v1/events", content=b"x" * 10, headers={"content-length": str(10**9)})
    assert huge.status_code == 413 and "body" in huge.json()["error"]
    assert client.get("/v1/recommendations/" + "y" * 300).status_code == 422
    control = client.get("/v1/recommendations/a%00b")
    assert control.status_code == 422 and "user_id" in control.json()["error"]


@pytest.mark.integration
def test_streamed_body_over_the_limit_is_refused(tmp_path: Path, registry_dir: Path) -> None:
    """A chunked body carries no Content-Length: it is read up to max_body_bytes and refused past it."""
    app = create_app(settings_for(tmp_path / "home", registry_dir), cfg=live_cfg(max_body_bytes=4096), poll=False)
    event = b'{"user_id": "streamer", "item_id": "a1", "event_type": "view"}'

    def chunks(n: int) -> Iterator[bytes]:
        yield b'{"events": ['
        for i in range(n):
            yield event + (b"," if i < n - 1 else b"")
        yield b"]}"

    json_type = {"content-type": "application/json"}
    with served(app) as base, httpx.Client(base_url=base, timeout=30, headers=AUTH) as http:
        big = http.post("/v1/events", content=chunks(200), headers=json_type)
        assert big.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in big.request.headers
        assert big.status_code == 413 and "4096-byte limit" in big.json()["error"]
        small = http.post("/v1/events", content=chunks(3), headers=json_type)
        assert small.status_code == 202 and small.json()["accepted"] == 3
        assert http.get("/v1/recommendations/streamer").json()["live_items"] == 1  # a1 three times collapses
    assert app.state.landing.written + app.state.landing.pending == 3, "only the small batch was accepted"


def test_landing_micro_batches_and_graceful_shutdown(tmp_path: Path, registry_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", registry_dir)
    cfg = live_cfg(landing_flush_events=5, landing_flush_seconds=3600.0)
    app = create_app(settings, cfg=cfg, poll=False)
    landing = Lake(settings.lake).landing_events()
    sent = [
        {"user_id": f"l{n % 3}", "item_id": f"a{n % 10}", "event_type": "view", "event_id": f"e{n}"} for n in range(13)
    ]
    with TestClient(app, headers=AUTH) as client:
        post(client, *sent[:4])
        assert not list(landing.rglob("*.jsonl")), "below the size threshold nothing is written yet"
        post(client, *sent[4:11])
        assert len(list(landing.rglob("*.jsonl"))) == 1 and app.state.landing.pending == 0
        post(client, *sent[11:])
        assert app.state.landing.pending == 2
    files = sorted(landing.rglob("*.jsonl"))
    assert len(files) == 2, "shutdown flushed the rest"
    assert all(f.parent.name.startswith("dt=") and f.name.startswith("api-") for f in files)
    assert not [p for p in landing.rglob("*") if p.is_file() and not p.name.endswith(".jsonl")], "no temp files left"
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(r["event_id"] for r in lines) == sorted(e["event_id"] for e in sent)
    assert all(r["ts"].endswith("Z") and set(r) >= {"user_id", "item_id", "event_type", "ts"} for r in lines)


def test_landing_flushes_on_time(tmp_path: Path, registry_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", registry_dir)
    app = create_app(settings, cfg=live_cfg(landing_flush_events=1000, landing_flush_seconds=0.2), poll=False)
    landing = Lake(settings.lake).landing_events()
    with TestClient(app, headers=AUTH) as client:
        post(client, {"user_id": "t", "item_id": "a1", "event_type": "view"})
        deadline = time.monotonic() + 10
        while not list(landing.rglob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(landing.rglob("*.jsonl"))) == 1


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    client.get("/v1/recommendations/stranger")
    client.get("/v1/recommendations/ua0")
    post(
        client,
        {"user_id": "m", "item_id": "a1", "event_type": "view"},
        {"user_id": "m", "item_id": "a1", "event_type": "x"},
    )
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert (
        'mercato_request_seconds_bucket{le="0.005",method="GET",route="/v1/recommendations/{user_id}",status="2xx"}'
        in text
    )
    assert 'mercato_model_info{checksum="' in text and 'name="bpr"' in text and 'version="1"' in text
    assert 'mercato_fallback_total{route="/v1/recommendations/{user_id}"} 1.0' in text
    assert "mercato_events_accepted_total 1.0" in text
    assert 'mercato_events_rejected_total{reason="event_type"} 1.0' in text
    assert "mercato_state_users 1.0" in text
    assert "mercato_model_swaps_total 1.0" in text and "mercato_model_refused_swaps_total 0.0" in text


def test_memory_state_is_a_bounded_lru_with_ttl() -> None:
    state = MemoryState(max_users=2, max_recent=3, ttl_seconds=3600)
    state.record([LiveEvent("u1", f"i{n}", "view") for n in range(5)] + [LiveEvent("u1", "i9", "purchase")])
    assert state.get("u1").recent == ("i3", "i4", "i9") and state.get("u1").purchased == {"i9"}
    state.record([LiveEvent("u2", "i1", "view")])
    state.get("u1")
    state.record([LiveEvent("u3", "i1", "view")])
    assert state.size() == 2 and state.evicted == 1
    assert state.get("u2").recent == (), "u2 was least recently active"
    assert [s.recent for s in state.get_many(["u3", "u2", "u1"])] == [("i1",), (), ("i3", "i4", "i9")]
    short = MemoryState(max_users=5, max_recent=3, ttl_seconds=0.05)
    short.record([LiveEvent("u", "i", "view")])
    time.sleep(0.1)
    assert short.get("u").recent == ()
    assert open_state("memory://?max_users=7", 100, 3, 60).max_users == 7  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="RECSYS_STATE_URI"):
        open_state("etcd://x", 1, 1, 1)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue("redis_server")
    return server.url(db=1) + f"?prefix=t{time.monotonic_ns()}"


@pytest.mark.services
def test_two_replicas_share_redis_state(tmp_path: Path, registry_dir: Path, redis_url: str) -> None:
    cfg = live_cfg(state_ttl_seconds=120)
    one = create_app(settings_for(tmp_path / "h1", registry_dir, redis_url), cfg=cfg, poll=False)
    two = create_app(settings_for(tmp_path / "h2", registry_dir, redis_url), cfg=cfg, poll=False)
    with TestClient(one, headers=AUTH) as c1, TestClient(two, headers=AUTH) as c2:
        for n in range(10):
            item = f"b{n}"
            post(c1, {"user_id": "shared", "item_id": item, "event_type": "purchase"})
            body = c2.get("/v1/recommendations/shared", params={"k": 24, "exclude": "purchased"}).json()
            assert item not in ids(body) and body["live_items"] == n + 1
        state = two.state.user_state
        assert state.size() == 1
        shared, nobody = state.get_many(["shared", "nobody"])  # one pipelined round trip
        assert shared.recent == tuple(f"b{n}" for n in range(10)) and shared.purchased == set(shared.recent)
        assert nobody.recent == () and state.get_many([]) == []
        assert 0 < state.client.ttl(state._key("shared", "recent")) <= 120
        assert "mercato_state_users 1.0" in c2.get("/metrics").text
