"""Hot swap under real concurrent HTTP load: uvicorn in a thread, httpx clients in several threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import uvicorn

from core.config import load_config
from models.registry import ServingRegistry
from serving.app import create_app
from tests.services import free_ports
from tests.serving.clusters import settings_for

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
    cfg = load_config()
    cfg["serving"]["poll_seconds"] = 0.05
    app = create_app(settings_for(tmp_path / "home", reg_dir), cfg=cfg)
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"

    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
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

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(N_CLIENTS)]
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
        server.should_exit = True
        thread.join(30)

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
