"""The DAG file parses without errors and has the expected shape (Airflow's DAG best practices)."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from core.config import load_config

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "recsys_daily" in dagbag.dags


def test_schedule_and_params(dagbag) -> None:
    dag = dagbag.dags["recsys_daily"]
    assert dag.catchup is False
    assert dag.schedule == "@daily"
    assert dag.start_date.tzinfo is not None
    params = dag.params.dump()
    for name in ("dataset", "format", "models", "promote", "profile", "protocol", "run_date"):
        assert name in params, name
    assert params["models"] == load_config().train.models


def test_task_chain(dagbag) -> None:
    dag = dagbag.dags["recsys_daily"]
    chain = [
        "land",
        "erase",
        "ingest",
        "validate_raw",
        "clean",
        "validate_clean",
        "features",
        "split",
        "validate_features",
    ]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    zoo = load_config().train.zoo
    for name in zoo:
        train = dag.get_task(f"train_{name}")
        assert train.upstream_task_ids == {"validate_features"}
        assert "promote" in train.downstream_task_ids
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"


def test_retries_only_where_they_help(dagbag) -> None:
    dag = dagbag.dags["recsys_daily"]
    # promote publishes first and moves the alias after: a rerun converges, so a failed publish is retried
    for task_id in ("land", "erase", "ingest", "clean", "features", "split", "promote"):
        assert dag.get_task(task_id).retries >= 1, task_id
    for task_id in ("validate_raw", "validate_clean", "validate_features"):
        assert dag.get_task(task_id).retries == 0, task_id


def test_every_task_and_the_run_alert_on_failure_and_have_timeouts(dagbag) -> None:
    """on_failure_callback on each task and on the run; execution_timeout per task and dagrun_timeout from [dag]."""
    from dags.alerts import alert_on_failure

    dag = dagbag.dags["recsys_daily"]
    cfg = load_config().dag
    assert dag.on_failure_callback == alert_on_failure or alert_on_failure in dag.on_failure_callback
    assert dag.dagrun_timeout == dt.timedelta(minutes=cfg.run_timeout_minutes)
    for task in dag.tasks:
        assert alert_on_failure in task.on_failure_callback, task.task_id
        assert task.execution_timeout == dt.timedelta(minutes=cfg.task_timeout(task.task_id)), task.task_id
    assert dag.get_task("train_sasrec").execution_timeout == dt.timedelta(minutes=cfg.task_timeout_minutes["train"])
    assert dag.get_task("erase").execution_timeout == dt.timedelta(minutes=cfg.task_timeout_minutes["erase"])
    assert dag.get_task("ingest").execution_timeout == dt.timedelta(minutes=cfg.default_task_timeout_minutes)
