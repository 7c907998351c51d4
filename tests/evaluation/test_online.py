"""evaluation.online formulas on hand-made numbers: moments, delta method, CUPED, confidence sequences, SRM, decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.online import CLICKS, EXPOSURES, PRE_CLICKS, PREFERENCE, REPORT_METRICS
from evaluation.online import (
    CONTROL_WINS,
    INCONCLUSIVE,
    METRIC_NAMES,
    SRM_MISMATCH,
    SRM_UNCHECKED,
    TREATMENT_WINS,
    AnalysisOptions,
    MetricSpec,
    Moments,
    always_valid_p,
    analyse_ab,
    arm_estimate,
    cs_halfwidth,
    cuped_adjust,
    cuped_theta,
    decide,
    fixed_p,
    interleaving_analysis,
    mixture_rho2,
    required_sample_size,
    srm_check,
)

CTR = MetricSpec("ctr", CLICKS, EXPOSURES, PRE_CLICKS)


def _arm(rng: np.random.Generator, n: int, rate: float) -> dict[str, np.ndarray]:
    exposures = 1 + rng.poisson(2.0, n)
    propensity = rng.beta(2, 8, n)
    clicks = rng.binomial(exposures * 3, np.clip(propensity * rate / 0.2, 0, 1))
    pre = rng.poisson(propensity * 30)
    return {EXPOSURES: exposures, CLICKS: clicks, PRE_CLICKS: pre}


def test_moments_give_numpy_means_and_covariances_and_round_trip_json() -> None:
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=50), "b": rng.poisson(3, 50).astype(float)}
    m = Moments.from_arrays(data)
    assert m.n == 50
    assert m.mean("a") == pytest.approx(data["a"].mean())
    assert m.cov("a", "b") == pytest.approx(np.cov(data["a"], data["b"])[0, 1])
    assert m.var("b") == pytest.approx(data["b"].var(ddof=1))
    again = Moments.from_dict(m.to_dict())
    assert again.columns == m.columns and np.allclose(again.cross, m.cross)
    with pytest.raises(KeyError, match="not among"):
        m.mean("c")
    assert Moments.from_arrays({"a": []}).n == 0


def test_ratio_metric_uses_the_delta_method() -> None:
    rng = np.random.default_rng(1)
    data = _arm(rng, 400, 0.2)
    est = arm_estimate(Moments.from_arrays(data), CTR)
    y, d, x = (data[c].astype(float) for c in (CLICKS, EXPOSURES, PRE_CLICKS))
    ratio = y.sum() / d.sum()
    influence = (y - ratio * d) / d.mean()
    assert est.value == pytest.approx(ratio)
    assert est.influence_var == pytest.approx(influence.var(ddof=1))
    assert est.covariate_cov == pytest.approx(np.cov(influence, x)[0, 1])
    assert est.variance == pytest.approx(influence.var(ddof=1) / 400)


def test_cuped_theta_is_the_pooled_slope_and_removes_the_explained_variance() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=2000)
    y = 2.0 * x + rng.normal(size=2000)
    spec = MetricSpec("y", "y", None, "x")
    arm = arm_estimate(Moments.from_arrays({"y": y, "x": x}), spec)
    theta = cuped_theta([arm])
    assert theta == pytest.approx(np.cov(y, x)[0, 1] / x.var(ddof=1))
    value, var = cuped_adjust(arm, theta, pooled_covariate_mean=x.mean())
    assert value == pytest.approx(y.mean())
    assert 1 - var / arm.variance == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-6)


def test_confidence_sequence_is_wider_than_a_fixed_interval_and_agrees_with_its_p_value() -> None:
    variance, n, alpha, tuning = 0.01, 1000, 0.05, 1000
    hw = cs_halfwidth(variance, n, alpha, tuning)
    assert hw > 1.96 * math.sqrt(variance)
    for estimate in (0.0, 0.5 * hw, 0.999 * hw, 1.001 * hw, 2 * hw):
        p = always_valid_p(estimate, variance, n, tuning, alpha)
        assert (p < alpha) == (abs(estimate) > hw), estimate
    assert always_valid_p(0.0, variance, n, tuning) == 1.0
    assert always_valid_p(0.0, 0.0, n, tuning) == 1.0 and always_valid_p(1.0, 0.0, n, tuning) == 0.0
    assert math.isnan(always_valid_p(math.nan, variance, n, tuning))
    assert fixed_p(1.96 * math.sqrt(variance), variance) == pytest.approx(0.05, abs=1e-3)
    assert mixture_rho2(alpha, tuning) == pytest.approx(
        (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / 1000
    )
    with pytest.raises(ValueError, match="alpha"):
        mixture_rho2(1.5, tuning)


def test_srm_check_against_the_configured_shares() -> None:
    shares = {"control": 0.5, "treatment": 0.5}
    assert srm_check({"control": 5000, "treatment": 5040}, shares, 0.001)["passed"] is True
    flagged = srm_check({"control": 5500, "treatment": 4500}, shares, 0.001)
    assert flagged["checked"] and not flagged["passed"] and flagged["p_value"] < 1e-20
    assert srm_check({"control": 900, "treatment": 100}, {"control": 0.9, "treatment": 0.1}, 0.001)["passed"]
    assert srm_check({"control": 10, "treatment": 10}, None, 0.001)["checked"] is False
    stray = srm_check({"control": 10, "treatment": 10, "other": 3}, shares, 0.001)
    assert stray["checked"] and not stray["passed"] and "other" in stray["reason"]


def _analysis(n: int, rate_t: float, shares=None, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    arms = {"control": Moments.from_arrays(_arm(rng, n, 0.2)), "treatment": Moments.from_arrays(_arm(rng, n, rate_t))}
    options = AnalysisOptions(metrics=(CTR,))
    return analyse_ab(arms, shares if shares is not None else {"control": 0.5, "treatment": 0.5}, options)


def test_analysis_reports_values_intervals_lift_and_mde() -> None:
    analysis = _analysis(3000, 0.26)
    ctr = analysis["comparisons"]["treatment"]["ctr"]
    control = analysis["variants"]["control"]["metrics"]["ctr"]
    assert control["ci"][0] < control["value"] < control["ci"][1]
    assert ctr["lift_ci"][0] < ctr["lift"] < ctr["lift_ci"][1]
    assert ctr["significant"] and ctr["p_value"] < 0.05 and ctr["p_value_fixed_horizon"] < ctr["p_value"]
    assert 0 < ctr["variance_reduction"] < 1 and ctr["mde"] > 0 and ctr["mde_relative"] > 0
    with pytest.raises(ValueError, match="control"):
        analyse_ab({"treatment": Moments.from_arrays(_arm(np.random.default_rng(0), 10, 0.2))}, None)


def test_decisions_promote_only_a_significant_winner_with_a_passing_srm_check() -> None:
    win = decide(_analysis(3000, 0.26), "ctr")
    assert (win["status"], win["winner"], win["promote"]) == (TREATMENT_WINS, "treatment", True)
    lose = decide(_analysis(3000, 0.14), "ctr")
    assert (lose["status"], lose["winner"], lose["promote"]) == (CONTROL_WINS, "control", False)
    flat = decide(_analysis(300, 0.2), "ctr")
    assert (flat["status"], flat["promote"]) == (INCONCLUSIVE, False)
    skewed = decide(_analysis(3000, 0.26, shares={"control": 0.8, "treatment": 0.2}), "ctr")
    assert (skewed["status"], skewed["promote"]) == (SRM_MISMATCH, False)
    unknown = decide(_analysis(3000, 0.26, shares={}), "ctr")
    assert (unknown["status"], unknown["promote"]) == (SRM_UNCHECKED, False)
    winning = _analysis(3000, 0.26)
    p_value = winning["comparisons"]["treatment"]["ctr"]["p_value"]
    assert decide(winning, "ctr", alpha=p_value)["promote"] is False
    with pytest.raises(ValueError, match="not in the analysis"):
        decide(_analysis(3000, 0.26), "revenue_per_user")


def test_interleaving_preference_sign_test_and_first_pick_balance() -> None:
    scores = Moments.from_arrays({PREFERENCE: np.r_[np.ones(70), -np.ones(30), np.zeros(100)]})
    result = interleaving_analysis(70, 30, 100, scores, first_pick={"control": 500, "treatment": 510})
    assert result["delta_ab"] == pytest.approx((70 + 50) / 200 - 0.5)
    assert result["sign_test_p"] < 1e-3
    assert result["preference"]["difference"] == pytest.approx(0.2)
    assert result["srm"]["passed"] is True
    verdict = decide(result, "ctr")
    assert verdict["metric"] == PREFERENCE
    assert verdict["status"] in (TREATMENT_WINS, INCONCLUSIVE)
    biased = interleaving_analysis(70, 30, 100, scores, first_pick={"control": 700, "treatment": 300})
    assert decide(biased, PREFERENCE)["status"] == SRM_MISMATCH


def test_the_metrics_are_the_ones_core_names() -> None:
    assert METRIC_NAMES == REPORT_METRICS


def test_required_sample_size() -> None:
    assert required_sample_size(0.1, 1.0) == pytest.approx((1.959964 + 0.841621) ** 2 * 100, rel=1e-4)
    assert math.isinf(required_sample_size(0.0, 1.0))
