"""
### recsys_experiments — the online loop's daily read-out

plan → ingest_exposures (Spark) → validate_exposures (GX) → attribute (Spark) → report (Spark aggregates +
always-valid statistics) → log_mlflow → conclude.

`plan` reads the experiment from the serving registry's `experiment.json` (its arms, shares and start);
the exposure log and the attribution cover the days since the start (unchanged days are skipped). The
report — per variant users, exposures, CTR, add-to-cart rate, conversion, revenue per user with
always-valid 95% intervals, lift, p-value, CUPED variance reduction, SRM check and MDE — is written to
`<reports>/<run date>/experiment_<name>.json` and `.md` and logged as an MLflow run. Its intervals stay
valid however often it is read, so reading it every day is safe.

Without an experiment (none running, none named) the exposure log is still ingested, validated and
attributed; the report tasks are skipped.

**Params** (Trigger DAG w/ config): `experiment` (empty = the registry's), `run_date` (empty = the day
before the logical date), `alpha`, `metric` (the primary metric), `promote` (conclude: make a treatment
that wins significantly with a passing SRM check the champion; off = the decision is only reported),
`window_days` (days read when the experiment's start is unknown).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from core.config import Config, load_config
from core.online import REPORT_DEFAULTS, REPORT_METRICS

_CFG = load_config()
DATA_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=30)}


def _timeout(task_id: str) -> dt.timedelta:
    """A task's ``execution_timeout`` from ``[dag]`` (as recsys_daily's)."""
    return dt.timedelta(minutes=_CFG.dag.task_timeout(task_id))


def _run_date(params: dict[str, Any]) -> dt.date:
    """The ``run_date`` param, else the day before the logical date."""
    if params.get("run_date"):
        return dt.date.fromisoformat(str(params["run_date"]))
    context = get_current_context()
    anchor = context.get("logical_date") or context.get("data_interval_end") or dt.datetime.now(dt.UTC)
    return (anchor - dt.timedelta(days=1)).date()


def _runtime() -> tuple[dict[str, Any], dt.date, str, Config]:
    from core.settings import get_settings

    params = dict(get_current_context()["params"])
    return params, _run_date(params), get_settings().lake, load_config()


def _plan() -> dict[str, Any]:
    return get_current_context()["ti"].xcom_pull(task_ids="plan") or {}


@dag(
    dag_id="recsys_experiments",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["mercato", "experiments"],
    doc_md=__doc__,
    default_args={"owner": "mercato", "retries": 0},
    dagrun_timeout=dt.timedelta(minutes=_CFG.dag.run_timeout_minutes),
    params={
        "experiment": Param("", type="string", description="Experiment name; empty: the registry's experiment.json."),
        "run_date": Param("", type="string", description="YYYY-MM-DD; empty: the day before the logical date."),
        "alpha": Param(
            REPORT_DEFAULTS.alpha,
            type="number",
            exclusiveMinimum=0,
            maximum=0.5,
            description="Significance level; intervals are (1 - alpha) always-valid confidence sequences.",
        ),
        "metric": Param(REPORT_DEFAULTS.primary_metric, enum=list(REPORT_METRICS), description="The primary metric."),
        "promote": Param(
            False,
            type="boolean",
            description="Conclude: promote a treatment that wins significantly with a passing SRM check.",
        ),
        "window_days": Param(
            REPORT_DEFAULTS.window_days_without_start,
            type="integer",
            minimum=1,
            description="Days read when the experiment's start is unknown (or there is no experiment).",
        ),
    },
)
def recsys_experiments() -> None:
    @task(execution_timeout=_timeout("plan"))
    def plan() -> dict[str, Any]:
        from training.experiment_report import experiment_plan

        params, run_date, _, cfg = _runtime()
        experiment = experiment_plan(params["experiment"] or None)
        window_days = int(params["window_days"])
        if experiment and experiment.get("started_at"):
            start = dt.datetime.fromisoformat(str(experiment["started_at"]).replace("Z", "+00:00")).date()
            window_days = min(max((run_date - start).days + 1, 1), cfg.window.days)
        return {"run_date": run_date.isoformat(), "window_days": window_days, "experiment": experiment}

    @task(execution_timeout=_timeout("ingest_exposures"), **DATA_RETRIES)
    def ingest_exposures() -> dict[str, Any]:
        from jobs import exposures
        from jobs.spark import get_spark

        _, run_date, lake, cfg = _runtime()
        return exposures.run(lake, run_date, cfg, get_spark(), window_days=_plan()["window_days"])

    @task(execution_timeout=_timeout("validate_exposures"))
    def validate_exposures() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from core.reports import write_report
        from expectations.exposures import validate_exposures as validate
        from jobs.spark import get_spark

        _, run_date, lake, cfg = _runtime()
        planned = _plan()
        try:
            summary = validate(lake, run_date, get_spark(), cfg=cfg, window_days=planned["window_days"])
        except FileNotFoundError as missing:
            if planned.get("experiment"):
                raise
            raise AirflowSkipException(f"no experiment and no exposure log: {missing}") from None
        write_report(lake, run_date, "validate_exposures", summary)
        return summary

    @task(execution_timeout=_timeout("attribute"), **DATA_RETRIES)
    def attribute() -> dict[str, Any]:
        from jobs import attribution
        from jobs.spark import get_spark

        _, run_date, lake, cfg = _runtime()
        return attribution.run(lake, run_date, cfg, get_spark(), window_days=_plan()["window_days"])

    @task(execution_timeout=_timeout("report"))
    def report() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs import experiment_report as spark_report
        from jobs.spark import get_spark
        from training.experiment_report import report_experiment

        params, run_date, lake, cfg = _runtime()
        planned = _plan()
        experiment = planned.get("experiment")
        if not experiment:
            raise AirflowSkipException("no experiment in the registry and none named: nothing to report")
        aggregates = spark_report.run(
            lake,
            run_date,
            cfg,
            get_spark(),
            planned["window_days"],
            experiment=experiment["name"],
            start=experiment.get("started_at"),
            kind=experiment.get("type") or "ab",
        )
        result = report_experiment(
            experiment["name"],
            run_date,
            aggregates,
            alpha=float(params["alpha"]),
            primary=str(params["metric"]),
            plan=experiment,
            log_to_mlflow=False,
        )
        return {k: result[k] for k in ("experiment", "run_date", "decision", "files")}

    @task(execution_timeout=_timeout("log_mlflow"))
    def log_mlflow() -> str:
        from training.experiment_report import log_written_report

        reported = get_current_context()["ti"].xcom_pull(task_ids="report")
        return log_written_report(reported["files"]["json"])

    @task(execution_timeout=_timeout("conclude"))
    def conclude() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from training.experiment_report import conclude as conclude_experiment

        params, run_date, _, _ = _runtime()
        if not params["promote"]:
            raise AirflowSkipException("promote is off: the report's decision stands as a recommendation")
        name = _plan()["experiment"]["name"]
        return conclude_experiment(
            name, promote=True, run_date=run_date, alpha=float(params["alpha"]), primary=str(params["metric"])
        )

    planned = plan()
    ingested = ingest_exposures()
    validated = validate_exposures()
    attributed = attribute()
    reported = report()
    logged = log_mlflow()
    planned >> ingested >> validated >> attributed >> reported >> logged >> conclude()


recsys_experiments()
