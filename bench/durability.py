"""What durable acceptance costs: events/s through ``POST /v1/events`` with the write-ahead log and without it.

Two real API processes (``python -m serving``) over one registry: one with ``[serving] durable_events =
true`` (the default: a 202 means the batch is appended to the write-ahead log and fsynced, group-committed
across concurrent requests), the baseline with ``durable_events = false`` (accepted events wait in memory;
a ``kill -9`` loses them). A separate load-generator process (``bench.serving_load``'s) drives each in
alternating rounds at ``--conns`` connections with batches of ``--batch`` events; per server: events/s,
p50/p99 per batch, errors, and (durable) events per fsync from ``/metrics``. Prints the ratio durable /
in-memory. Never asserts.

``python -m bench.durability [--quick]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving_load import (
    ROOT,
    event_batches,
    free_port,
    http_post_json,
    run_load,
    scrape,
    server_env,
    start,
    stop,
    train_and_export,
    wait_ready,
)

SERVERS = ("in-memory", "durable")


def config_with(work: Path, durable: bool) -> Path:
    """A copy of the project's config with ``durable_events`` set (everything else identical)."""
    from core.config import config_path

    text = config_path().read_text()
    if "durable_events = true" not in text:
        raise RuntimeError(f"{config_path()} does not set durable_events = true; cannot derive the configs")
    out = work / f"recsys-durable-{str(durable).lower()}.toml"
    out.write_text(text.replace("durable_events = true", f"durable_events = {str(durable).lower()}"))
    return out


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from core.registry import ServingRegistry

    print(f"training bpr on {args.items:,} items, {args.users:,} users ...", flush=True)
    model = argparse.Namespace(
        items=args.items,
        users=args.users,
        events_per_user=8,
        seed=args.seed,
        model="bpr",
        epochs=1,
        max_minutes=1.0,
    )
    info = train_and_export(model, work / "artifact")
    registry = ServingRegistry(str(work / "registry"))
    registry.publish(work / "artifact", "bpr", 1)
    registry.set_champion("bpr", 1)
    items = [f"i{n:07d}" for n in range(info["n_items"])]
    bodies = event_batches(items, info["known_users"], 200, args.batch, args.seed)
    posts = [http_post_json("/v1/events", "127.0.0.1", body) for body in bodies]

    base_env = server_env(dict(os.environ, RECSYS_REGISTRY_URI=str(work / "registry"), PYTHONPATH=str(ROOT)))
    servers: dict[str, tuple[int, Any]] = {}
    try:
        for name in SERVERS:
            port = free_port()
            env = dict(
                base_env,
                RECSYS_HOME=str(work / f"home-{name}"),
                RECSYS_PORT=str(port),
                RECSYS_HOST="127.0.0.1",
                RECSYS_CONFIG=str(config_with(work, durable=name == "durable")),
            )
            servers[name] = (port, start([sys.executable, "-m", "serving"], env, work / f"{name}.log"))
        for port, proc in servers.values():
            wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=300)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
        for round_ in range(args.rounds):
            for name in SERVERS if round_ % 2 == 0 else tuple(reversed(SERVERS)):
                print(f"load: {name} @ {args.conns} conns (round {round_ + 1}/{args.rounds}) ...", flush=True)
                runs[name].append(run_load(servers[name][0], posts, args.conns, args.seconds, args.warmup, work))
        out: dict[str, Any] = {"rounds": args.rounds, "conns": args.conns, "batch": args.batch}
        for name, results in runs.items():
            final = scrape(servers[name][0])
            commits = final.get("mercato_wal_commits_total", 0.0)
            entries = final.get("mercato_wal_entries_total", 0.0)
            out[name] = {
                "events_per_s": args.batch * sum(r["requests"] for r in results) / (args.seconds * len(results)),
                "rounds_events_per_s": [args.batch * r["rps"] for r in results],
                "p50_ms": float(np.median([r["p50_ms"] for r in results])),
                "p99_ms": float(np.median([r["p99_ms"] for r in results])),
                "errors": sum(r["errors"] for r in results),
                "accepted": final.get("mercato_events_accepted_total", 0.0),
                "wal_commits": commits,
                "wal_entries": entries,
                "batches_per_sync": entries / commits if commits else float("nan"),
            }
        base = out["in-memory"]["events_per_s"]
        out["ratio"] = out["durable"]["events_per_s"] / base if base else float("nan")
        return out
    except Exception:
        for name in servers:
            print((work / f"{name}.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        for _, proc in servers.values():
            stop(proc)


def print_table(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n== durable acceptance: POST /v1/events, batches of {res['batch']}, {res['conns']} conns, "
        f"{res['rounds']} alternating round(s) of {args.seconds:.0f}s per server, {os.cpu_count()} CPUs =="
    )
    print(
        f"{'server':<11}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'batches/fsync':>15}  events/s per round"
    )
    for name in SERVERS:
        r = res[name]
        per_sync = "-" if name == "in-memory" else f"{r['batches_per_sync']:.1f}"
        rounds = ", ".join(f"{x:.0f}" for x in r["rounds_events_per_s"])
        print(
            f"{name:<11}{r['events_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
            f"{per_sync:>15}  {rounds}"
        )
    print(f"events/s durable / in-memory: {res['ratio']:.3f} (cost {100 * (1 - res['ratio']):.1f}%)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke version (1 round of 1 s per server)")
    p.add_argument("--items", type=int, default=2000, help="catalogue size of the served model")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--batch", type=int, default=100, help="events per POST")
    p.add_argument("--conns", type=int, default=8, help="concurrent connections of the load generator")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per round (default 5; quick 1)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds per round (default 1; quick 0.3)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per server (default 4; quick 1)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    for key, (full, quick) in {"seconds": (5.0, 1.0), "warmup": (1.0, 0.3), "rounds": (4, 1)}.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mercato-durability-") as tmp:
        res = measure(args, Path(tmp))
    print_table(res, args)
    return res


if __name__ == "__main__":
    main()
