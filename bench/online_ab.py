"""The online loop end to end: popularity (control) vs SASRec (treatment), 50/50, through the running API.

``python -m bench.online_ab [--quick] [--work DIR] [--json-out FILE]``

1. **Shop history.** ``jobs.simulator`` simulates the shop's past days into ``<lake>/landing``; the
   pipeline's own Spark jobs ingest and clean them into silver (``jobs.ingest``, ``jobs.clean``).
2. **Models.** Popularity and SASRec (``--profile``, default ``quick``) are fitted on the silver history
   (``TrainData.from_events``: the features/split jobs' aggregation and split), evaluated on the
   validation split, exported with the serving files (``training.train.write_serving_files``) and
   published to the serving registry with those metrics, the run date and the data window, as the daily
   promotion publishes them; popularity is the champion.
3. **Experiment.** ``training.experiment.start_experiment`` starts ``online-ab``: popularity control, SASRec
   treatment, 50/50 (it refuses a treatment whose validation metric does not beat popularity's). Its clock
   starts at the first simulated shopping day, so the report's CUPED pre-period is the shop history.
4. **Shoppers.** The real scoring API runs as a subprocess (``python -m serving``, its own API key);
   ``jobs.shoppers`` plays the shop's users for ``--days`` simulated days (they click by position bias ×
   their hidden preference, add to cart, buy, and post the events with ``request_id``/``position``). The
   hidden preference is the simulator's two habits: tastes (categories, brands, price) and the next-item
   habit, the complements of the item last touched (``--complement-interest``; 0 = tastes only), which is
   what a sequential model learns from the history and popularity cannot. The API
   is stopped with SIGTERM, which flushes its landing zone (events and exposures).
5. **Read-out.** The tasks of the DAG ``recsys_experiments`` in its order, by the same functions —
   plan → ingest_exposures → validate_exposures → attribute → report → log_mlflow — after the daily
   pipeline's ingest and clean of the API's events (attribution reads silver events).

Prints the report's Markdown (per variant units, exposures, CTR, add-to-cart, conversion, revenue per
user with always-valid 95 % intervals, lift, p, SRM, CUPED variance reduction, MDE), the shoppers' own
tallies per arm, and one JSON line (``--json-out`` writes it to a file too). ``--quick`` is the test's
size (``tests/integration/test_online_ab.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.serving_load import free_port, wait_ready
from core.config import Config, load_config
from core.contract import EVENT_TYPE_COL, ITEM_COL, TS_COL, USER_COL
from core.lake import Lake
from core.registry import ServingRegistry
from core.settings import Settings, get_settings
from jobs.shoppers import ShopperConfig, ShopperReport, Shoppers
from jobs.simulator import SimConfig, build_shop, simulate_to_landing
from serving.auth import SCOPES, new_key

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "online-ab"
CONTROL, TREATMENT = "popularity", "sasrec"
VERSION = "1"
#: Settings read from the environment that would point the run outside its own work folder.
_OWN_PATHS = (
    "RECSYS_LAKE_URI",
    "RECSYS_REGISTRY_URI",
    "RECSYS_MLFLOW_TRACKING_URI",
    "RECSYS_MLFLOW_ARTIFACT_ROOT",
    "RECSYS_REPORTS_DIR",
    "RECSYS_STATE_URI",
    "RECSYS_API_KEYS_FILE",
    "RECSYS_CONFIG",
)


@dataclass(frozen=True)
class Sizes:
    """The shop, its history and the experiment's traffic."""

    users: int = 3000
    items: int = 1000
    categories: int = 20
    brands: int = 60
    history_days: int = 14
    days: int = 3
    shoppers: int = 2500
    sessions_per_day: float = 1.0
    pages: int = 3
    #: ``ShopperConfig.complement_interest``: the shoppers also like the complements of the item they last touched.
    complement_interest: float = 1.0
    concurrency: int = 4
    profile: str = "quick"
    seed: int = 42
    #: The history's last day (ISO); default the day before the experiment. The simulator draws each day from
    #: its date, so a fixed history gives the same data and the same fitted models on every day the bench runs.
    history_end: str | None = None


QUICK = Sizes(
    users=1500,
    items=300,
    categories=10,
    brands=30,
    history_days=14,
    days=3,
    shoppers=700,
    sessions_per_day=1.5,
    concurrency=2,
    history_end="2026-11-28",
)


@dataclass(frozen=True)
class Calendar:
    """The simulated days: history before the experiment, then the shopping days (ending yesterday, so that
    every simulated event is earlier than the exposure it follows, which the API stamps now)."""

    start: dt.date  # the experiment's first day
    end: dt.date  # its last simulated day

    @classmethod
    def ending_yesterday(cls, days: int, today: dt.date | None = None) -> Calendar:
        today = today or dt.datetime.now(dt.UTC).date()
        return cls(start=today - dt.timedelta(days=days), end=today - dt.timedelta(days=1))

    @property
    def history_end(self) -> dt.date:
        return self.start - dt.timedelta(days=1)

    @property
    def started_at(self) -> str:
        return f"{self.start.isoformat()}T00:00:00.000Z"


def _log(message: str) -> None:
    print(f"[online_ab] {message}", file=sys.stderr, flush=True)


def _settings(work: Path) -> Settings:
    """Settings of a run confined to ``work`` (every process of the run reads the same environment)."""
    for var in _OWN_PATHS:
        os.environ.pop(var, None)
    os.environ["RECSYS_HOME"] = str(work / "home")
    os.environ.setdefault("RECSYS_SPARK_MASTER", "local[2]")
    get_settings.cache_clear()
    return get_settings()


# ---- 1. the shop's history in silver --------------------------------------------------------------
def simulate_history(sim: SimConfig, lake: str, cfg: Config, spark: Any) -> dict[str, Any]:
    """Simulate the history into landing and run the pipeline's ingest + clean over it."""
    from jobs import clean, ingest

    landed = simulate_to_landing(sim, lake)
    ingested = ingest.run(lake, sim.end_date, cfg, spark, window_days=None)
    cleaned = clean.run(lake, sim.end_date, cfg, spark, window_days=None)
    return {"events_landed": landed.get("n_events"), "days": len(ingested.get("days") or cleaned.get("days") or [])}


def silver_frames(lake: Lake, until: dt.date) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Silver events up to ``until`` (contract columns) and the silver catalogue."""
    days = [d for d in Lake.partition_days(lake.silver_events()) if d <= until]
    events = pd.concat([pd.read_parquet(lake.silver_events(d)) for d in days], ignore_index=True)
    events = events[[USER_COL, ITEM_COL, EVENT_TYPE_COL, TS_COL]]
    items = pd.read_parquet(lake.silver_items()) if lake.silver_items().exists() else None
    return events, items


# ---- 2. models: fit, validate, export, publish --------------------------------------------------------
def train_and_publish(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    run_date: dt.date,
    sizes: Sizes,
    settings: Settings,
    cfg: Config,
    out: Path,
) -> dict[str, dict[str, Any]]:
    """Fit popularity and SASRec on the history, evaluate on the validation split, publish both (popularity
    the champion); returns per model its validation metrics and fit seconds."""
    from evaluation.data import TrainData
    from evaluation.evaluate import evaluate
    from models.base import get_model_class
    from training.train import write_serving_files

    data = TrainData.from_events(events, items, cfg=cfg)
    window = {"start": data.meta.get("data_start"), "end": data.meta.get("data_end")}
    registry = ServingRegistry.from_settings(settings)
    results: dict[str, dict[str, Any]] = {}
    for name in (CONTROL, TREATMENT):
        model = get_model_class(name)(profile=sizes.profile, seed=cfg.train.seed, device=settings.device)
        started = time.perf_counter()
        model.fit(data)
        seconds = time.perf_counter() - started
        metrics = {k: float(v) for k, v in evaluate(model, data, split="valid", ks=tuple(cfg.train.k)).items()}
        art = model.export(out / name)
        write_serving_files(art, data, items)
        registry.publish(
            art,
            name,
            VERSION,
            {"metrics": metrics, "run_date": run_date.isoformat(), "data_window": window, "evaluated_on": "valid"},
        )
        results[name] = {"metrics": metrics, "fit_seconds": round(seconds, 2)}
        _log(f"{name}: {cfg.promotion.metric} = {metrics.get(cfg.promotion.metric, float('nan')):.4f} ({seconds:.1f}s)")
    registry.set_champion(CONTROL, VERSION)
    return results


# ---- 4. the real API and the shoppers -----------------------------------------------------------
def last_items(events: pd.DataFrame, n: int = 5) -> dict[str, list[str]]:
    """Each user's last ``n`` items of ``events`` (oldest first): where the shoppers' next-item habit starts."""
    ordered = events.sort_values([USER_COL, TS_COL], kind="stable")
    return {str(u): [str(i) for i in g[ITEM_COL].tail(n)] for u, g in ordered.groupby(USER_COL, sort=False)}


def shop_through_api(
    sim: SimConfig, shoppers: ShopperConfig, work: Path, recent: dict[str, list[str]] | None = None
) -> ShopperReport:
    """Start ``python -m serving`` on this run's registry and lake, let the shoppers browse it, stop it (SIGTERM:
    the landing zone is flushed)."""
    key, record = new_key("online-ab", SCOPES)
    port = free_port()
    env = dict(
        os.environ,
        RECSYS_HOST="127.0.0.1",
        RECSYS_PORT=str(port),
        RECSYS_API_KEYS=json.dumps({"keys": [record.to_json()]}),
        PYTHONPATH=str(ROOT),
    )
    log = work / "api.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=180)
        report = Shoppers(sim, shoppers, build_shop(sim), recent).run(f"http://127.0.0.1:{port}", key)
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    if code not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal it handled once it has shut down
        raise RuntimeError(f"the API exited with {code} on SIGTERM; see {log}")
    return report


# ---- 5. the daily read-out, as recsys_experiments runs it -----------------------------------------
def read_out(run_date: dt.date, settings: Settings, cfg: Config, spark: Any) -> dict[str, Any]:
    """The daily pipeline's ingest + clean of the API's events, then the DAG's tasks in order."""
    from core.reports import write_report
    from expectations.exposures import validate_exposures
    from jobs import attribution, clean, exposures, ingest
    from jobs import experiment_report as spark_report
    from training.experiment_report import experiment_plan, log_written_report, report_experiment

    lake = settings.lake
    stages: dict[str, Any] = {}
    ingest.run(lake, run_date, cfg, spark, window_days=None)
    stages["clean"] = {"cleaned_days": clean.run(lake, run_date, cfg, spark, window_days=None).get("cleaned_days")}

    plan = experiment_plan(EXPERIMENT, settings)
    if not plan or not plan.get("started_at"):
        raise RuntimeError(f"the registry holds no experiment {EXPERIMENT!r}")
    start = dt.datetime.fromisoformat(str(plan["started_at"]).replace("Z", "+00:00")).date()
    window_days = min(max((run_date - start).days + 1, 1), cfg.window.days)
    exposed = exposures.run(lake, run_date, cfg, spark, window_days=window_days)
    stages["exposures"] = {k: v for k, v in exposed.items() if k not in ("bronze", "silver")}
    validated = validate_exposures(lake, run_date, spark, cfg=cfg, window_days=window_days)
    write_report(lake, run_date, "validate_exposures", validated)
    stages["validate_exposures"] = {"success": validated.get("success")}
    attributed = attribution.run(lake, run_date, cfg, spark, window_days=window_days)
    by_type: dict[str, int] = {}
    for day in attributed["days"].values():
        for event_type, n in (day.get("attributed_by_event_type") or {}).items():
            by_type[event_type] = by_type.get(event_type, 0) + int(n)
    keys = ("events", "attributed", "late", "unexposed", "with_request_id", "unknown_request", "item_not_in_request")
    stages["attribution"] = {**{k: attributed[k] for k in keys}, "attributed_by_event_type": by_type}
    aggregates = spark_report.run(
        lake,
        run_date,
        cfg,
        spark,
        window_days,
        experiment=EXPERIMENT,
        start=plan.get("started_at"),
        kind=plan.get("type") or "ab",
    )
    report = report_experiment(EXPERIMENT, run_date, aggregates, plan=plan, settings=settings, log_to_mlflow=False)
    report["mlflow_run_id"] = log_written_report(report["files"]["json"])
    report["stages"] = stages
    return report


# ---- the whole run ------------------------------------------------------------------------------
def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Every step of the module docstring in ``work``; returns the report, the shoppers' tallies and timings."""
    from jobs.spark import get_spark
    from training.experiment import start_experiment

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 1)
        clock = now

    settings = _settings(work)
    cfg = load_config()
    calendar = Calendar.ending_yesterday(sizes.days)
    history_end = dt.date.fromisoformat(sizes.history_end) if sizes.history_end else calendar.history_end
    if history_end > calendar.history_end:
        raise ValueError(f"history_end {history_end} must be before the experiment's first day {calendar.start}")
    sim = SimConfig(
        n_users=sizes.users,
        n_items=sizes.items,
        n_categories=sizes.categories,
        n_brands=sizes.brands,
        days=sizes.history_days,
        end_date=history_end,
        seed=sizes.seed,
    )
    spark = get_spark("online-ab", shuffle_partitions=4)
    lake = Lake(settings.lake)

    _log(f"simulating {sizes.history_days} days of history ({sizes.users} users, {sizes.items} items)")
    history = simulate_history(sim, settings.lake, cfg, spark)
    lap("history")
    events, items = silver_frames(lake, history_end)
    offline = train_and_publish(events, items, history_end, sizes, settings, cfg, work / "artifacts")
    lap("train")

    doc = start_experiment(
        EXPERIMENT,
        (CONTROL, VERSION),
        [(TREATMENT, VERSION)],
        shares=[0.5, 0.5],
        salt=f"{EXPERIMENT}-{sizes.seed}",
        settings=settings,
        cfg=cfg,
        started_at=calendar.started_at,
    )
    _log(f"experiment {doc['name']} started at {doc['started_at']}; shoppers browse {calendar.start}..{calendar.end}")
    shoppers = ShopperConfig(
        n_users=sizes.shoppers,
        days=sizes.days,
        end_date=calendar.end,
        sessions_per_day=sizes.sessions_per_day,
        pages_per_session=sizes.pages,
        complement_interest=sizes.complement_interest,
        concurrency=sizes.concurrency,
        seed=sizes.seed,
    )
    tallies = shop_through_api(sim, shoppers, work, last_items(events))
    lap("shoppers")
    if tallies.errors:
        raise RuntimeError(f"{len(tallies.errors)} API calls failed, e.g. {tallies.errors[:3]}")

    landed = Lake.partition_days(lake.landing_exposures())
    run_date = max(landed) if landed else dt.datetime.now(dt.UTC).date()
    report = read_out(run_date, settings, cfg, spark)
    lap("read_out")
    variants = report["analysis"]["variants"]
    return {
        "sizes": asdict(sizes),
        "run_date": run_date.isoformat(),
        "history": history,
        "offline": offline,
        "shoppers": tallies.as_dict(),
        "report_exposures": sum(int(v.get("exposures", 0)) for v in variants.values()),
        "report": {k: report[k] for k in ("analysis", "decision", "units", "files", "mlflow_run_id", "stages")},
        "markdown": Path(report["files"]["markdown"]).read_text(),
        "timings_s": timings,
    }


def shopper_table(shoppers: dict[str, Any]) -> str:
    """The shoppers' own count per arm (what the API answered them and what they did)."""
    lines = [
        "| arm | answers | items shown | clicks | CTR | carts | purchases | revenue |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, t in shoppers["by_arm"].items():
        lines.append(
            f"| {arm} | {t['requests']:,} | {t['impressions']:,} | {t['clicks']:,} | {t['ctr']:.4f} | "
            f"{t['carts']:,} | {t['purchases']:,} | {t['revenue']:,.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    d = Sizes()
    p = argparse.ArgumentParser(prog="python -m bench.online_ab", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"the test's size: {QUICK}")
    p.add_argument("--work", default=None, help="work folder (kept); default: a temporary folder, removed")
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    p.add_argument("--users", type=int, help=f"the shop's users (default {d.users})")
    p.add_argument("--items", type=int, help=f"the shop's items (default {d.items})")
    p.add_argument("--categories", type=int, help=f"the shop's categories (default {d.categories})")
    p.add_argument("--brands", type=int, help=f"the shop's brands (default {d.brands})")
    p.add_argument("--history-days", type=int, help=f"simulated days before the experiment (default {d.history_days})")
    p.add_argument("--history-end", help="the history's last day, YYYY-MM-DD (default: the day before the experiment)")
    p.add_argument("--days", type=int, help=f"simulated experiment days (default {d.days})")
    p.add_argument("--shoppers", type=int, help=f"users who browse the API (default {d.shoppers})")
    p.add_argument(
        "--sessions-per-day", type=float, help=f"mean sessions per shopper and day (default {d.sessions_per_day})"
    )
    p.add_argument("--pages", type=int, help=f"recommendation pages per session (default {d.pages})")
    p.add_argument(
        "--complement-interest",
        type=float,
        help=f"how much shoppers like the complements of their last item, 0 = tastes only (default {d.complement_interest})",
    )
    p.add_argument("--concurrency", type=int, help=f"shoppers browsing at once (default {d.concurrency})")
    p.add_argument("--profile", choices=("quick", "full"), help=f"training profile (default {d.profile})")
    p.add_argument("--seed", type=int, help=f"shop and shoppers seed (default {d.seed})")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else d
    fields = ("users", "items", "categories", "brands", "history_days", "history_end", "days", "shoppers", "sessions_per_day", "pages", "concurrency",
              "complement_interest")  # fmt: skip
    changes = {f: getattr(args, f) for f in (*fields, "profile", "seed") if getattr(args, f) is not None}
    return replace(sizes, **changes), args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    sizes, args = parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mercato-online-ab-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(sizes, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(result["markdown"])
    print("Shoppers' own tallies (what the API answered them and what they did):\n")
    print(shopper_table(result["shoppers"]))
    print(
        f"\nExposures in the report: {result['report_exposures']:,}; answers the shoppers received: "
        f"{result['shoppers']['total']['requests']:,}. Timings (s): {result['timings_s']}"
    )
    line = json.dumps({k: v for k, v in result.items() if k != "markdown"}, default=str)
    if args.json_out:
        Path(args.json_out).write_text(line)
    print(line)
    return result


if __name__ == "__main__":
    main()
