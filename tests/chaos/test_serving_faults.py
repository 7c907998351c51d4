"""Faults against real processes: the scoring API (``python -m serving``), ``redis-server``, ``weed mini``.

Each test breaks something for real (``kill -9`` under load, ``SIGSTOP`` / kill of Redis, a TCP peer that
never answers, the S3 registry stopped, a full filesystem under the landing zone, tampered and
path-escaping artifacts, two processes racing a promotion) and asserts what a client sees and what is
kept. The figures they measure are printed (``pytest -s``) and recorded in notes/issue11-figures.md.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core.registry import CHAMPION, MANIFEST, ServingRegistry, overall_checksum, sha256_file
from tests.chaos.serving_procs import (
    Api,
    PrivateRedis,
    PrivateWeed,
    running_api,
    serving_config,
    silent_listener,
)
from tests.conftest import PROJECT_ROOT
from tests.services import S3Server
from tests.serving.clusters import AUTH, export_bpr, flipped_copy

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

#: The issue's bound: no recommendation waits longer than this while Redis hangs or is down. The state
#: timeout is 0.25 s and the breaker answers at once after the first failure, so 1 s holds on a loaded
#: 2-core machine too (the worst measured is in notes/issue11-figures.md).
MAX_LATENCY_S = 1.0
USERS = [f"ua{n}" for n in range(0, 60, 2)] + [f"ub{n}" for n in range(1, 60, 2)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_bpr(tmp_path_factory.mktemp("chaos-bpr") / "artifact")


@pytest.fixture
def registry(tmp_path: Path, artifact: Path) -> Path:
    reg = ServingRegistry(str(tmp_path / "registry"))
    reg.publish(artifact, "bpr", 1)
    reg.set_champion("bpr", 1)
    return tmp_path / "registry"


def landed(home_or_lake: Path) -> Counter[str]:
    """``event_id`` → how many times it is in the landing zone (``<lake>/landing/events/dt=*/*.jsonl``)."""
    lake = home_or_lake / "lake" if (home_or_lake / "lake").is_dir() else home_or_lake
    found: Counter[str] = Counter()
    for path in sorted((lake / "landing" / "events").glob("dt=*/*.jsonl")):
        if path.name.startswith("."):
            continue
        for line in path.read_text().splitlines():
            found[json.loads(line)["event_id"]] += 1
    return found


def event_batch(tag: str, n: int) -> list[dict]:
    return [
        {"user_id": USERS[i % len(USERS)], "item_id": f"a{i % 12}", "event_type": "view", "event_id": f"{tag}-{i}"}
        for i in range(n)
    ]


# ---- a. kill -9 under load ------------------------------------------------------------------------------
def test_kill_9_under_load_lands_every_acknowledged_event_exactly_once(tmp_path: Path, registry: Path) -> None:
    """2,000 events in batches of 20 from 4 threads; SIGKILL once about half are acknowledged; restart on the
    same home. Every 202 event lands once; only batches whose answer the kill cut off may land unacknowledged."""
    home = tmp_path / "home"
    # nothing reaches the landing zone before the kill: every landed event comes from the log's replay
    config = serving_config(tmp_path, landing_flush_events=100_000, landing_flush_seconds=600.0)
    n_threads, batches_per_thread, size = 4, 25, 20
    acked: set[str] = set()
    unknown: set[str] = set()  # the request was sent, the answer never came (the kill)
    refused: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    with running_api(home, str(registry), config) as api:

        def post(thread: int) -> None:
            with httpx.Client(base_url=api.base, headers=AUTH, timeout=10) as client:
                for b in range(batches_per_thread):
                    if stop.is_set():
                        return
                    events = event_batch(f"t{thread}b{b}", size)
                    ids = {e["event_id"] for e in events}
                    try:
                        resp = client.post("/v1/events", json={"events": events})
                    except httpx.HTTPError:
                        with lock:
                            unknown.update(ids)
                        return
                    with lock:
                        (acked if resp.status_code == 202 else refused).update(ids)

        threads = [threading.Thread(target=post, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        total = n_threads * batches_per_thread * size
        deadline = time.monotonic() + 120
        while len(acked) < total // 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        api.kill9()
        stop.set()
        for thread in threads:
            thread.join(30)
        before_restart = landed(home)

    assert not refused, f"{len(refused)} events refused before the kill: {api.log()}"
    assert total // 2 <= len(acked) < total, "the kill must come mid-load"
    assert not before_restart, "the landing zone must be empty at the kill (the flush settings above)"
    with running_api(home, str(registry), config) as again:
        again.stop()  # graceful: flushes what the restart replayed and anything else
    found = landed(home)
    duplicates = {event_id: n for event_id, n in found.items() if n > 1}
    lost = acked - set(found)
    unexpected = set(found) - acked - unknown
    print(
        f"\nkill -9 under load: acknowledged {len(acked)}, landed {len(found)} "
        f"(before the restart {sum(before_restart.values())}), in flight at the kill {len(unknown)}, "
        f"lost {len(lost)}, duplicated {len(duplicates)}"
    )
    assert not lost, f"{len(lost)} acknowledged events never landed, e.g. {sorted(lost)[:5]}"
    assert not duplicates, f"events landed more than once: {dict(list(duplicates.items())[:5])}"
    assert not unexpected, f"events landed that were never sent or were refused: {sorted(unexpected)[:5]}"
    assert len(found) - len(acked) <= len(unknown)


# ---- b. Redis hangs, dies, or never answers ---------------------------------------------------------------
#: One answered recommendation: (seconds since the load began when it was sent, latency, status, live).
Answer = tuple[float, float, int, bool | None]


def hammer(
    api: Api, seconds: float, threads: int = 4, fault: Callable[[], None] | None = None, fault_after: float = 0.0
) -> list[Answer]:
    """GET recommendations from ``threads`` clients for ``seconds``; ``fault`` is done ``fault_after`` seconds in."""
    out: list[Answer] = []
    lock = threading.Lock()
    began = time.monotonic()
    until = began + seconds

    def run(n: int) -> None:
        with httpx.Client(base_url=api.base, headers=AUTH, timeout=30) as client:
            i = n
            while time.monotonic() < until:
                sent = time.monotonic() - began
                started = time.perf_counter()
                resp = client.get(f"/v1/recommendations/{USERS[i % len(USERS)]}", params={"k": 5})
                took = time.perf_counter() - started
                live = resp.json().get("live") if resp.status_code == 200 else None
                with lock:
                    out.append((sent, took, resp.status_code, live))
                i += threads

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    if fault is not None:
        time.sleep(fault_after)
        fault()
    for worker in workers:
        worker.join(seconds + 60)
    return out


def assert_degraded_answers(api: Api, results: list[Answer], what: str, fault_after: float = 0.0) -> float:
    """Every request (before and after the fault) answered 200 within the bound; those sent after the fault
    say ``live: false``; events get 503 + Retry-After; health says degraded (state). Returns the worst latency."""
    after = [r for r in results if r[0] > fault_after + 0.2]
    assert after, f"{what}: no request was answered after the fault"
    worst = max(took for _, took, _, _ in results)
    statuses = Counter(status for _, _, status, _ in results)
    assert statuses == {200: len(results)}, f"{what}: {statuses}"
    assert worst < MAX_LATENCY_S, f"{what}: a request waited {worst:.3f}s (bound {MAX_LATENCY_S}s)"
    claimed = [r for r in after if r[3] is not False]
    assert not claimed, f"{what}: {len(claimed)} answers after the fault claimed live state"
    events = httpx.post(f"{api.base}/v1/events", json={"events": event_batch(what, 3)}, headers=AUTH, timeout=5)
    assert events.status_code == 503 and int(events.headers["Retry-After"]) >= 1, (what, events.text)
    health = api.health().json()
    assert health["status"] == "degraded" and "state" in health["degraded"], (what, health)
    return worst


def wait_live(api: Api, timeout: float = 20.0) -> float:
    """Seconds until a recommendation says ``live: true`` and health is ok again."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        body = httpx.get(f"{api.base}/v1/recommendations/ua0", headers=AUTH, timeout=5).json()
        if body.get("live") and api.health().json()["status"] == "ok":
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"the API did not recover live state within {timeout}s: {api.health().json()}")


@pytest.mark.services
def test_redis_hang_and_death_answer_fast_without_live_state_then_recover(tmp_path: Path, registry: Path) -> None:
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        with running_api(tmp_path / "home", str(registry), RECSYS_STATE_URI=redis.url()) as api:
            ok = httpx.post(f"{api.base}/v1/events", json={"events": event_batch("warm", 5)}, headers=AUTH, timeout=5)
            assert ok.status_code == 202, ok.text
            before = hammer(api, 1.0, threads=2)
            assert before and all(status == 200 and live for _, _, status, live in before), Counter(before)

            # mid-load, Redis hangs (SIGSTOP: connections stay open, nothing is answered)
            hung = hammer(api, 4.0, fault=lambda: redis.signal(signal.SIGSTOP), fault_after=1.0)
            worst_hang = assert_degraded_answers(api, hung, "redis-hang", fault_after=1.0)
            redis.signal(signal.SIGCONT)
            back_after_hang = wait_live(api)

            # mid-load, Redis dies (connections refused)
            dead = hammer(api, 4.0, fault=redis.kill, fault_after=1.0)
            worst_dead = assert_degraded_answers(api, dead, "redis-down", fault_after=1.0)
            redis.start()
            back_after_restart = wait_live(api)
            print(
                f"\nRedis hang: {len(hung)} requests, worst {1e3 * worst_hang:.0f} ms, live again "
                f"{back_after_hang:.1f}s after SIGCONT; Redis down: {len(dead)} requests, worst "
                f"{1e3 * worst_dead:.0f} ms, live again {back_after_restart:.1f}s after restart"
            )
    finally:
        redis.kill()


@pytest.mark.services
def test_a_redis_that_accepts_but_never_answers_at_start(tmp_path: Path, registry: Path) -> None:
    with (
        silent_listener() as port,
        running_api(tmp_path / "home", str(registry), RECSYS_STATE_URI=f"redis://127.0.0.1:{port}/0") as api,
    ):
        results = hammer(api, 2.0)
        worst = assert_degraded_answers(api, results, "redis-silent")
    print(f"\nsilent Redis at start: {len(results)} requests, worst {1e3 * worst:.0f} ms")


# ---- c. registry down -------------------------------------------------------------------------------------
@pytest.mark.services
def test_registry_down_serves_the_cached_champion_and_picks_up_a_new_one_after(
    tmp_path: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weed = PrivateWeed(tmp_path / "weed")
    weed.start()
    try:
        for var, value in weed.env().items():
            monkeypatch.setenv(var, value)
        weed.server.client().create_bucket(Bucket=weed.server.bucket)
        uri = weed.server.fresh_prefix()
        reg = ServingRegistry(uri, endpoint_url=weed.server.endpoint_url, region=weed.server.region)
        reg.publish(artifact, "bpr", 1)
        reg.set_champion("bpr", 1)
        config = serving_config(
            tmp_path, poll_seconds=0.5, registry_timeout_seconds=1.0, registry_retry_max_seconds=1.0
        )
        home = tmp_path / "home"
        with running_api(home, uri, config, **weed.env()) as api:
            assert api.health().json()["model"] == {"name": "bpr", "version": "1"}
            weed.stop()
            deadline = time.monotonic() + 30
            while "registry" not in api.health().json()["degraded"] and time.monotonic() < deadline:
                time.sleep(0.2)
            health = api.health()
            assert health.status_code == 200 and "registry" in health.json()["degraded"], health.text
            assert health.json()["model"] == {"name": "bpr", "version": "1"}
            rec = httpx.get(f"{api.base}/v1/recommendations/ua0", headers=AUTH, timeout=5)
            assert rec.status_code == 200 and rec.json()["items"], rec.text

        # a fresh start with the registry down: the verified cached champion serves
        with running_api(home, uri, config, **weed.env()) as api:
            health = api.health().json()
            assert health["model"] == {"name": "bpr", "version": "1"}, health
            assert "registry" in health["degraded"] and "local cache" in health["degraded"]["registry"], health
            rec = httpx.get(f"{api.base}/v1/recommendations/ua0", headers=AUTH, timeout=5)
            assert rec.status_code == 200 and rec.json()["items"], rec.text

            weed.start()  # the registry is back: a champion published now is served
            flipped_copy(artifact, tmp_path / "v2")
            reg = ServingRegistry(uri, endpoint_url=weed.server.endpoint_url, region=weed.server.region)
            reg.publish(tmp_path / "v2", "bpr", 2)
            reg.set_champion("bpr", 2)
            deadline = time.monotonic() + 60
            while api.health().json()["model"]["version"] != "2" and time.monotonic() < deadline:
                time.sleep(0.3)
            health = api.health().json()
            assert health["model"] == {"name": "bpr", "version": "2"}, f"{health}\n{api.log()}"
            assert health["status"] == "ok", health
    finally:
        weed.stop()


# ---- d. disk full -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root only; skips otherwise)."""
    where.mkdir(parents=True)
    mount = shutil.which("mount")
    command = [mount or "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"a full disk is simulated with a {size} tmpfs, and mounting one needs root: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write to ``folder`` until its filesystem is full; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while fh.write(b"\0" * 4096):
            pass
    return filler


def test_a_full_landing_disk_refuses_with_503_beyond_max_pending_and_loses_nothing(
    tmp_path: Path, registry: Path
) -> None:
    with tiny_filesystem(tmp_path / "lake") as lake:
        config = serving_config(
            tmp_path, landing_max_pending=300, landing_flush_events=50, landing_flush_seconds=0.2, log_exposures=False
        )
        home = tmp_path / "home"
        with running_api(home, str(registry), config, RECSYS_LAKE_URI=str(lake)) as api:
            filler = fill(lake)
            acked: set[str] = set()
            answers = []
            with httpx.Client(base_url=api.base, headers=AUTH, timeout=10) as client:
                for b in range(12):
                    events = event_batch(f"full{b}", 50)
                    resp = client.post("/v1/events", json={"events": events})
                    answers.append(resp.status_code)
                    if resp.status_code == 202:
                        acked.update(e["event_id"] for e in events)
                    else:
                        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1, resp.text
                        assert "landing" in resp.json()["error"] or "waiting" in resp.json()["error"], resp.text
                health = api.health().json()
                assert health["status"] == "degraded" and "landing" in health["degraded"], health
                assert api.metric("mercato_landing_write_errors_total") >= 1
                assert not landed(lake), "nothing can have landed on a full disk"
                print(f"\nfull landing disk: answers {answers}")
                assert answers[:6] == [202] * 6 and set(answers[6:]) == {503}, answers
                assert len(acked) == 300

                filler.unlink()  # space again: the waiting events land, new ones are accepted
                deadline = time.monotonic() + 30
                while api.health().json()["status"] != "ok" and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert api.health().json()["status"] == "ok", api.health().json()
                events = event_batch("after", 50)
                resp = client.post("/v1/events", json={"events": events})
                assert resp.status_code == 202, resp.text
                acked.update(e["event_id"] for e in events)
            api.stop()
        found = landed(lake)
    assert set(found) == acked and set(found.values()) == {1}, (len(found), len(acked))


# ---- e. corrupted and path-escaping artifacts ------------------------------------------------------------------
def write_pointer(registry: Path, name: str, version: str, checksum: str) -> None:
    """A ``champion.json`` written by hand (bypassing ``set_champion``'s checks), as an attacker or a bug would."""
    pointer = {"model_name": name, "version": version, "checksum": checksum, "promoted_at": time.time()}
    (registry / CHAMPION).write_text(json.dumps(pointer))


def test_escaping_and_tampered_artifacts_are_refused_while_the_old_model_serves(
    tmp_path: Path, registry: Path, artifact: Path
) -> None:
    config = serving_config(tmp_path, poll_seconds=0.3)
    home = tmp_path / "home"
    with running_api(home, str(registry), config) as api:

        def refused_after(count: float) -> float:
            deadline = time.monotonic() + 30
            while api.metric("mercato_model_refused_swaps_total") <= count and time.monotonic() < deadline:
                time.sleep(0.2)
            return api.metric("mercato_model_refused_swaps_total")

        def still_serving_v1() -> None:
            health = api.health().json()
            assert health["model"] == {"name": "bpr", "version": "1"} and health["status"] == "ok", health
            rec = httpx.get(f"{api.base}/v1/recommendations/ua0", headers=AUTH, timeout=5)
            assert rec.status_code == 200 and rec.json()["model"]["version"] == "1", rec.text

        # a manifest listing ../../escaped.txt, with that file where a naive fetcher would read it from
        version_dir = registry / "bpr" / "2"
        version_dir.mkdir(parents=True)
        for src in artifact.iterdir():
            shutil.copy(src, version_dir / src.name)
        payload = registry / "escaped.txt"
        payload.write_text("outside the cache")
        files = {p.name: sha256_file(p) for p in sorted(version_dir.iterdir())}
        files["../../escaped.txt"] = sha256_file(payload)
        checksum = overall_checksum(files)
        manifest = {"model_name": "bpr", "version": "2", "files": files, "checksum": checksum}
        (version_dir / MANIFEST).write_text(json.dumps(manifest))
        write_pointer(registry, "bpr", "2", checksum)
        assert refused_after(0) == 1, api.log()
        still_serving_v1()
        outside = [p for p in tmp_path.rglob("escaped.txt") if p != payload]
        assert not outside, f"written outside the cache: {outside}"

        # a published version whose file was changed afterwards
        reg = ServingRegistry(str(registry))
        flipped_copy(artifact, tmp_path / "v3")
        reg.publish(tmp_path / "v3", "bpr", 3)
        with open(registry / "bpr" / "3" / "arrays.npz", "r+b") as fh:
            fh.seek(200)
            fh.write(b"tampered")
        reg.set_champion("bpr", 3, force=True)
        assert refused_after(1) == 2, api.log()
        still_serving_v1()

        # a good one is still taken: a refusal is of that version, not of the registry
        reg.publish(tmp_path / "v3", "bpr", 4)
        reg.set_champion("bpr", 4, force=True)
        deadline = time.monotonic() + 30
        while api.health().json()["model"]["version"] != "4" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.health().json()["model"] == {"name": "bpr", "version": "4"}, api.log()


# ---- f. concurrent promotions -------------------------------------------------------------------------------------
RACER = """
import json, sys, time
from pathlib import Path
from core.registry import ServingRegistry, StaleChampion
uri, version, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
reg = ServingRegistry(uri)
_, token = reg.champion_state()
ready.write_text("1")
while not go.exists():
    time.sleep(0.001)
try:
    reg.set_champion("bpr", version, expected=token)
    print(json.dumps({"version": version, "won": True}))
except StaleChampion as exc:
    print(json.dumps({"version": version, "won": False, "error": str(exc)}))
"""


def race(uri: str, versions: list[str], work: Path) -> list[dict]:
    """One process per version: each reads the pointer, then all write at once expecting what they read."""
    work.mkdir(parents=True)
    go = work / "go"
    procs = []
    for version in versions:
        ready = work / f"ready-{version}"
        procs.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, "-c", RACER, uri, version, str(ready), str(go)],
                    cwd=PROJECT_ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.write_text("1")
    results = []
    for _, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def promotion_race(uri: str, artifact: Path, work: Path, s3: S3Server | None = None) -> None:
    reg = ServingRegistry(uri, endpoint_url=s3.endpoint_url if s3 else None, region=s3.region if s3 else None)
    for version in ("1", "2", "3"):
        reg.publish(artifact, "bpr", version)
    reg.set_champion("bpr", "1")
    for round_ in range(3):
        before = reg.champion()
        assert before is not None
        results = race(uri, ["2", "3"], work / f"round-{round_}")
        winners = [r for r in results if r["won"]]
        assert len(winners) == 1, f"exactly one writer may win a race on the same pointer: {results}"
        loser = next(r for r in results if not r["won"])
        assert "another writer" in loser["error"] or "changed since" in loser["error"], loser
        after = reg.champion()
        assert after is not None and after["version"] == winners[0]["version"], (after, winners)
        assert after["generation"] == before["generation"] + 1, "the stale writer's pointer never landed"
        assert after["previous"]["version"] == before["version"]


def test_concurrent_promotions_on_a_local_registry_the_stale_writer_loses(tmp_path: Path, artifact: Path) -> None:
    promotion_race(str(tmp_path / "registry"), artifact, tmp_path / "race")


@pytest.mark.services
def test_concurrent_promotions_on_s3_the_stale_writer_loses(
    s3_env: S3Server,
    tmp_path: Path,
    artifact: Path,
) -> None:
    """weed answers ``If-Match`` / ``If-None-Match`` on PutObject with 412 (checked here), so S3 needs no lock object."""
    promotion_race(s3_env.fresh_prefix(), artifact, tmp_path / "race", s3_env)


def test_a_full_disk_under_the_write_ahead_log_refuses_at_once_and_acknowledges_nothing(
    tmp_path: Path, registry: Path
) -> None:
    """The default layout: the log (``<home>/serving/wal``) and the lake on one disk. When it is full no batch
    can be made durable, so none is acknowledged: 503 + Retry-After at once; with space again, 202."""
    with tiny_filesystem(tmp_path / "disk") as disk:
        config = serving_config(tmp_path, landing_flush_seconds=0.2, log_exposures=False)
        env = {"RECSYS_LAKE_URI": str(disk / "lake"), "RECSYS_WAL_DIR": str(disk / "wal")}
        with running_api(tmp_path / "home", str(registry), config, **env) as api:
            first = event_batch("before", 20)
            assert httpx.post(f"{api.base}/v1/events", json={"events": first}, headers=AUTH).status_code == 202
            filler = fill(disk)
            refused = httpx.post(f"{api.base}/v1/events", json={"events": event_batch("full", 20)}, headers=AUTH)
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1, refused.text
            assert "nothing of this batch was kept" in refused.json()["error"], refused.text
            filler.unlink()
            after = event_batch("after", 20)
            resp = httpx.post(f"{api.base}/v1/events", json={"events": after}, headers=AUTH)
            assert resp.status_code == 202, resp.text
            api.stop()
        found = landed(disk / "lake")
    assert set(found) == {e["event_id"] for e in first + after} and set(found.values()) == {1}, found
