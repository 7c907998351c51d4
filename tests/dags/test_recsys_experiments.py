"""recsys_experiments parses without errors and has the expected shape, params and retries."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from core.online import REPORT_DEFAULTS, REPORT_METRICS

DAGS = Path(__file__).resolve().parents[2] / "dags"
CHAIN = ["plan", "ingest_exposures", "validate_exposures", "attribute", "report", "log_mlflow", "conclude"]


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "recsys_experiments.py"))
    assert bag.import_errors == {}
    return bag.dags["recsys_experiments"]


def test_schedule_and_params(dag) -> None:
    assert dag.schedule == "@daily" and dag.catchup is False
    assert dag.start_date.tzinfo is not None
    assert dag.doc_md and "recsys_experiments" in dag.doc_md
    params = dag.params.dump()
    assert params["experiment"] == "" and params["run_date"] == ""
    assert params["alpha"] == REPORT_DEFAULTS.alpha
    assert params["metric"] == REPORT_DEFAULTS.primary_metric
    assert params["promote"] is False
    assert dag.params.get_param("metric").schema["enum"] == list(REPORT_METRICS)


def test_task_chain(dag) -> None:
    assert set(dag.task_ids) == set(CHAIN)
    for upstream, downstream in itertools.pairwise(CHAIN):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}, upstream


def test_retries_only_where_they_help_and_every_task_has_a_timeout(dag) -> None:
    for task_id in CHAIN:
        task = dag.get_task(task_id)
        assert task.execution_timeout is not None, task_id
        assert (task.retries >= 1) == (task_id in ("ingest_exposures", "attribute")), task_id
