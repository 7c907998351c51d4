"""A daily run's cost follows the new data: ingest → clean → features → split, one day vs a 365-day window.

``python -m bench.pipeline_incremental [--days 365] [--users 160] [--items 800] [--seed 7] [--workdir DIR]``

The simulator (``jobs.simulator``) writes ``days + 1`` landing days once (duplicates, late events,
missing prices, unknown types and a few bot users included). Then, with the production Spark
settings (``jobs.spark.get_spark``) and config (``[window] days`` unless ``--window-days``):

* warm-up: the one-day pipeline once on a throw-away lake (JVM start and code warm-up, not counted);
* (a) **one-day run**: a lake holding only the newest landing day;
* (b) a lake holding the ``days`` older landing days: the **first full run** (run date = the last of
  them), then the newest day lands and the **second daily run** (run date = the newest day) reads
  the same-sized window, slid by one day.

It prints one row per run and stage (seconds, rows in/out, days processed and skipped) and the
ratio second daily run ÷ one-day run (the target is at most 2). Figures, never assertions. Rows in:
the landing lines ingest parsed, the bronze rows clean labelled (the whole window: bots and
duplicates are window-wide), the silver events features summed; rows out: bronze rows, silver
rows, gold interactions, split rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config, load_config
from core.lake import Lake

STAGES: tuple[str, ...] = ("ingest", "clean", "features", "split")
ONE_DAY, FULL, DAILY = "one-day run", "first full run", "second daily run"
RATIO_TARGET = 2.0


@dataclass(frozen=True)
class StageFigures:
    """One stage of one run: wall seconds, rows in and out, days processed and skipped."""

    run: str
    stage: str
    seconds: float
    rows_in: int | None
    rows_out: int | None
    days_done: int | None
    days_skipped: int | None
    report: dict[str, Any]


def _days(report: dict[str, Any], done_key: str) -> tuple[int | None, int | None]:
    if done_key not in report:
        return None, None
    return len(report[done_key]), len(report.get("skipped_days", []))


def stage_figures(run: str, stage: str, seconds: float, report: dict[str, Any]) -> StageFigures:
    """What the table shows of one stage's report."""
    rows_in, rows_out = report.get("rows_in"), report.get("rows_out")
    done, skipped = None, None
    if stage == "ingest":
        done, skipped = _days(report, "ingested_days")
        read = [report["days"][day] for day in report.get("ingested_days", [])]
        rows_in, rows_out = sum(r["rows_in"] for r in read), sum(r["rows_out"] for r in read)
    elif stage == "clean":
        done, skipped = _days(report, "cleaned_days")
    elif stage == "features":
        rows_in = report.get("events")
        rows_out = (report.get("rows") or {}).get("interactions")
        if "aggregated_days" in report:
            done, skipped = len(report["aggregated_days"]), len(report.get("reused_days", []))
    elif stage == "split":
        rows_out = sum((report.get("rows") or {}).values())
    return StageFigures(run, stage, seconds, rows_in, rows_out, done, skipped, report)


def run_pipeline(
    lake: Path, run_date: dt.date, cfg: Config, spark: Any, window_days: int, run: str
) -> list[StageFigures]:
    """ingest → clean → features → split on ``lake`` for ``run_date``, each stage timed."""
    from jobs import clean, features, ingest, split

    jobs: dict[str, Callable[..., dict[str, Any]]] = {
        "ingest": ingest.run,
        "clean": clean.run,
        "features": features.run,
        "split": split.run,
    }
    out = []
    for stage in STAGES:
        t0 = time.perf_counter()
        report = jobs[stage](str(lake), run_date, cfg, spark, window_days=window_days)
        out.append(stage_figures(run, stage, time.perf_counter() - t0, report))
    return out


def copy_landing(source: Lake, target: Lake, days: list[dt.date]) -> None:
    """Copy the catalogue (once) and the landing folders of ``days`` from ``source`` to ``target``."""
    if not target.landing_items().exists():
        shutil.copytree(source.landing_items(), target.landing_items())
    for day in days:
        shutil.copytree(source.landing_events(day), target.landing_events(day))


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_table(figures: list[StageFigures]) -> str:
    """The per-stage table, with a total line per run."""
    header = f"{'run':<17} {'stage':<9} {'seconds':>8} {'rows in':>9} {'rows out':>9} {'days done':>9} {'skipped':>8}"
    lines = [header, "-" * len(header)]
    for run in dict.fromkeys(f.run for f in figures):
        rows = [f for f in figures if f.run == run]
        for f in rows:
            lines.append(
                f"{run:<17} {f.stage:<9} {f.seconds:>8.2f} {_cell(f.rows_in):>9} {_cell(f.rows_out):>9} "
                f"{_cell(f.days_done):>9} {_cell(f.days_skipped):>8}"
            )
        lines.append(f"{run:<17} {'total':<9} {sum(f.seconds for f in rows):>8.2f}")
    return "\n".join(lines)


def simulate(root: Path, days: int, end: dt.date, users: int, items: int, seed: int) -> dict[str, Any]:
    """``days`` landing days ending at ``end`` from the shop simulator (bots: 2 % of users, bursts of 80 a minute)."""
    from jobs.simulator import SimConfig, simulate_to_landing

    sim = SimConfig(
        n_users=users,
        n_items=items,
        days=days,
        end_date=end,
        seed=seed,
        bot_user_fraction=0.02,
        bot_events_per_minute=80,
    )
    return simulate_to_landing(sim, root)


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Simulate, warm up, then the three measured runs; returns the figures and the ratio."""
    from jobs.spark import get_spark

    cfg = load_config()
    window_days = args.window_days or cfg.window.days
    new_day = args.end_date
    old_days = [new_day - dt.timedelta(days=n) for n in range(args.days, 0, -1)]
    source = Lake(workdir / "source")
    sim = simulate(source.root, args.days + 1, new_day, args.users, args.items, args.seed)
    print(
        f"simulated {sim['n_events']:,} events over {args.days + 1} landing days "
        f"({old_days[0]} .. {new_day}) in {sim['seconds']:.1f}s; window {window_days} days",
        flush=True,
    )
    spark = get_spark("mercato-bench-incremental")

    if args.warmup:
        warm = Lake(workdir / "warmup")
        copy_landing(source, warm, [old_days[0]])
        run_pipeline(warm.root, old_days[0], cfg, spark, window_days, "warm-up")

    one = Lake(workdir / "one-day")
    copy_landing(source, one, [new_day])
    figures = run_pipeline(one.root, new_day, cfg, spark, window_days, ONE_DAY)

    lake = Lake(workdir / "lake")
    copy_landing(source, lake, old_days)
    figures += run_pipeline(lake.root, old_days[-1], cfg, spark, window_days, FULL)
    copy_landing(source, lake, [new_day])
    figures += run_pipeline(lake.root, new_day, cfg, spark, window_days, DAILY)

    totals = {run: sum(f.seconds for f in figures if f.run == run) for run in (ONE_DAY, FULL, DAILY)}
    ratio = totals[DAILY] / totals[ONE_DAY]
    print(format_table(figures))
    print(
        f"second daily run / one-day run = {totals[DAILY]:.2f}s / {totals[ONE_DAY]:.2f}s = {ratio:.2f}x "
        f"(target <= {RATIO_TARGET:.0f}x); first full run / one-day run = {totals[FULL] / totals[ONE_DAY]:.2f}x",
        flush=True,
    )
    return {"figures": figures, "totals": totals, "ratio": ratio, "events": sim["n_events"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_incremental", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="landing days before the new one (default 365)")
    parser.add_argument("--users", type=int, default=160, help="simulated users (160: about 145k events in 366 days)")
    parser.add_argument("--items", type=int, default=800)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2025, 6, 30), help="the new day")
    parser.add_argument("--window-days", type=int, default=None, help="default: [window] days of the config")
    parser.add_argument("--workdir", default=None, help="where the lakes go (default: a temp folder, removed)")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the uncounted warm-up run (smoke tests)"
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    if args.workdir:
        workdir = Path(args.workdir)
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} is not empty: the benchmark needs fresh lakes")
        workdir.mkdir(parents=True, exist_ok=True)
        return measure(workdir, args)
    with tempfile.TemporaryDirectory(prefix="mercato-bench-") as tmp:
        return measure(Path(tmp), args)


if __name__ == "__main__":
    main()
