"""The experiment report's statistics, measured on simulated shoppers with a known truth.

(a) A/A experiments read after every simulated day rarely ever look significant, and pass the SRM check;
(b) a real lift is detected and its interval covers it; (c) a 50/50 experiment served 55/45 is flagged
and never promoted; (d) CUPED removes variance when the pre-period is correlated, none when it is not;
(e) team-draft interleaving finds the better ranker and not a phantom one.
"""

from __future__ import annotations

import numpy as np

from core.online import PREFERENCE
from evaluation.online import (
    SRM_MISMATCH,
    TREATMENT_WINS,
    Moments,
    analyse_ab,
    decide,
    interleaving_analysis,
)
from evaluation.online_sim import RankingWorld, Shoppers, moments_by_day, simulate_ab, simulate_rankers

SHARES = {"control": 0.5, "treatment": 0.5}
SEEDS = range(20)
DAYS = 14
ALPHA = 0.05


def test_a_a_read_daily_is_rarely_ever_significant_and_passes_srm() -> None:
    ever_significant = 0
    for seed in SEEDS:
        days = moments_by_day(simulate_ab(seed, days=DAYS, new_units_per_day=300))
        looks = [analyse_ab(day, SHARES) for day in days]
        ever_significant += any(look["comparisons"]["treatment"]["ctr"]["p_value"] < ALPHA for look in looks)
        assert looks[-1]["srm"]["passed"], seed
        assert decide(looks[-1], "ctr")["promote"] is False
    assert ever_significant <= 3, f"A/A significant at some look in {ever_significant} of {len(SEEDS)} runs"


def test_a_real_lift_is_detected_and_its_interval_covers_it() -> None:
    for seed in range(100, 105):
        final = moments_by_day(simulate_ab(seed, days=DAYS, new_units_per_day=400, effects={"treatment": 0.2}))[-1]
        analysis = analyse_ab(final, SHARES)
        ctr = analysis["comparisons"]["treatment"]["ctr"]
        assert ctr["significant"], seed
        low, high = ctr["lift_ci"]
        assert low < 0.2 < high, (seed, ctr["lift_ci"])
        verdict = decide(analysis, "ctr")
        assert (verdict["status"], verdict["winner"], verdict["promote"]) == (TREATMENT_WINS, "treatment", True)


def test_sample_ratio_mismatch_is_flagged_and_blocks_promotion() -> None:
    served = {"control": 0.55, "treatment": 0.45}
    final = moments_by_day(
        simulate_ab(7, days=DAYS, new_units_per_day=400, served_shares=served, effects={"treatment": 0.2})
    )[-1]
    analysis = analyse_ab(final, SHARES)
    assert analysis["srm"]["checked"] and not analysis["srm"]["passed"]
    assert analysis["srm"]["p_value"] < 0.001
    verdict = decide(analysis, "ctr")
    assert (verdict["status"], verdict["promote"]) == (SRM_MISMATCH, False)


def test_cuped_reduces_variance_only_when_the_pre_period_is_correlated() -> None:
    for correlated, low, high in ((True, 0.2, 1.0), (False, -0.01, 0.01)):
        final = moments_by_day(
            simulate_ab(11, days=DAYS, new_units_per_day=400, shoppers=Shoppers(pre_correlated=correlated))
        )[-1]
        ctr = analyse_ab(final, SHARES)["comparisons"]["treatment"]["ctr"]
        assert low <= ctr["variance_reduction"] <= high, (correlated, ctr["variance_reduction"])


def _interleaving(world: RankingWorld, seed: int, users: int) -> dict:
    outcome = simulate_rankers(seed, users, world)
    scores = Moments.from_arrays({PREFERENCE: outcome.preference()})
    return interleaving_analysis(
        int(outcome.wins.sum()),
        int(outcome.losses.sum()),
        int(outcome.ties.sum()),
        scores,
        first_pick=outcome.first_pick,
    )


def test_interleaving_finds_the_better_ranker_and_no_phantom_one() -> None:
    better = _interleaving(RankingWorld(control_noise=1.0, treatment_noise=0.5), seed=5, users=800)
    assert better["wins"] > better["losses"] and better["delta_ab"] > 0
    assert better["preference"]["significant"] and better["sign_test_p"] < 0.01
    assert decide(better, PREFERENCE)["promote"] is True
    same = _interleaving(RankingWorld(control_noise=1.0, treatment_noise=1.0), seed=6, users=800)
    assert not same["preference"]["significant"]
    assert same["srm"]["passed"]
    assert np.isfinite(same["delta_ab"])
