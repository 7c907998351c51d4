"""Serving load benchmark: the real scoring API against a naive baseline, measured in the same run.

1. Builds a synthetic catalogue (``--items``, 100k by default) and clustered user sessions, trains the
   sequential model (SASRec, quick profile, ``--epochs`` 1) and exports it with the serving files
   (``core.artifacts``, written by training's own writer); publishes it to a temp registry and sets it champion.
2. Starts ``python -m serving`` (the real API) and ``python -m bench.naive_api`` (one worker, full
   NumPy scan + ``np.argsort``) as subprocesses, and drives each from a separate load-generator process
   (keep-alive HTTP/1.1 over asyncio, ``--conns`` concurrent connections) on
   ``GET /v1/recommendations/{user}``: p50/p99 latency and requests/s at 1 and 8 connections.
3. ``POST /v1/events`` in batches of 100: events/s.
4. Exposure-log overhead: two API servers over the same registry, one with ``[serving] log_exposures =
   false``, driven at 8 connections in alternating rounds (``--overhead-rounds``); requests/s with the
   exposure log over requests/s without it (target: the log costs at most 10 % of throughput).
5. Exact vs faiss ANN top-10 at ``--ann-items`` (1M) clustered items: p50 per query, speedup, recall@10.

Prints a table next to the targets; never asserts. ``--quick`` is a small smoke version.

``python -m bench.serving_load [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.auth import SCOPES, new_key

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "p99_1conn_ms": 10.0,
    "p99_8conn_ms": 50.0,
    "rps_ratio_8conn": 2.0,
    "events_per_s": 10_000.0,
    "ann_speedup": 5.0,
    "ann_recall": 0.95,
    "exposure_cost": 0.10,
}


# ---- data and model -----------------------------------------------------------------------------
def synthetic_events(
    n_items: int, n_users: int, events_per_user: int, cluster_size: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contract events (users browse within one cluster of neighbouring items) and the full catalogue."""
    rng = np.random.default_rng(seed)
    item_ids = np.asarray([f"i{n:07d}" for n in range(n_items)], dtype=object)
    n_clusters = max(1, n_items // cluster_size)
    start = rng.integers(0, n_clusters, n_users) * cluster_size
    offsets = rng.integers(0, cluster_size, (n_users, events_per_user))
    items = np.minimum(start[:, None] + offsets, n_items - 1)
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    minutes = np.cumsum(rng.integers(1, 30, (n_users, events_per_user)), axis=1)
    events = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{n:07d}" for n in range(n_users)], events_per_user),
            "item_id": item_ids[items.ravel()],
            "event_type": rng.choice(["view", "click", "add_to_cart"], size=items.size, p=[0.7, 0.25, 0.05]),
            "ts": t0 + pd.to_timedelta(minutes.ravel(), unit="min"),
        }
    )
    catalogue = pd.DataFrame(
        {
            "item_id": item_ids,
            "category": [f"c{n // cluster_size}" for n in range(n_items)],
            "brand": [f"b{n % 97}" for n in range(n_items)],
            "price": np.round(rng.lognormal(3.0, 0.6, n_items), 2),
            "available": True,
        }
    )
    return events, catalogue


def train_and_export(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the sequential model on synthetic sessions and export it with fallback + history files."""
    from evaluation.data import TrainData
    from models.base import get_model_class
    from training.train import write_serving_files

    events, catalogue = synthetic_events(args.items, args.users, args.events_per_user, 50, args.seed)
    data = TrainData.from_events(events, catalogue)
    klass = get_model_class(args.model)
    params: dict[str, Any] = {"device": "cpu"}
    if args.model == "sasrec":
        params.update(epochs=args.epochs, max_minutes=args.max_minutes)
    model = klass(profile="quick", **params)
    started = time.perf_counter()
    model.fit(data)
    train_s = time.perf_counter() - started
    model.export(out)
    write_serving_files(out, data, catalogue)
    lengths = [len(s) for s in data.sequences]
    known = [str(u) for u, n in zip(data.user_ids, lengths, strict=True) if n > 0]
    return {"n_items": data.n_items, "n_users": data.n_users, "train_s": train_s, "known_users": known}


# ---- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until ``url`` answers 200; raises with the server's log when it dies or times out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- load generator (runs in its own process) ---------------------------------------------------
async def _one_connection(
    host: str,
    port: int,
    requests: list[bytes],
    deadline: float,
    warmup_until: float,
    lat: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            req = requests[n % len(requests)]
            n += 1
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if t >= warmup_until:
                lat.append(time.perf_counter() - t)
                if status >= 400:
                    errors.append(status)
    finally:
        writer.close()


async def _drive(
    host: str, port: int, requests: list[bytes], conns: int, seconds: float, warmup: float
) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[int] = []
    now = time.perf_counter()
    warmup_until, deadline = now + warmup, now + warmup + seconds
    per_conn = [requests[i::conns] or requests for i in range(conns)]
    await asyncio.gather(
        *(_one_connection(host, port, per_conn[i], deadline, warmup_until, lat, errors) for i in range(conns))
    )
    arr = np.asarray(lat) * 1e3
    return {
        "requests": len(arr),
        "errors": len(errors),
        "error_codes": sorted(set(errors))[:5],
        "rps": len(arr) / seconds,
        "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
    }


def loadgen_main(spec_file: str) -> None:
    """Entry point of the load-generator subprocess: reads a JSON spec, prints a JSON result."""
    spec = json.loads(Path(spec_file).read_text())
    requests = [r.encode("latin-1") for r in spec["requests"]]
    result = asyncio.run(_drive(spec["host"], spec["port"], requests, spec["conns"], spec["seconds"], spec["warmup"]))
    print(json.dumps(result))


#: The servers accept this key only (every scope; generated per run): every request presents it, as a shop would.
BENCH_KEY, BENCH_KEY_RECORD = new_key("bench", SCOPES)
AUTH_LINE = f"Authorization: Bearer {BENCH_KEY}\r\n"


def server_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the benchmark's key as the API's only key."""
    return dict(env, RECSYS_API_KEYS=json.dumps({"keys": [BENCH_KEY_RECORD.to_json()]}))


def http_get(path: str, host: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{AUTH_LINE}Connection: keep-alive\r\n\r\n"


def http_post_json(path: str, host: str, body: bytes) -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{AUTH_LINE}Connection: keep-alive\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n" + body.decode("latin-1")
    )


def run_load(port: int, requests: list[str], conns: int, seconds: float, warmup: float, work: Path) -> dict[str, Any]:
    """Drive 127.0.0.1:``port`` from a separate process; returns its measured figures."""
    spec = work / f"load-{port}-{conns}.json"
    spec.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "requests": requests,
                "conns": conns,
                "seconds": seconds,
                "warmup": warmup,
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.serving_load", "--loadgen", str(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + warmup + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def event_batches(items: list[str], users: list[str], n_batches: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    ts = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    out = []
    for _ in range(n_batches):
        evs = [
            {
                "user_id": users[int(rng.integers(len(users)))],
                "item_id": items[int(rng.integers(len(items)))],
                "event_type": "view",
                "ts": ts,
            }
            for _ in range(size)
        ]
        out.append(json.dumps({"events": evs}).encode())
    return out


# ---- exposure-log overhead --------------------------------------------------------------------
def config_without_exposures(work: Path) -> Path:
    """A copy of the project's config with ``log_exposures = false`` (everything else identical)."""
    from core.config import config_path

    text = config_path().read_text()
    if "log_exposures = true" not in text:
        raise RuntimeError(f"{config_path()} does not set log_exposures = true; cannot derive the no-log config")
    out = work / "recsys-no-exposures.toml"
    out.write_text(text.replace("log_exposures = true", "log_exposures = false"))
    return out


def scrape(port: int) -> dict[str, float]:
    """The server's ``/metrics`` samples that have no labels, plus ``served``: recommendation requests answered."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {BENCH_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {"served": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("mercato_experiment_requests_total{"):
            found["served"] += float(value)
        elif name.startswith("mercato_") and "{" not in name:
            found[name] = float(value)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (every thread), from ``/proc``; NaN where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exposure_overhead(env: dict[str, str], gets: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The exposure log's cost: two API servers, one with ``log_exposures = false``, driven at 8 connections
    in alternating rounds. Per round: requests/s (the load generator) and the server's CPU milliseconds
    per answered request (``/proc`` and ``/metrics``: steadier than requests/s on a shared machine).
    ``ratio`` = requests/s with the log / without it; ``cpu_ratio`` = CPU per request without / with."""
    no_log = config_without_exposures(work)
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for name, extra in (("api-nolog", {"RECSYS_CONFIG": str(no_log)}), ("api-log", {})):
            port = free_port()
            server_env = dict(env, RECSYS_PORT=str(port), RECSYS_HOME=str(work / f"home-{name}"), **extra)
            servers[name] = (port, start([sys.executable, "-m", "serving"], server_env, work / f"{name}.log"))
        for port, proc in servers.values():
            wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=300)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for round_ in range(args.overhead_rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                port, proc = servers[name]
                print(f"load: {name} @ 8 conns (exposure round {round_ + 1}/{args.overhead_rounds}) ...", flush=True)
                cpu0, served0 = cpu_seconds(proc.pid), scrape(port)["served"]
                result = run_load(port, gets, 8, args.seconds, args.warmup, work)
                cpu1, served1 = cpu_seconds(proc.pid), scrape(port)["served"]
                result["cpu_ms_per_request"] = 1e3 * (cpu1 - cpu0) / max(served1 - served0, 1.0)
                runs[name].append(result)
        out: dict[str, Any] = {"rounds": args.overhead_rounds, "conns": 8}
        for name, results in runs.items():
            final = scrape(servers[name][0])
            out[name] = {
                "rps": sum(r["requests"] for r in results) / (args.seconds * len(results)),
                "p50_ms": float(np.median([r["p50_ms"] for r in results])),
                "p99_ms": float(np.median([r["p99_ms"] for r in results])),
                "errors": sum(r["errors"] for r in results),
                "rounds_rps": [r["rps"] for r in results],
                "cpu_ms_per_request": float(np.median([r["cpu_ms_per_request"] for r in results])),
                "exposures_logged": final.get("mercato_exposures_written_total", 0.0)
                + final.get("mercato_exposures_pending", 0.0),
                "exposures_dropped": final.get("mercato_exposures_dropped_total", 0.0),
                "served": final["served"],
                "logging": "mercato_exposures_written_total" in final,
            }
        log, nolog = out["api-log"], out["api-nolog"]
        out["ratio"] = log["rps"] / nolog["rps"] if nolog["rps"] else float("nan")
        out["cost"] = 1.0 - out["ratio"]
        out["cpu_ratio"] = nolog["cpu_ms_per_request"] / log["cpu_ms_per_request"]
        return out
    except Exception:
        for name in servers:
            print((work / f"{name}.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        for _, proc in servers.values():
            stop(proc)


# ---- 1M exact vs ANN ----------------------------------------------------------------------------
def clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item vectors with spread norms and a bias: the shape of trained embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    x *= rng.lognormal(0.0, 0.2, size=(n, 1)).astype(np.float32)
    return x.astype(np.float32), (0.5 * rng.normal(size=n)).astype(np.float32)


def ann_comparison(n_items: int, dim: int, n_queries: int, seed: int) -> dict[str, Any]:
    """p50 single-query latency of exact vs faiss (default options) top-10, and recall@10 of faiss."""
    from serving.index import ExactIndex, FaissIndex

    items, bias = clustered(n_items, dim, 256, seed)
    queries = clustered(n_queries, dim, 256, seed)[0] + 0.3 * np.random.default_rng(seed + 1).normal(
        size=(n_queries, dim)
    ).astype(np.float32)
    exact = ExactIndex(items, bias)
    started = time.perf_counter()
    ann = FaissIndex(items, bias)
    build_s = time.perf_counter() - started

    def p50(index: ExactIndex | FaissIndex) -> float:
        lat = []
        for q in queries:
            t = time.perf_counter()
            index.search(q[None, :], 10)
            lat.append(time.perf_counter() - t)
        return float(np.median(lat) * 1e3)

    truth, _ = exact.search(queries, 10)
    got, _ = ann.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist(), strict=True)]))
    exact_p50, ann_p50 = p50(exact), p50(ann)
    return {
        "n_items": n_items,
        "exact_p50_ms": exact_p50,
        "ann_p50_ms": ann_p50,
        "speedup": exact_p50 / ann_p50,
        "recall@10": recall,
        "build_s": build_s,
        "index": ann.describe(),
    }


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke version (10k items, 2 s per measurement)")
    p.add_argument("--items", type=int, default=None, help="catalogue size (default 100000; quick 10000)")
    p.add_argument("--users", type=int, default=None, help="trained users (default 2000; quick 500)")
    p.add_argument("--events-per-user", type=int, default=12)
    p.add_argument("--model", default="sasrec", help="model to serve (sasrec; bpr as a fallback)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per load step (default 10; quick 2)")
    p.add_argument(
        "--warmup", type=float, default=None, help="unmeasured seconds before each step (default 2; quick 1)"
    )
    p.add_argument("--ann-items", type=int, default=None, help="items of the exact-vs-ANN comparison (default 1M)")
    p.add_argument(
        "--server-threads",
        type=int,
        default=None,
        help="OMP/OpenBLAS/MKL threads of both servers (default: library defaults, as `python -m serving` ships)",
    )
    p.add_argument(
        "--overhead-rounds",
        type=int,
        default=None,
        help="alternating rounds of the exposure-log overhead measurement (default 3; quick 1)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = {"items": (100_000, 10_000), "users": (2_000, 500), "seconds": (10.0, 2.0), "warmup": (2.0, 1.0)}
    defaults["ann_items"] = (1_000_000, 100_000)
    defaults["overhead_rounds"] = (3, 1)
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def _fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def print_table(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n== serving load: {res['n_items']:,} items, model {args.model}, {os.cpu_count()} CPUs, "
          f"{args.seconds:.0f}s per step, "
          f"server threads {args.server_threads or 'default'} ==")  # fmt: skip
    print(f"{'server':<10}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for (name, conns), r in res["load"].items():
        print(f"{name:<10}{conns:>6}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}")
    api1, api8, naive8 = res["load"][("api", 1)], res["load"][("api", 8)], res["load"][("naive", 8)]
    ratio = api8["rps"] / naive8["rps"] if naive8["rps"] else float("nan")
    ev = res.get("events", {})
    ann = res["ann"]
    rows = [
        ("p99 @1 conn (ms)", _fmt(api1["p99_ms"]), f"<= {TARGETS['p99_1conn_ms']:.0f}", api1["p99_ms"] <= TARGETS["p99_1conn_ms"]),
        ("p99 @8 conns (ms)", _fmt(api8["p99_ms"]), f"<= {TARGETS['p99_8conn_ms']:.0f}", api8["p99_ms"] <= TARGETS["p99_8conn_ms"]),
        ("req/s @8 vs naive", _fmt(ratio) + "x", f">= {TARGETS['rps_ratio_8conn']:.0f}x", ratio >= TARGETS["rps_ratio_8conn"]),
        ("events/s (batch 100)", _fmt(ev.get("events_per_s", float("nan")), ".0f"), f">= {TARGETS['events_per_s']:,.0f}",
         ev.get("events_per_s", 0) >= TARGETS["events_per_s"]),
        (f"ANN speedup @{ann['n_items']:,}", _fmt(ann["speedup"], ".1f") + "x", f">= {TARGETS['ann_speedup']:.0f}x",
         ann["speedup"] >= TARGETS["ann_speedup"]),
        ("ANN recall@10", _fmt(ann["recall@10"], ".3f"), f">= {TARGETS['ann_recall']}", ann["recall@10"] >= TARGETS["ann_recall"]),
    ]  # fmt: skip
    overhead = res.get("exposure_overhead")
    if overhead:
        cost = overhead["cost"]
        rows.append(
            ("exposure log cost", _fmt(100 * cost, ".1f") + "%", f"<= {100 * TARGETS['exposure_cost']:.0f}%",
             cost <= TARGETS["exposure_cost"])
        )  # fmt: skip
        print(
            f"\n== exposure log overhead: {overhead['conns']} conns, {overhead['rounds']} alternating round(s) of "
            f"{args.seconds:.0f}s per server =="
        )
        print(
            f"{'server':<12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU ms/req':>12}{'served':>9}"
            f"{'logged':>9}  req/s per round"
        )
        for name in ("api-nolog", "api-log"):
            r = overhead[name]
            rounds = ", ".join(f"{x:.0f}" for x in r["rounds_rps"])
            logged = f"{r['exposures_logged']:.0f}" if r["logging"] else "off"
            print(
                f"{name:<12}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
                f"{r['cpu_ms_per_request']:>12.3f}{r['served']:>9.0f}{logged:>9}  {rounds}"
            )
        print(
            f"throughput with exposure logging / without: {overhead['ratio']:.3f} (cost {100 * cost:.1f}%); "
            f"CPU per request without / with: {overhead['cpu_ratio']:.3f}"
        )
    print(f"\n{'figure':<26}{'measured':>12}{'target':>10}  met")
    for name, got, want, ok in rows:
        print(f"{name:<26}{got:>12}{want:>10}  {'yes' if ok else 'NO'}")
    print(f"\nexact p50 {ann['exact_p50_ms']:.2f} ms, ANN p50 {ann['ann_p50_ms']:.3f} ms, build {ann['build_s']:.1f} s, "
          f"index {ann['index']}")  # fmt: skip
    if ev:
        print(
            f"events: {ev['batches_per_s']:.0f} batches/s at {ev['conns']} conns, p99 {ev['p99_ms']:.1f} ms, errors {ev['errors']}"
        )
    print(
        f"train {res['train_s']:.1f} s; API ready after {res['api_ready_s']:.1f} s, naive after {res['naive_ready_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen)
        return {}
    from core.registry import ServingRegistry

    res: dict[str, Any] = {"load": {}}
    with tempfile.TemporaryDirectory(prefix="mercato-bench-") as tmp:
        work = Path(tmp)
        artifact = work / "artifact"
        print(f"training {args.model} on {args.items:,} items, {args.users:,} users ...", flush=True)
        info = train_and_export(args, artifact)
        res.update(n_items=info["n_items"], train_s=info["train_s"])
        registry = ServingRegistry(str(work / "registry"))
        registry.publish(artifact, args.model, 1)
        registry.set_champion(args.model, 1)

        api_port, naive_port = free_port(), free_port()
        env = server_env(dict(os.environ, RECSYS_HOME=str(work / "home"), RECSYS_REGISTRY_URI=str(work / "registry")))
        env.update(RECSYS_PORT=str(api_port), RECSYS_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
        if args.server_threads:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(args.server_threads)
        host = "127.0.0.1"
        rng = np.random.default_rng(args.seed)
        users = [info["known_users"][i] for i in rng.integers(0, len(info["known_users"]), 2_000)]
        gets = [http_get(f"/v1/recommendations/{u}?k=10", host) for u in users]

        for name, cmd, port in (
            ("naive", [sys.executable, "-m", "bench.naive_api", str(artifact), "--port", str(naive_port)], naive_port),
            ("api", [sys.executable, "-m", "serving"], api_port),
        ):
            proc = start(cmd, env, work / f"{name}.log")
            try:
                res[f"{name}_ready_s"] = wait_ready(f"http://{host}:{port}/health", proc, timeout=300)
                for conns in (1, 8):
                    print(f"load: {name} @ {conns} conns ...", flush=True)
                    res["load"][(name, conns)] = run_load(port, gets, conns, args.seconds, args.warmup, work)
                if name == "api":
                    body = event_batches([f"i{n:07d}" for n in range(info["n_items"])], users, 200, 100, args.seed)
                    posts = [http_post_json("/v1/events", host, b) for b in body]
                    print("load: api events @ 4 conns ...", flush=True)
                    r = run_load(port, posts, 4, args.seconds, args.warmup, work)
                    res["events"] = {
                        "conns": 4,
                        "batches_per_s": r["rps"],
                        "events_per_s": r["rps"] * 100,
                        "p99_ms": r["p99_ms"],
                        "errors": r["errors"],
                    }
            except Exception:
                print((work / f"{name}.log").read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                stop(proc)
        res["exposure_overhead"] = exposure_overhead(env, gets, args, work)
    print(f"exact vs ANN on {args.ann_items:,} clustered items ...", flush=True)
    res["ann"] = ann_comparison(args.ann_items, 64, 200, args.seed)
    print_table(res, args)
    return res


if __name__ == "__main__":
    main()
