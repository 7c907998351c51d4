"""Experiments in the API: arms loaded and verified like the champion, hot-swapped, refused when broken;
sticky assignment, interleaving, per-variant /metrics (toy models on a real local registry)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.experiments import INTERLEAVING, assign, interleaving_seed, new_document, team_draft
from core.registry import EXPERIMENT, ServingRegistry
from serving.app import create_app
from serving.experiments import ExperimentStore
from serving.store import ModelStore
from tests.services import free_ports, stop_process
from tests.serving.clusters import AUTH, flipped_copy, live_cfg, settings_for
from tests.serving.test_store import publish, tamper


@pytest.fixture
def reg_root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def registry(reg_root: Path, tmp_path: Path) -> ServingRegistry:
    """toy/1 (champion), toy/2 and toy/3 published."""
    reg = ServingRegistry(str(reg_root))
    publish(reg, tmp_path, 1)
    for version in (2, 3):
        publish(reg, tmp_path, version, champion=False)
    return reg


def start(reg: ServingRegistry, treatment: str = "2", **kwargs: object) -> dict:
    doc = new_document("toy-exp", ("toy", "1"), [("toy", treatment)], salt="pepper", **kwargs)  # type: ignore[arg-type]
    return reg.write_experiment(doc)


@pytest.fixture
def stores(registry: ServingRegistry, tmp_path: Path) -> tuple[ModelStore, ExperimentStore]:
    champion = ModelStore(registry, tmp_path / "cache", poll_seconds=60)
    champion.refresh()
    return champion, ExperimentStore(registry, tmp_path / "xcache", 60, champion=lambda: champion.current)


def test_arms_load_verified_and_the_champion_is_reused(
    stores: tuple[ModelStore, ExperimentStore], registry: ServingRegistry, tmp_path: Path
) -> None:
    champion, experiments = stores
    assert experiments.refresh() is False and experiments.current is None, "no experiment.json: champion alone"
    doc = start(registry, shares=[0.25, 0.75])
    assert experiments.refresh() is True
    live = experiments.current
    assert live is not None and live.name == "toy-exp" and live.checksum == doc["checksum"]
    control, treatment = live.arms
    assert (control.variant, control.share, treatment.variant, treatment.share) == ("control", 0.25, "treatment", 0.75)
    assert control.loaded is champion.current, "the control is the serving champion: not fetched again"
    assert treatment.loaded.version == "2" and treatment.loaded.path.parent.parent == tmp_path / "xcache"
    assert treatment.loaded.checksum == registry.manifest("toy", 2)["checksum"]
    assert experiments.refresh() is False, "same document: nothing reloaded"
    users = [f"user{n}" for n in range(200)]
    assert [live.arm_for(u).variant for u in users] == [
        ("control", "treatment")[assign("pepper", u, [0.25, 0.75])] for u in users
    ]


def test_hot_swap_of_arms_then_stop(
    stores: tuple[ModelStore, ExperimentStore], registry: ServingRegistry, tmp_path: Path
) -> None:
    _, experiments = stores
    start(registry)
    experiments.refresh()
    before = experiments.current
    assert before is not None
    start(registry, treatment="3")
    assert experiments.refresh() is True
    after = experiments.current
    assert after is not None and after.arms[1].loaded.version == "3"
    assert before.arms[1].loaded.version == "2", "a request holding the old experiment keeps it"
    cached = sorted(p.name for p in (tmp_path / "xcache" / "toy").iterdir())
    assert cached == [after.arms[1].loaded.path.name], "the replaced arm's files are pruned"
    registry.write_experiment({**registry.experiment(), "status": "stopped", "checksum": None})
    assert experiments.refresh() is True and experiments.current is None
    assert experiments.status.swaps == 2 and experiments.status.ended == 1


def test_a_broken_arm_or_document_never_replaces_the_running_experiment(
    stores: tuple[ModelStore, ExperimentStore], registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    _, experiments = stores
    start(registry)
    experiments.refresh()
    running = experiments.current
    publish(registry, tmp_path, 4, champion=False)
    tamper(reg_root, 4)
    start(registry, treatment="4")
    assert experiments.refresh() is False
    assert experiments.current is running and experiments.status.refused == 1
    assert "arm 'treatment' (toy/4)" in experiments.status.last_error and "arrays.npz" in experiments.status.last_error
    assert experiments.refresh() is False and experiments.status.refused == 1, "a refused document is not retried"
    assert not [p for p in (tmp_path / "xcache" / "toy").iterdir() if p.name.startswith("4-")]

    path = reg_root / EXPERIMENT
    hacked = json.loads(path.read_text())
    hacked["arms"][1]["version"] = "3"  # edited by hand: the checksum no longer matches
    path.write_text(json.dumps(hacked))
    assert experiments.refresh() is False and experiments.current is running
    assert experiments.status.refused == 2 and "edited outside the registry" in experiments.status.last_error

    start(registry, treatment="3")
    assert experiments.refresh() is True and experiments.current.arms[1].loaded.version == "3"


def test_a_broken_first_experiment_leaves_the_champion_alone(
    stores: tuple[ModelStore, ExperimentStore], registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    _, experiments = stores
    publish(registry, tmp_path, 5, champion=False)
    tamper(reg_root, 5, "ids.json")
    start(registry, treatment="5")
    assert experiments.refresh() is False and experiments.current is None
    assert experiments.describe()["refused"] == 1


def api(tmp_path: Path, reg_root: Path, **serving: object) -> TestClient:
    app = create_app(settings_for(tmp_path / "home", reg_root), cfg=live_cfg(**serving), poll=False)
    return TestClient(app, headers=AUTH)


def metric(client: TestClient, name: str, labels: dict[str, str]) -> float | None:
    return client.app.state.metrics.registry.get_sample_value(name, labels)


def test_users_stay_in_their_arm_and_metrics_count_requests_and_attributed_clicks(
    registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    start(registry, shares=[0.5, 0.5])
    users = [f"u{n}" for n in range(5)] + [f"stranger{n}" for n in range(25)]
    with api(tmp_path, reg_root) as client:
        seen: dict[str, set[str]] = {}
        bodies = []
        for _ in range(4):
            for user in users:
                body = client.get(f"/v1/recommendations/{user}", params={"k": 3}).json()
                assert body["experiment"] == "toy-exp"
                assert body["model"]["version"] == ("1" if body["variant"] == "control" else "2")
                seen.setdefault(user, set()).add(body["variant"])
                bodies.append(body)
        assert all(len(v) == 1 for v in seen.values()), "sticky"
        assert {u: v.pop() for u, v in seen.items()} == {
            u: ("control", "treatment")[assign("pepper", u, [0.5, 0.5])] for u in users
        }
        expected = Counter(b["variant"] for b in bodies)
        for variant, count in expected.items():
            labels = {"experiment": "toy-exp", "variant": variant, "route": "/v1/recommendations/{user_id}"}
            assert metric(client, "mercato_experiment_requests_total", labels) == count

        clicks = [b for b in bodies if b["items"]][:10]
        events = [
            {
                "user_id": b["user_id"],
                "item_id": b["items"][0]["item_id"],
                "event_type": "click",
                "request_id": b["request_id"],
                "position": 1,
            }
            for b in clicks
        ]
        events.append({"user_id": "u0", "item_id": "i1", "event_type": "click", "request_id": "01UNKNOWNREQUEST"})
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 11
        for variant, count in Counter(b["variant"] for b in clicks).items():
            labels = {"experiment": "toy-exp", "variant": variant, "event_type": "click"}
            assert metric(client, "mercato_attributed_events_total", labels) == count
        assert metric(client, "mercato_unattributed_events_total", {"event_type": "click"}) == 1
        text = client.get("/metrics").text
        assert 'mercato_experiment_info{arms="control=toy/1@0.5,treatment=toy/2@0.5"' in text
        assert "mercato_experiment_swaps_total 1.0" in text and "mercato_experiment_refused_total 0.0" in text


def test_sessions_and_anonymous_requests_are_assigned_by_session_else_by_request(
    registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    start(registry)
    with api(tmp_path, reg_root) as client:
        for session in ("s1", "s2", "s3", "s4"):
            variants = {
                client.post("/v1/recommendations", json={"k": 2, "session_id": session}).json()["variant"]
                for _ in range(5)
            }
            assert variants == {("control", "treatment")[assign("pepper", session, [0.5, 0.5])]}
        anonymous = [client.post("/v1/recommendations", json={"k": 2}).json() for _ in range(40)]
        assert {b["variant"] for b in anonymous} == {"control", "treatment"}, "a random unit per request"
        assert all(
            b["variant"] == ("control", "treatment")[assign("pepper", b["request_id"], [0.5, 0.5])] for b in anonymous
        )
        similar = client.get("/v1/items/i1/similar", params={"k": 3, "user_id": "u3"}).json()
        assert similar["experiment"] == "toy-exp"
        assert similar["variant"] == ("control", "treatment")[assign("pepper", "u3", [0.5, 0.5])]


def test_interleaving_merges_both_arms_and_credits_clicks_to_the_team(
    registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    start(registry, kind=INTERLEAVING)
    with api(tmp_path, reg_root) as client:
        experiments = client.app.state.experiments
        control, treatment = (arm.loaded.scorer for arm in experiments.current.arms)
        teams_seen = Counter()
        for user in ("u0", "u1", "u2", "u3", "u4"):
            body = client.get(f"/v1/recommendations/{user}", params={"k": 4}).json()
            assert body["variant"] == "interleaved" and body["model"] == {"name": "toy", "version": "1"}
            first = [it.item_id for it in control.recommend(user, 4).items]
            second = [it.item_id for it in treatment.recommend(user, 4).items]
            merged = team_draft(first, second, 4, random.Random(interleaving_seed("pepper", body["request_id"])))
            assert [(it["item_id"], it["team"]) for it in body["items"]] == [
                (item, ("control", "treatment")[team]) for item, team in merged
            ]
            teams_seen.update(it["team"] for it in body["items"])
            events = [
                {"user_id": user, "item_id": it["item_id"], "event_type": "click", "request_id": body["request_id"],
                 "position": pos}
                for pos, it in enumerate(body["items"], start=1)
            ]  # fmt: skip
            assert client.post("/v1/events", json={"events": events}).status_code == 202
        for team, count in teams_seen.items():
            labels = {"experiment": "toy-exp", "variant": team, "event_type": "click"}
            assert metric(client, "mercato_attributed_events_total", labels) == count
        plain = client.get("/v1/recommendations/u0", params={"k": 4}).json()
        assert set(plain["items"][0]) == {"item_id", "score", "reason", "team"}


def test_the_api_picks_up_and_ends_experiments_by_polling(
    registry: ServingRegistry, reg_root: Path, tmp_path: Path
) -> None:
    app = create_app(settings_for(tmp_path / "home", reg_root), cfg=live_cfg(poll_seconds=0.05))
    with TestClient(app, headers=AUTH) as client:
        assert client.get("/v1/recommendations/u1").json()["experiment"] is None
        start(registry)
        deadline = time.monotonic() + 20
        while client.get("/v1/recommendations/u1").json()["experiment"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/v1/recommendations/u1").json()["experiment"] == "toy-exp"
        registry.clear_experiment()
        while client.get("/v1/recommendations/u1").json()["experiment"] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        body = client.get("/v1/recommendations/u1").json()
        assert body["experiment"] is None and body["variant"] is None and body["model"]["version"] == "1"


@pytest.mark.services
@pytest.mark.slow
def test_assignment_is_sticky_across_two_api_processes_sharing_redis(
    request: pytest.FixtureRequest, bpr_artifact: Path, tmp_path: Path
) -> None:
    """Two real API processes (``python -m serving``) over one registry and one redis-server: 1,000
    requests for 100 users alternate between them; every user keeps one arm, the salted hash's; a click
    posted to one process is attributed to the arm the other process served."""
    redis = request.getfixturevalue("redis_server")
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(bpr_artifact, "bpr", 1)
    reg.set_champion("bpr", 1)
    reg.publish(flipped_copy(bpr_artifact, tmp_path / "flipped"), "bpr", 2)
    reg.write_experiment(new_document("flip", ("bpr", "1"), [("bpr", "2")], shares=[0.3, 0.7], salt="sticky"))

    root = Path(__file__).resolve().parents[2]
    state_uri = redis.url(db=2) + f"?prefix=x{time.monotonic_ns()}"
    ports = free_ports(2)
    procs, logs = [], []
    for n, port in enumerate(ports):
        env = dict(os.environ, PYTHONPATH=str(root), RECSYS_HOME=str(tmp_path / f"home{n}"))
        env.update(RECSYS_REGISTRY_URI=str(tmp_path / "registry"), RECSYS_STATE_URI=state_uri)
        env.update(RECSYS_PORT=str(port), RECSYS_HOST="127.0.0.1", RECSYS_WORKERS="1")
        logs.append(tmp_path / f"api{n}.log")
        with open(logs[-1], "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "serving"], cwd=root, env=env, stdout=log, stderr=log))
    try:
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=AUTH) for port in ports]
        deadline = time.monotonic() + 180
        for client, proc, log_path in zip(clients, procs, logs, strict=True):
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)

        users = [f"ua{n}" if n % 2 == 0 else f"visitor{n}" for n in range(100)]
        variants: dict[str, set[str]] = {u: set() for u in users}
        served_by: dict[str, tuple[int, dict]] = {}
        for n in range(1000):
            which = n % 2
            user = users[(n // 2) % len(users)]
            body = clients[which].get(f"/v1/recommendations/{user}", params={"k": 3}).json()
            assert body["experiment"] == "flip", body
            assert body["model"]["version"] == {"control": "1", "treatment": "2"}[body["variant"]]
            variants[user].add(body["variant"])
            served_by[user] = (which, body)
        assert all(len(v) == 1 for v in variants.values()), {u: v for u, v in variants.items() if len(v) > 1}
        assert {u: v.pop() for u, v in variants.items()} == {
            u: ("control", "treatment")[assign("sticky", u, [0.3, 0.7])] for u in users
        }

        which, body = served_by["ua0"]
        other = clients[1 - which]
        click = {"user_id": "ua0", "item_id": body["items"][0]["item_id"], "event_type": "click",
                 "request_id": body["request_id"], "position": 1}  # fmt: skip
        assert other.post("/v1/events", json={"events": [click]}).json()["accepted"] == 1
        labels = f'event_type="click",experiment="flip",variant="{body["variant"]}"'
        assert f"mercato_attributed_events_total{{{labels}}} 1.0" in other.get("/metrics").text
    finally:
        for proc in procs:
            stop_process(proc)
