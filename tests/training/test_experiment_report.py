"""training.experiment_report on simulated aggregates: the report's table and files, its MLflow run, and conclude,
which promotes only a significant winner whose SRM check passed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from core.lake import Lake
from core.online import PREFERENCE, aggregates_path
from evaluation.online import CONTROL_WINS, SRM_MISMATCH, TREATMENT_WINS, Moments
from evaluation.online_sim import moments_by_day, simulate_ab, simulate_rankers
from training import experiment_report
from training.experiment_report import build_report, conclude, render_markdown, write_report_files

RUN_DATE = dt.date(2026, 3, 14)
SHARES = {"control": 0.5, "treatment": 0.5}


def simulated_aggregates(
    effect: float = 0.0, served: dict[str, float] | None = None, seed: int = 100
) -> dict[str, Any]:
    """What jobs.experiment_report writes, from simulated shoppers (14 days)."""
    final = moments_by_day(
        simulate_ab(seed, days=14, new_units_per_day=400, served_shares=served, effects={"treatment": effect})
    )[-1]
    return {
        "experiment": "exp",
        "kind": "ab",
        "run_date": RUN_DATE.isoformat(),
        "start": "2026-03-01T00:00:00Z",
        "units": {"total": sum(m.n for m in final.values()), "in_several_variants": 0},
        "missing_attribution_days": [],
        "arms": {v: m.to_dict() for v, m in final.items()},
    }


def test_report_has_every_metric_a_readable_table_and_files(tmp_path: Path) -> None:
    report = build_report(simulated_aggregates(0.2), SHARES)
    a = report["analysis"]
    assert list(a["variants"]) == ["control", "treatment"]
    for variant in a["variants"].values():
        assert variant["units"] > 2000 and variant["exposures"] > variant["units"]
        assert set(variant["metrics"]) == {"ctr", "ctr_per_user", "add_to_cart_rate", "conversion", "revenue_per_user"}
    ctr = a["comparisons"]["treatment"]["ctr"]
    assert ctr["lift_ci"][0] < ctr["lift"] < ctr["lift_ci"][1]
    assert report["decision"]["status"] == TREATMENT_WINS and a["srm"]["passed"]

    markdown = render_markdown(report)
    assert "| ctr |" in markdown and "| revenue_per_user |" in markdown
    assert "always-valid" in markdown and "**Decision**: treatment_wins" in markdown
    json_path, md_path = write_report_files(report, tmp_path)
    assert json_path == tmp_path / RUN_DATE.isoformat() / "experiment_exp.json"
    assert json.loads(json_path.read_text())["decision"]["winner"] == "treatment"
    assert md_path.read_text() == markdown


def test_an_arm_without_units_is_still_reported() -> None:
    aggregates = simulated_aggregates()
    del aggregates["arms"]["treatment"]
    report = build_report(aggregates, SHARES)
    assert report["analysis"]["variants"]["treatment"]["units"] == 0
    assert report["analysis"]["srm"]["passed"] is False
    assert report["decision"]["promote"] is False
    assert "| treatment | 0 | 0 |" in render_markdown(report)


def test_interleaving_report() -> None:
    outcome = simulate_rankers(3, 300)
    aggregates = {
        "experiment": "il",
        "kind": "interleaving",
        "run_date": RUN_DATE.isoformat(),
        "interleaving": {
            "teams": {"control": "control", "treatment": "treatment"},
            "requests": int(outcome.requests.sum()),
            "wins": int(outcome.wins.sum()),
            "losses": int(outcome.losses.sum()),
            "ties": int(outcome.ties.sum()),
            "first_pick": outcome.first_pick,
            "units": Moments.from_arrays({PREFERENCE: outcome.preference()}).to_dict(),
        },
    }
    report = build_report(aggregates, None)
    assert report["primary_metric"] == PREFERENCE
    assert report["analysis"]["wins"] == int(outcome.wins.sum())
    assert "| requests | wins | losses | ties |" in render_markdown(report)


@pytest.fixture
def reports(recsys_home: Path) -> Path:
    from core.settings import get_settings

    return Path(get_settings().reports)


class FakePromoter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, variant: str, reason: str) -> dict[str, str]:
        self.calls.append((variant, reason))
        return {"winner": variant}


@pytest.mark.parametrize(
    ("effect", "served", "promote", "status", "promoted"),
    [
        (0.2, None, True, TREATMENT_WINS, True),
        (0.2, None, False, TREATMENT_WINS, False),
        (-0.2, None, True, CONTROL_WINS, False),
        (0.2, {"control": 0.55, "treatment": 0.45}, True, SRM_MISMATCH, False),
    ],
)
def test_conclude_promotes_only_a_significant_winner_with_a_passing_srm_check(
    reports: Path, effect: float, served: dict[str, float] | None, promote: bool, status: str, promoted: bool
) -> None:
    write_report_files(build_report(simulated_aggregates(effect, served), SHARES), reports)
    promoter = FakePromoter()
    conclusion = conclude("exp", promote=promote, promoter=promoter)
    assert conclusion["decision"]["status"] == status
    assert conclusion["promoted"] is promoted
    assert promoter.calls == ([("treatment", conclusion["decision"]["reason"])] if promoted else [])
    saved = reports / RUN_DATE.isoformat() / "experiment_exp_conclusion.json"
    assert json.loads(saved.read_text())["promoted"] is promoted


def test_conclude_reads_the_latest_report_and_needs_one(reports: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no report of experiment 'exp'"):
        conclude("exp")
    early = build_report(simulated_aggregates(0.2), SHARES)
    later = {**build_report(simulated_aggregates(0.0), SHARES), "run_date": "2026-03-15"}
    write_report_files(early, reports)
    write_report_files(later, reports)
    assert conclude("exp")["report_run_date"] == "2026-03-15"
    assert conclude("exp", run_date=RUN_DATE)["decision"]["status"] == TREATMENT_WINS
    assert experiment_report.main(["conclude", "--name", "nothing"]) == 2


def test_promotion_refuses_an_experiment_the_registry_does_not_run(reports: Path) -> None:
    write_report_files(build_report(simulated_aggregates(0.2), SHARES), reports)
    with pytest.raises(RuntimeError, match="not the registry's experiment"):
        conclude("exp", promote=True)


def test_report_experiment_reads_the_lake_writes_files_and_logs_to_mlflow(recsys_home: Path) -> None:
    from mlflow import MlflowClient

    from core.settings import get_settings

    settings = get_settings()
    with pytest.raises(FileNotFoundError, match=r"jobs\.experiment_report"):
        experiment_report.report_experiment("exp", RUN_DATE, plan={"shares": SHARES}, log_to_mlflow=False)
    path = aggregates_path(Lake(settings.lake), "exp", RUN_DATE)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(simulated_aggregates(0.2)))
    report = experiment_report.report_experiment("exp", RUN_DATE, plan={"shares": SHARES})
    assert Path(report["files"]["markdown"]).exists()
    run = MlflowClient(settings.tracking_uri).get_run(report["mlflow_run_id"])
    assert run.data.tags["decision"] == TREATMENT_WINS and run.data.tags["kind"] == "experiment_report"
    assert run.data.metrics["treatment.ctr.lift"] == pytest.approx(
        report["analysis"]["comparisons"]["treatment"]["ctr"]["lift"]
    )
    assert "control.ctr.ci_low" in run.data.metrics and "srm.p_value" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(settings.tracking_uri).list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/lift.png"}
    assert json.loads(Path(report["files"]["json"]).read_text())["mlflow_run_id"] == report["mlflow_run_id"]

    again = experiment_report.log_written_report(report["files"]["json"])
    assert again != report["mlflow_run_id"]
    assert json.loads(Path(report["files"]["json"]).read_text())["mlflow_run_id"] == again
