"""
### recsys_daily — Mercato's daily retraining loop

land → erase (Spark: pending right-to-erasure requests) → ingest (Spark) → validate_raw (GX) → clean (Spark)
→ validate_clean (GX) → features (Spark) → split (Spark) → validate_features (GX)
→ train_&lt;model&gt; ×N (PyTorch, one MLflow run each) → promote.

A failed validation stops the run at that task with a readable report (Data Docs link in the log);
nothing downstream runs and the serving champion stays as it was. A raw day that failed stays failed
on later runs until it is fixed (`python -m jobs.quarantine`) or accepted (`python -m expectations.state`).

Every task has an `execution_timeout` and the run a `dagrun_timeout` (`config/recsys.toml` `[dag]`);
a failed or timed-out task or run POSTs an alert to `[alerting] webhook_url` (or
`RECSYS_ALERT_WEBHOOK_URL`) with the task, run date, exception and log location.

**Params** (Trigger DAG w/ config): `dataset` (a path; empty = only what is already in the landing
zone), `format` (`landing` | `simulated` | `events` | `s3rec` | `diginetica`), `run_date` (the last
day of data; empty = the day before the logical date), `models`, `profile`, `protocol`, `promote`,
`force` (let a backfill replace a champion trained on newer data), `window_days` and the simulator's size.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from core.config import PROFILES, Config, load_config
from core.contract import FORMATS, PROTOCOLS
from dags.alerts import alert_on_failure

_CFG = load_config()
ZOO: list[str] = list(_CFG.train.zoo)
DEFAULT_MODELS: list[str] = list(_CFG.train.models)

DATA_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=30)}
#: Formats whose landing days are a daily feed: the raw gate also judges data per day, volume and drift.
DAILY_FEED_FORMATS = ("landing", "simulated")


def _timeout(task_id: str) -> dt.timedelta:
    """A task's ``execution_timeout`` from ``[dag]``."""
    return dt.timedelta(minutes=_CFG.dag.task_timeout(task_id))


def _run_date(params: dict[str, Any]) -> dt.date:
    """The last day of data this run covers: the ``run_date`` param, else the day before the logical date."""
    if params.get("run_date"):
        return dt.date.fromisoformat(str(params["run_date"]))
    context = get_current_context()
    anchor = context.get("logical_date") or context.get("data_interval_end") or dt.datetime.now(dt.UTC)
    return (anchor - dt.timedelta(days=1)).date()


def _runtime() -> tuple[dict[str, Any], dt.date, str, Config]:
    """This run's params, run date, lake root and config (with the run's protocol)."""
    from core.settings import get_settings

    params = dict(get_current_context()["params"])
    cfg = load_config()
    if params.get("protocol"):
        cfg = cfg.replace(split={"protocol": params["protocol"]})
    return params, _run_date(params), get_settings().lake, cfg


@dag(
    dag_id="recsys_daily",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["mercato", "recsys"],
    doc_md=__doc__,
    default_args={
        "owner": "mercato",
        "retries": 0,
        "on_failure_callback": alert_on_failure,
        "execution_timeout": dt.timedelta(minutes=_CFG.dag.default_task_timeout_minutes),
    },
    on_failure_callback=alert_on_failure,
    dagrun_timeout=dt.timedelta(minutes=_CFG.dag.run_timeout_minutes),
    params={
        "dataset": Param("", type="string", description="Path of the data to load; empty: landing zone only."),
        "format": Param(
            "landing",
            enum=["landing", *FORMATS],
            description="How to read `dataset` (simulated: the seeded shop simulator, no path needed).",
        ),
        "run_date": Param("", type="string", description="YYYY-MM-DD; empty: the day before the logical date."),
        "models": Param(DEFAULT_MODELS, type="array", description=f"Models to train, any of {ZOO}."),
        "profile": Param(_CFG.train.profile, enum=list(PROFILES)),
        "protocol": Param(_CFG.split.protocol, enum=list(PROTOCOLS)),
        "promote": Param(True, type="boolean", description="Promote and publish the winner if it beats the champion."),
        "force": Param(
            _CFG.promotion.force,
            type="boolean",
            description="Let the winner replace a champion trained on newer data (a deliberate backfill).",
        ),
        "window_days": Param(_CFG.window.days, type="integer", minimum=1),
        "sim_users": Param(5000, type="integer", minimum=10),
        "sim_items": Param(2000, type="integer", minimum=10),
        "sim_days": Param(30, type="integer", minimum=1),
        "seed": Param(_CFG.train.seed, type="integer"),
    },
)
def recsys_daily() -> None:
    @task(execution_timeout=_timeout("land"), **DATA_RETRIES)
    def land() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from core.reports import write_report
        from jobs.loaders import land as land_data
        from jobs.loaders import landing_coverage

        params, run_date, lake, _ = _runtime()
        window_days = int(params["window_days"])
        if params["format"] == "landing":
            coverage = landing_coverage(lake, run_date, window_days)
            report = {"format": "landing", "note": "no dataset given: processing the landing zone as it is"}
            report["window"] = coverage
            if not coverage["days_in"]:
                write_report(lake, run_date, "land", report)
                raise AirflowFailException(
                    f"no landing data in the window {coverage['start']}..{coverage['end']} "
                    f"({coverage['days_before']} older landing day(s) lie outside it): drop event files into "
                    f"{lake}/landing/events/dt=YYYY-MM-DD/, widen window_days, or trigger with format=simulated"
                )
        else:
            sim = {"n_users": params["sim_users"], "n_items": params["sim_items"], "days": params["sim_days"]}
            options = {**sim, "seed": params["seed"]} if params["format"] == "simulated" else {}
            report = land_data(params["dataset"] or None, params["format"], lake, run_date, window_days, **options)
            if not report["window"]["events_in"]:
                write_report(lake, run_date, "land", report)
                raise AirflowFailException(
                    f"none of the {report.get('n_events', 0)} events ({report.get('start')}..{report.get('end')}) "
                    f"lies in the window {report['window']['start']}..{report['window']['end']}: "
                    "set run_date to the data's last day or widen window_days"
                )
        write_report(lake, run_date, "land", report)
        return report

    def spark_job(module: str, task_id: str | None = None):
        task_id = task_id or module.rsplit(".", 1)[-1]

        @task(task_id=task_id, execution_timeout=_timeout(task_id), **DATA_RETRIES)
        def run_job() -> dict[str, Any]:
            import importlib

            from jobs.spark import get_spark

            params, run_date, lake, cfg = _runtime()
            job = importlib.import_module(module)
            return job.run(lake, run_date, cfg, get_spark(), window_days=params["window_days"])

        return run_job

    def validation(stage: str):
        @task(task_id=f"validate_{stage}", execution_timeout=_timeout(f"validate_{stage}"))
        def validate() -> dict[str, Any]:
            from core.reports import write_report
            from expectations.runner import validate_stage
            from jobs.spark import get_spark

            params, run_date, lake, cfg = _runtime()
            # raw judges every day whose last outcome is not a pass (new, re-ingested or failed days) itself
            day_checks = params["format"] in DAILY_FEED_FORMATS
            summary = validate_stage(
                stage, lake, run_date, get_spark(), cfg=cfg, window_days=params["window_days"], day_checks=day_checks
            )
            write_report(lake, run_date, f"validate_{stage}", summary)
            return summary

        return validate

    def trainer(model_name: str):
        @task(
            task_id=f"train_{model_name}",
            retries=1,
            retry_delay=dt.timedelta(seconds=10),
            execution_timeout=_timeout(f"train_{model_name}"),
        )
        def train() -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from core.lake import Lake
            from core.reports import write_report
            from training.train import train_model

            params, run_date, lake, cfg = _runtime()
            if model_name not in params["models"]:
                raise AirflowSkipException(f"{model_name} is not in this run's models {params['models']}")
            result = train_model(model_name, Lake(lake).gold(run_date), run_date, profile=params["profile"], cfg=cfg)
            write_report(lake, run_date, f"train_{model_name}", result)
            return result

        return train

    @task(
        trigger_rule="none_failed_min_one_success",
        execution_timeout=_timeout("promote"),
        retries=2,
        retry_delay=dt.timedelta(minutes=1),
    )
    def promote() -> dict[str, Any]:
        """Publish first, then move the MLflow alias (each retried with backoff); a failure leaves both as
        they were and the task's own retries run the step again."""
        from core.lake import Lake
        from core.registry import publish_champion
        from core.reports import write_report
        from training.promote import compare_and_promote

        params, run_date, lake, cfg = _runtime()
        ti = get_current_context()["ti"]
        selected = [f"train_{name}" for name in ZOO if name in params["models"]]
        trained = [c for c in ti.xcom_pull(task_ids=selected) if c]
        decision = compare_and_promote(
            trained,
            Lake(lake).gold(run_date),
            run_date,
            cfg=cfg,
            promote=bool(params["promote"]),
            publish=publish_champion,
            force=bool(params.get("force", cfg.promotion.force)),
        )
        write_report(lake, run_date, "promote", decision)
        return decision

    landed = land()
    erased = spark_job("jobs.erasure", task_id="erase")()
    ingested = spark_job("jobs.ingest")()
    raw_ok = validation("raw")()
    cleaned = spark_job("jobs.clean")()
    clean_ok = validation("clean")()
    featured = spark_job("jobs.features")()
    split = spark_job("jobs.split")()
    features_ok = validation("features")()
    landed >> erased >> ingested >> raw_ok >> cleaned >> clean_ok >> featured >> split >> features_ok

    promoted = promote()
    for name in ZOO:
        features_ok >> trainer(name)() >> promoted


recsys_daily()
