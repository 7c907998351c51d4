"""Hot swap under real concurrent HTTP load: uvicorn in a thread, httpx clients in several threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from core.config import load_config
from core.registry import ServingRegistry
from serving.app import create_app
from tests.serving.clusters import AUTH, served, settings_for

N_CLIENTS = 4
FLIPS = 6


def requests_for(n: int) -> list[tuple[str, str, dict]]:
    return [
        ("GET", f"/v1/recommendations/ua{2 * (n % 5)}", {"params": {"k": 5}}),
        ("GET", f"/v1/recommendations/stranger{n}", {"params": {"k": 5, "diversity": 0.5}}),
        ("POST", "/v1/events", {"json": {"events": [{"user_id": f"load{n}", "item_id": "b1", "event_type": "view"}]}}),
        ("POST", "/v1/recommendations", {"json": {"recent_items": ["a1", "a2"], "k": 5}}),
        ("GET", "/v1/items/b2/similar", {"params": {"k": 3}}),
    ]


@pytest.mark.integration
def test_no_request_fails_while_champion_flips(tmp_path: Path, bpr_artifact: Path) -> None:
    reg_dir = tmp_path / "registry"
    registry = ServingRegistry(str(reg_dir))
    for version in (1, 2, 3):
        registry.publish(bpr_artifact, "bpr", version)
    tamper_name = "arrays.npz"
    registry.set_champion("bpr", 1)
    cfg = load_config().replace(serving={"poll_seconds": 0.05})
    app = create_app(settings_for(tmp_path / "home", reg_dir), cfg=cfg)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer(worker: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=30, headers=AUTH) as http:
            n = worker
            while not stop.is_set():
                for method, path, kwargs in requests_for(n):
                    try:
                        resp = http.request(method, path, **kwargs)
                    except httpx.HTTPError as exc:
                        with lock:
                            failures.append(f"{method} {path}: {exc!r}")
                        continue
                    with lock:
                        statuses[resp.status_code] += 1
                        if resp.status_code >= 300:
                            failures.append(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
                        elif "model" in resp.json():
                            versions[resp.json()["model"]["version"]] += 1
                n += N_CLIENTS

    with served(app) as base:
        workers = [threading.Thread(target=hammer, args=(w, base)) for w in range(N_CLIENTS)]
        for w in workers:
            w.start()
        try:
            store = app.state.store
            for flip in range(FLIPS):
                target = "2" if flip % 2 == 0 else "1"
                swaps = store.status.swaps
                registry.set_champion("bpr", target)
                end = time.monotonic() + 30
                while store.status.swaps == swaps and time.monotonic() < end:
                    time.sleep(0.02)
                assert store.current.version == target, f"flip {flip} to {target} did not happen: {store.describe()}"
                time.sleep(0.2)
            _tamper_bpr(reg_dir, 3, tamper_name)
            registry.set_champion("bpr", 3)
            end = time.monotonic() + 30
            while store.status.refused == 0 and time.monotonic() < end:
                time.sleep(0.02)
            time.sleep(0.3)
        finally:
            stop.set()
            for w in workers:
                w.join(60)

    assert store.status.swaps >= FLIPS + 1 and store.status.refused == 1
    assert store.current.version in ("1", "2"), "the tampered version 3 was refused, the old model kept serving"
    assert failures == [], failures[:5]
    total = sum(statuses.values())
    assert total > 100 and set(statuses) <= {200, 202}
    assert versions["1"] > 0 and versions["2"] > 0


def _tamper_bpr(reg_dir: Path, version: int, name: str) -> None:
    path = reg_dir / "bpr" / str(version) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.integration
def test_concurrent_requests_are_batched_and_answered_as_if_alone(tmp_path: Path, bpr_artifact: Path) -> None:
    """8 clients at once through real uvicorn: the micro-batcher scores them together (batches > 1 form)
    and every answer equals the one the same request got on an idle server, live state included."""
    reg_dir = tmp_path / "registry"
    registry = ServingRegistry(str(reg_dir))
    registry.publish(bpr_artifact, "bpr", 1)
    registry.set_champion("bpr", 1)
    app = create_app(settings_for(tmp_path / "home", reg_dir), cfg=load_config(), poll=False)
    paths = [f"/v1/recommendations/ua{2 * n}?k=6" for n in range(6)] + [
        "/v1/recommendations/live1?k=6",
        "/v1/recommendations/stranger?k=6",
        "/v1/recommendations/ub1?k=6&category=alpha",
        "/v1/recommendations/ub3?k=4&diversity=0.6",
    ]
    with served(app) as base, httpx.Client(base_url=base, timeout=30, headers=AUTH) as http:
        events = [{"user_id": "live1", "item_id": f"b{n}", "event_type": "view"} for n in (1, 2, 3)]
        assert http.post("/v1/events", json={"events": events}).status_code == 202
        alone = {p: http.get(p).json() for p in paths}
        assert alone["/v1/recommendations/live1?k=6"]["live_items"] == 3
        batcher = app.state.batcher
        got: list[tuple[str, dict]] = []
        lock = threading.Lock()

        def client(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=30, headers=AUTH) as mine:
                for n in range(60):
                    path = paths[(worker + n) % len(paths)]
                    resp = mine.get(path)
                    assert resp.status_code == 200, resp.text
                    with lock:
                        got.append((path, resp.json()))

        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        metrics = http.get("/metrics").text

    assert len(got) == 8 * 60

    def same(a: dict, b: dict) -> bool:  # batched GEMM vs single GEMV: scores agree to float32 rounding
        ids = [(it["item_id"], it["reason"]) for it in a["items"]] == [
            (it["item_id"], it["reason"]) for it in b["items"]
        ]
        scores = [it["score"] for it in a["items"]] == pytest.approx([it["score"] for it in b["items"]], rel=1e-5)
        own = ("items", "request_id")  # request_id is unique per response by design
        rest = {k: v for k, v in a.items() if k not in own} == {k: v for k, v in b.items() if k not in own}
        return ids and scores and rest

    for path, body in got:
        assert same(body, alone[path]), (path, body, alone[path])
    assert batcher.largest > 1, "8 concurrent clients never shared a batch"
    assert batcher.jobs == len(got) + len(paths)
    assert f"mercato_score_batch_size_count {float(batcher.batches)}" in metrics
