"""``make pipeline``: one run of the DAG ``recsys_daily`` through Airflow's own runner, then a summary.

Runs ``airflow dags test recsys_daily <now> --conf {...}`` with an Airflow home under
``.recsys/airflow`` (created and migrated on first use), so the run is exactly what the scheduler
would run, task by task. The run's data day is the ``run_date`` param, so data of any date runs
(the logical date is now, never before the DAG's start date). The engines' output (Airflow, Spark,
Great Expectations) goes to a log file whose path is printed; the console shows one line per task
and the run's summary. Exit status: 0 only when the run succeeded and its tasks really ran.
``--print-env`` prints the Airflow environment as shell exports (used by ``make ui-airflow``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from core.config import PROFILES, load_config
from core.contract import FORMATS, PROTOCOLS
from core.reports import read_reports
from core.settings import get_settings
from jobs.run_monitor import RunMonitor, follow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "recsys_daily"


def airflow_env() -> dict[str, str]:
    """Environment for Airflow commands: a private home under the project state, our dags folder."""
    settings = get_settings()
    home = Path(os.environ.get("AIRFLOW_HOME") or settings.home.joinpath("airflow")).absolute()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])),
        "RECSYS_HOME": str(settings.home.absolute()),
    }
    port = os.environ.get("AIRFLOW__API__PORT")
    if port:  # task supervisors reach the API server's execution API on the port it really listens on
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
    return {k: os.environ.get(k, v) if k.startswith("AIRFLOW__") else v for k, v in env.items()}


def _airflow(args: list[str], env: dict[str, str], log: BinaryIO) -> subprocess.Popen[bytes]:
    airflow_bin = Path(sys.executable).with_name("airflow")
    return subprocess.Popen(
        [str(airflow_bin), *args], env={**os.environ, **env}, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
    )


def ensure_airflow_db(env: dict[str, str], log: BinaryIO) -> None:
    """Create/migrate Airflow's metadata DB once (idempotent, skipped when the marker is present)."""
    marker = Path(env["AIRFLOW_HOME"]) / ".migrated"
    if marker.exists():
        return
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    if _airflow(["db", "migrate"], env, log).wait() != 0:
        raise SystemExit(f"airflow db migrate failed; see {log.name}")
    marker.touch()


def metadata_db(env: dict[str, str]) -> Path | None:
    """Airflow's SQLite metadata DB, or None when the run uses another database (no live task lines then)."""
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if conn:
        return Path(conn.removeprefix("sqlite:///")) if conn.startswith("sqlite:///") else None
    return Path(env["AIRFLOW_HOME"]) / "airflow.db"


def resolve_run_date(data: str | None, fmt: str, run_date: str | None) -> dt.date:
    """The last day of data: explicit, else the data's own last date, else today (UTC)."""
    if run_date:
        return dt.date.fromisoformat(run_date)
    if fmt in ("events", "diginetica", "s3rec") and data:
        from jobs.loaders import data_end_date

        return data_end_date(data, fmt)
    return dt.datetime.now(dt.UTC).date()


def window_line(land: dict[str, Any] | None, window_days: int) -> str | None:
    """What the run's window kept of the data, and how to widen it (``None`` without a land report)."""
    window = (land or {}).get("window")
    if not window:
        return None
    span = f"window {window['start']} .. {window['end']} ({window['days']} days)"
    widen = f'widen it with PIPELINE_ARGS="--window-days {window.get("days_to_cover_all", window_days)}"'
    if "events_in" in window:
        left = window.get("events_before", 0) + window.get("events_after", 0)
        if not left:
            return f"{span}: all {window['events_in']:,} events of the data are in it"
        only = [
            f"{window[key]:,} {name} seen only there"
            for key, name in (("users_only_outside", "users"), ("items_only_outside", "items"))
            if window.get(key)
        ]
        after = f", {window['events_after']:,} after the run date" if window.get("events_after") else ""
        return (
            f"{span}: {window['events_in']:,} events in it; {window.get('events_before', 0):,} older events "
            f"left out{after}" + (f" ({', '.join(only)})" if only else "") + f"; {widen}"
        )
    if window.get("days_before"):
        return (
            f"{span}: {window['days_in']} landing day(s) in it; {window['days_before']} older landing day(s) "
            f"({window.get('bytes_before', 0) / 1e6:.1f} MB) left out; {widen}"
        )
    return f"{span}: {window.get('days_in', 0)} landing day(s) in it, none left out"


def summarize(reports: dict[str, dict[str, Any]], window_days: int) -> str:
    """A short human summary of one run: the window, rows per stage, drops by reason, metrics, promotion."""
    lines = ["", "=" * 72, "recsys_daily summary", "=" * 72]
    window = window_line(reports.get("land"), window_days)
    if window:
        lines.append(window)
    for stage in ("ingest", "clean", "features", "split"):
        rep = reports.get(stage)
        if rep is None:
            continue
        keys = ("rows_in", "rows_out", "rows", "rejected")
        figures = {k: rep[k] for k in keys if k in rep}
        lines.append(f"{stage:<10} {json.dumps(figures, default=str)}")
        if isinstance(rep.get("dropped"), dict) and any(rep["dropped"].values()):
            lines.append(f"{'':<10} dropped: {json.dumps({k: v for k, v in rep['dropped'].items() if v})}")
        if rep.get("skipped_days"):
            lines.append(f"{'':<10} {len(rep['skipped_days'])} unchanged day(s) skipped")
    gates = [s for s in ("validate_raw", "validate_clean", "validate_features") if s in reports]
    if gates:
        lines.append(
            "gates: " + ", ".join(f"{g[9:]} {'passed' if reports[g].get('success') else 'FAILED'}" for g in gates)
        )
    trains = sorted(k for k in reports if k.startswith("train_"))
    if trains:
        lines.append("models (test split, full ranking):")
        for key in trains:
            rep = reports[key]
            m = rep.get("metrics", {})
            shown = " ".join(
                f"{name}={m[name]:.4f}" for name in ("hr@10", "ndcg@10", "hr@20", "ndcg@20") if m.get(name) is not None
            )
            lines.append(f"  {rep.get('model_name', key[6:]):<12} {shown}  train {rep.get('train_seconds', 0):.1f}s")
    promo = reports.get("promote")
    if promo:
        lines.append(
            f"promotion: winner={promo.get('winner')} promoted={promo.get('promoted')} reason={promo.get('reason')}"
        )
    lines.append("=" * 72)
    return "\n".join(lines)


def failed_gates(run_date: dt.date, since: float | None = None) -> str:
    """The readable report of every validation gate that failed on ``run_date`` (written after ``since``)."""
    folder = Path(get_settings().reports) / run_date.isoformat()
    texts = []
    for path in sorted(folder.glob("validation_*.json")):
        if since is not None and path.stat().st_mtime < since:
            continue
        summary = json.loads(path.read_text())
        if not summary.get("success", True):
            stage = summary.get("stage", path.stem)
            texts.append(f"validation gate '{stage}' failed:\n{summary.get('failure_report', '')}")
    return "\n\n".join(texts)


def run_log_path(run_date: dt.date) -> Path:
    """Where a run's engine output goes: ``<home>/logs/pipeline-<run_date>-<UTC stamp>.log``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return get_settings().home.absolute() / "logs" / f"pipeline-{run_date.isoformat()}-{stamp}.log"


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="dataset path (not needed for --format simulated)")
    parser.add_argument("--format", default="simulated", choices=["landing", *FORMATS])
    parser.add_argument("--run-date", default=None, help="last day of data, YYYY-MM-DD (default: from the data)")
    parser.add_argument("--models", default=",".join(cfg.train.models), help="comma-separated model names")
    parser.add_argument("--profile", default=cfg.train.profile, choices=list(PROFILES))
    parser.add_argument("--protocol", default=cfg.split.protocol, choices=list(PROTOCOLS))
    parser.add_argument("--no-promote", action="store_true", help="train and compare, never promote")
    parser.add_argument("--window-days", type=int, default=cfg.window.days)
    parser.add_argument("--sim-users", type=int, default=5000)
    parser.add_argument("--sim-items", type=int, default=2000)
    parser.add_argument("--sim-days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=cfg.train.seed)
    parser.add_argument("--print-env", action="store_true", help="print the Airflow environment as exports")
    args = parser.parse_args(argv)

    env = airflow_env()
    if args.print_env:
        print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
        return 0
    if args.format not in ("simulated", "landing") and not args.data:
        parser.error(f"--format {args.format} needs --data PATH (e.g. make pipeline DATA=path FORMAT={args.format})")
    if args.data and not Path(args.data).exists():
        parser.error(f"--data {args.data}: no such file or folder")
    if args.window_days < 1:
        parser.error(f"--window-days {args.window_days}: must be at least 1")

    run_date = resolve_run_date(args.data or None, args.format, args.run_date)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(cfg.train.zoo))
    if unknown:
        parser.error(f"--models: {unknown} not in the zoo {cfg.train.zoo}")
    conf = {
        "dataset": str(Path(args.data).absolute()) if args.data else "",
        "format": args.format,
        "run_date": run_date.isoformat(),
        "models": models,
        "profile": args.profile,
        "protocol": args.protocol,
        "promote": not args.no_promote,
        "window_days": args.window_days,
        "sim_users": args.sim_users,
        "sim_items": args.sim_items,
        "sim_days": args.sim_days,
        "seed": args.seed,
    }
    log_path = run_log_path(run_date)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"recsys_daily: run_date={run_date} format={args.format} models={','.join(models)}", flush=True)
    print(f"engine logs (Airflow, Spark, Great Expectations): {log_path}", flush=True)
    started_wall = time.time()
    started = time.monotonic()
    with open(log_path, "ab") as log:
        ensure_airflow_db(env, log)
        # The logical date is now: a run of data dated before the DAG's start_date still gets its tasks.
        logical = dt.datetime.now(dt.UTC).replace(microsecond=0)
        db = metadata_db(env)
        monitor = RunMonitor(
            db or Path("/nonexistent"), DAG_ID, get_settings().lake, run_date, live=sys.stdout.isatty()
        )
        monitor.mark()
        proc = _airflow(["dags", "test", DAG_ID, logical.isoformat(), "--conf", json.dumps(conf)], env, log)
        try:
            follow(monitor, lambda: proc.poll() is None)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            raise
    rc = proc.returncode
    elapsed = time.monotonic() - started
    print(summarize(read_reports(get_settings().lake, run_date, since=started_wall), args.window_days))
    if rc != 0:
        print(failed_gates(run_date, since=started_wall))
    if db is not None and monitor.executed() == 0:
        print(f"no task of the run executed (task states: {monitor.states() or 'none created'}); see {log_path}")
        rc = rc or 1
    print(f"run_date={run_date} outcome={'success' if rc == 0 else 'FAILED'} wall={elapsed:.0f}s log={log_path}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
