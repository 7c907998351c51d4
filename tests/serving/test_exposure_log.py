"""Every answer carries a request id and lands in the exposure log with the exact contract of
docs/ARCHITECTURE.md ("Data contracts"), written off the request path by a bounded landing writer."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from core.ids import ulid_time
from core.lake import Lake
from serving.app import create_app
from serving.events import LandingWriter
from tests.serving.clusters import AUTH, live_cfg, served, settings_for

ROUTES = {
    "user": "/v1/recommendations/{user_id}",
    "session": "/v1/recommendations",
    "similar": "/v1/items/{item_id}/similar",
}


def calls(http: httpx.Client | TestClient) -> list[tuple[str, dict[str, Any]]]:
    """One call per route and case (known user, fallback user, filters, sessions, similar), in order."""
    filters = {"k": 5, "category": "beta", "min_price": 11, "max_price": 20.5, "diversity": 0.5, "exclude": "purchased"}
    return [
        ("user", http.get("/v1/recommendations/ua0", params={"k": 4, "session_id": "sess-1"}).json()),
        ("user", http.get("/v1/recommendations/nobody", params={"k": 3}).json()),  # fallback
        ("user", http.get("/v1/recommendations/ub1", params=filters).json()),
        ("session", http.post("/v1/recommendations", json={"recent_items": ["a1", "a2"], "k": 3}).json()),
        ("session", http.post("/v1/recommendations", json={"k": 2, "session_id": "sess-2"}).json()),  # fallback
        ("similar", http.get("/v1/items/a0/similar", params={"k": 3, "user_id": "ua0", "session_id": "sess-1"}).json()),
    ]


def test_every_route_answers_with_a_unique_time_ordered_request_id(client: TestClient) -> None:
    answers = calls(client) + calls(client)
    ids = [body["request_id"] for _, body in answers]
    assert len(set(ids)) == len(ids) and ids == sorted(ids), "unique, and sorted in the order they were served"
    assert all(len(i) == 26 for i in ids)
    assert [body.get("fallback") for _, body in answers[:6]] == [False, True, False, False, True, None]
    for _, body in answers:
        assert (
            body["experiment"] is None and body["variant"] is None and body["model"] == {"name": "bpr", "version": "1"}
        )
        assert all("team" not in item for item in body["items"]), "team only in interleaving experiments"


def _records(lake: Lake) -> list[dict[str, Any]]:
    files = sorted(lake.landing_exposures().rglob("*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


@pytest.mark.integration
def test_exposure_records_land_with_the_contract(tmp_path: Path, registry_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", registry_dir)
    app = create_app(settings, cfg=live_cfg(exposure_flush_events=4, exposure_flush_seconds=3600.0), poll=False)
    with served(app) as base, httpx.Client(base_url=base, timeout=30, headers=AUTH) as http:
        answers = calls(http)
    lake = Lake(settings.lake)
    files = sorted(lake.landing_exposures().rglob("*"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert {f.parent.name for f in files if f.is_file()} <= {
        f"dt={today}",
        f"dt={dt.date.fromisoformat(today) + dt.timedelta(days=1)}",
    }
    assert all(f.name.startswith("api-") and f.suffix == ".jsonl" for f in files if f.is_file()), files
    records = {r["request_id"]: r for r in _records(lake)}
    assert len(records) == len(answers), "one record per answer (shutdown flushed the rest)"
    assert not list(lake.landing_events().rglob("*.jsonl")), "exposures never go to the events folder"

    keys = {"request_id", "ts", "user_id", "session_id", "route", "model_name", "model_version", "experiment",
            "variant", "fallback", "filters", "items"}  # fmt: skip
    for kind, body in answers:
        record = records[body["request_id"]]
        assert set(record) == keys
        assert record["ts"].endswith("Z") and dt.datetime.fromisoformat(record["ts"]) == ulid_time(record["request_id"])
        assert record["route"] == ROUTES[kind]
        assert (record["model_name"], record["model_version"]) == ("bpr", "1")
        assert record["experiment"] is None and record["variant"] is None
        assert record["fallback"] is body.get("fallback", False)
        assert set(record["filters"]) == {"exclude", "category", "min_price", "max_price", "diversity"}
        assert [(it["item_id"], it["position"], it["score"], it["team"]) for it in record["items"]] == [
            (it["item_id"], n, it["score"], None) for n, it in enumerate(body["items"], start=1)
        ]
        assert all(isinstance(it["score"], float) for it in record["items"])
    first, fallback, filtered, session, anonymous, similar = (records[b["request_id"]] for _, b in answers)
    assert (first["user_id"], first["session_id"]) == ("ua0", "sess-1")
    assert first["filters"] == {"exclude": "seen", "category": None, "min_price": None, "max_price": None,
                                "diversity": 0.0}  # fmt: skip
    assert fallback["fallback"] is True and fallback["user_id"] == "nobody" and fallback["session_id"] is None
    assert filtered["filters"] == {"exclude": "purchased", "category": "beta", "min_price": 11.0, "max_price": 20.5,
                                   "diversity": 0.5}  # fmt: skip
    assert (session["user_id"], session["session_id"], anonymous["session_id"]) == (None, None, "sess-2")
    assert anonymous["fallback"] is True
    assert (similar["user_id"], similar["session_id"], similar["filters"]["exclude"]) == ("ua0", "sess-1", "none")


def test_exposure_logging_can_be_turned_off(tmp_path: Path, registry_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", registry_dir)
    app = create_app(settings, cfg=live_cfg(log_exposures=False), poll=False)
    with TestClient(app, headers=AUTH) as client:
        body = client.get("/v1/recommendations/ua0").json()
        assert len(body["request_id"]) == 26
        assert "mercato_exposures_written" not in client.get("/metrics").text
    assert app.state.exposures is None and not Lake(settings.lake).landing_exposures().exists()


def test_metrics_count_exposures(client: TestClient) -> None:
    calls(client)
    text = client.get("/metrics").text
    assert "mercato_exposures_pending 6.0" in text and "mercato_exposures_written_total 0.0" in text
    assert (
        'mercato_experiment_requests_total{experiment="none",route="/v1/recommendations/{user_id}",variant="none"} 3.0'
        in text
    )


class _ThreadRecordingWriter(LandingWriter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer_threads: list[str] = []
        self.broken = False

    def _write(self, batch: list[dict[str, Any]], target: Path) -> Path:
        self.writer_threads.append(threading.current_thread().name)
        if self.broken:
            raise OSError("lake unreachable")
        return super()._write(batch, target)


def test_the_exposure_writer_never_writes_on_the_callers_thread_and_is_bounded(tmp_path: Path) -> None:
    writer = _ThreadRecordingWriter(
        tmp_path / "lake", 2, 3600.0, "api", dataset="exposures", flush_inline=False, max_pending=5
    )
    writer.start()
    try:
        writer.add([{"n": 1}, {"n": 2}, {"n": 3}])  # over flush_events: the writer thread is woken, not called
        assert threading.current_thread().name not in writer.writer_threads
        deadline = time.monotonic() + 10
        while writer.written < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.written == 3 and writer.writer_threads == ["landing-exposures"], "flushed at once, not in 1 h"
        assert [p.parent.parent.name for p in (tmp_path / "lake").rglob("*.jsonl")] == ["exposures"]

        writer.broken = True
        writer.add([{"n": n} for n in range(4)])
        writer.add([{"n": n} for n in range(4)])
        assert writer.pending == 5 and writer.dropped == 3, "at most max_pending wait; the rest are counted"
        while writer.write_errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.write_errors >= 1 and writer.pending == 5, "a failed flush keeps what it had"
        writer.broken = False
    finally:
        flushed = writer.close()
    assert writer.written == 8 and writer.pending == 0 and flushed + 3 == writer.written
