"""The online loop through the running API: ``python -m bench.online_ab --quick``.

Popularity (control) against SASRec (treatment), 50/50: the shop's history simulated and cleaned by the
pipeline's jobs, both models fitted, validated and published, the experiment started through its offline
gate, the real API (``python -m serving``) browsed by simulated shoppers for three simulated days, stopped
(its landing flushed), then the daily read-out of ``recsys_experiments``. The report finds the treatment's
CTR lift with p < 0.01 and a passing SRM check, and nothing is lost between the API and the report: every
answer the shoppers received is one exposure in the report, every click they made is attributed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]


def test_the_sequential_model_wins_the_online_ab_through_the_running_api(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), RECSYS_DEVICE="cpu", RECSYS_SPARK_MASTER="local[2]")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.online_ab", "--quick", "--work", str(tmp_path / "work"), "--json-out", str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    report, shoppers = result["report"], result["shoppers"]

    # the treatment passed the offline gate on the validation split before it could be started
    offline = result["offline"]
    assert offline["sasrec"]["metrics"]["ndcg@10"] > offline["popularity"]["metrics"]["ndcg@10"]

    analysis = report["analysis"]
    ctr = analysis["comparisons"]["treatment"]["ctr"]
    assert ctr["lift"] > 0 and ctr["lift_ci"][0] > 0, ctr
    assert ctr["p_value"] < 0.01, ctr
    assert analysis["srm"]["checked"] and analysis["srm"]["passed"], analysis["srm"]
    markdown = Path(report["files"]["markdown"]).read_text()
    assert "| ctr |" in markdown and "Sample-ratio check**: passed" in markdown
    assert "| ctr |" in proc.stdout, "the bench prints the report"

    # nothing lost: every answer the shoppers got is an exposure of one arm, every click is attributed
    assert shoppers["n_errors"] == 0
    assert set(shoppers["by_arm"]) == {"online-ab/control", "online-ab/treatment"}
    answers = shoppers["total"]["requests"]
    assert result["report_exposures"] == answers > 1000
    for variant in ("control", "treatment"):
        assert analysis["variants"][variant]["exposures"] == shoppers["by_arm"][f"online-ab/{variant}"]["requests"]
    stages = report["stages"]
    assert stages["exposures"]["exposures"] == answers and stages["exposures"]["rejected"] == 0
    assert stages["validate_exposures"]["success"] is True
    attribution = stages["attribution"]
    assert attribution["unknown_request"] == 0 and attribution["item_not_in_request"] == 0
    assert attribution["attributed_by_event_type"]["click"] == shoppers["total"]["clicks"]
    assert attribution["attributed_by_event_type"].get("purchase", 0) == shoppers["total"]["purchases"]
    assert report["mlflow_run_id"]
