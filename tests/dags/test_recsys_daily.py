"""The DAG file parses without errors and has the expected shape (Airflow's DAG best practices)."""

from __future__ import annotations

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
    chain = ["land", "ingest", "validate_raw", "clean", "validate_clean", "features", "split", "validate_features"]
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
    for task_id in ("land", "ingest", "clean", "features", "split"):
        assert dag.get_task(task_id).retries >= 1, task_id
    for task_id in ("validate_raw", "validate_clean", "validate_features", "promote"):
        assert dag.get_task(task_id).retries == 0, task_id
