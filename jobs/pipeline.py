"""``make pipeline``: one run of the DAG ``recsys_daily`` through Airflow's own runner, then a summary.

Runs ``airflow dags test recsys_daily <logical date> --conf {...}`` with an Airflow home under
``.recsys/airflow`` (created and migrated on first use), so the run is exactly what the scheduler
would run, task by task. Exit status = the run's outcome. ``--print-env`` prints the Airflow
environment as shell exports (used by ``make ui-airflow``).
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
from typing import Any

from core.config import PROFILES, load_config
from core.contract import FORMATS, PROTOCOLS
from core.reports import read_reports
from core.settings import get_settings

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
    return {k: os.environ.get(k, v) if k.startswith("AIRFLOW__") else v for k, v in env.items()}


def _airflow(args: list[str], env: dict[str, str]) -> int:
    airflow_bin = Path(sys.executable).with_name("airflow")
    return subprocess.call([str(airflow_bin), *args], env={**os.environ, **env}, cwd=PROJECT_ROOT)


def ensure_airflow_db(env: dict[str, str]) -> None:
    """Create/migrate Airflow's metadata DB once (idempotent, skipped when the marker is present)."""
    marker = Path(env["AIRFLOW_HOME"]) / ".migrated"
    if marker.exists():
        return
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    if _airflow(["db", "migrate"], env) != 0:
        raise SystemExit("airflow db migrate failed (see the log above)")
    marker.touch()


def resolve_run_date(data: str | None, fmt: str, run_date: str | None) -> dt.date:
    """The last day of data: explicit, else the data's own last date, else today (UTC)."""
    if run_date:
        return dt.date.fromisoformat(run_date)
    if fmt in ("events", "diginetica", "s3rec") and data:
        from jobs.loaders import data_end_date

        return data_end_date(data, fmt)
    return dt.datetime.now(dt.UTC).date()


def summarize(reports: dict[str, dict[str, Any]]) -> str:
    """A short human summary of one run: rows per stage, drops by reason, metrics per model, promotion."""
    lines = ["", "=" * 72, "recsys_daily summary", "=" * 72]
    for stage in (
        "land",
        "ingest",
        "validate_raw",
        "clean",
        "validate_clean",
        "features",
        "split",
        "validate_features",
    ):
        rep = reports.get(stage)
        if rep is None:
            continue
        keys = ("rows_in", "rows_out", "rows", "rows_written", "rejected", "n_users", "n_items", "success")
        figures = {k: rep[k] for k in keys if k in rep}
        lines.append(f"{stage:<18} {json.dumps(figures, default=str)}")
        if isinstance(rep.get("dropped"), dict) and rep["dropped"]:
            lines.append(f"{'':<18} dropped: {json.dumps(rep['dropped'])}")
        if stage.startswith("validate_") and isinstance(rep.get("tables"), dict):
            checked = {name: t.get("rows") for name, t in rep["tables"].items()}
            lines.append(f"{'':<18} rows checked: {json.dumps(checked)}")
        if rep.get("skipped_days"):
            lines.append(f"{'':<18} skipped (unchanged): {json.dumps(rep['skipped_days'], default=str)}")
    trains = sorted(k for k in reports if k.startswith("train_"))
    if trains:
        lines.append("models (test split, full ranking):")
        for key in trains:
            rep = reports[key]
            m = rep.get("metrics", {})
            shown = " ".join(f"{name}={m[name]:.4f}" for name in ("hr@10", "ndcg@10", "hr@20", "ndcg@20") if name in m)
            lines.append(f"  {rep.get('model_name', key[6:]):<12} {shown}  train {rep.get('train_seconds', 0):.1f}s")
    promo = reports.get("promote")
    if promo:
        lines.append(
            f"promotion: winner={promo.get('winner')} promoted={promo.get('promoted')} reason={promo.get('reason')}"
        )
    lines.append("=" * 72)
    return "\n".join(lines)


def failed_gates(run_date: dt.date) -> str:
    """The readable report of every validation gate that failed on ``run_date`` (empty if none)."""
    folder = Path(get_settings().reports) / run_date.isoformat()
    texts = []
    for path in sorted(folder.glob("validation_*.json")):
        summary = json.loads(path.read_text())
        if not summary.get("success", True):
            stage = summary.get("stage", path.stem)
            texts.append(f"validation gate '{stage}' failed:\n{summary.get('failure_report', '')}")
    return "\n\n".join(texts)


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

    run_date = resolve_run_date(args.data or None, args.format, args.run_date)
    conf = {
        "dataset": str(Path(args.data).absolute()) if args.data else "",
        "format": args.format,
        "run_date": run_date.isoformat(),
        "models": [m.strip() for m in args.models.split(",") if m.strip()],
        "profile": args.profile,
        "protocol": args.protocol,
        "promote": not args.no_promote,
        "window_days": args.window_days,
        "sim_users": args.sim_users,
        "sim_items": args.sim_items,
        "sim_days": args.sim_days,
        "seed": args.seed,
    }
    ensure_airflow_db(env)
    logical = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    started = time.monotonic()
    rc = _airflow(["dags", "test", DAG_ID, logical.isoformat(), "--conf", json.dumps(conf)], env)
    elapsed = time.monotonic() - started
    print(summarize(read_reports(get_settings().lake, run_date)))
    if rc != 0:
        print(failed_gates(run_date))
    print(f"run_date={run_date} outcome={'success' if rc == 0 else 'FAILED'} wall={elapsed:.0f}s")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
