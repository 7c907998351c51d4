"""Online experiment statistics: pure functions over per-arm moments (numpy/scipy only, no Spark).

The report is read every day, so every interval and p-value here is *always valid*: it holds
simultaneously at every look, however often and whenever the experiment is read or stopped.

Conventions:

* The unit is the experiment unit (a user, else a session). An arm is summarised by
  :class:`Moments` of per-unit columns: ``n``, ``Σ x_j`` and ``Σ x_j x_k``; that is all any estimator
  here needs, so the Spark job aggregates per arm and only a few numbers reach the driver.
* A metric (:class:`MetricSpec`) is a per-unit mean ``Ȳ`` or a ratio of sums ``ΣY / ΣD`` (delta
  method: influence ``f_i = (Y_i - R·D_i) / D̄``, ``Var(R̂) ≈ Var(f) / n``).
* CUPED (Deng et al. 2013): with a pre-experiment covariate ``X`` of each unit,
  ``Ŷ_cuped = Ŷ - θ (X̄_arm - X̄_all)``, ``θ = Σ_arms Cov(f, X)(n_a - 1) / Σ_arms Var(X)(n_a - 1)``,
  ``Var = (Var(f) - 2θ Cov(f, X) + θ² Var(X)) / n``; the reduction is ``1 - Var_cuped / Var_raw``.
* Sequential inference: the normal-mixture confidence sequence / mixture SPRT (Robbins 1970;
  Johari et al. 2017 "Always valid inference"; Howard et al. 2021 "Time-uniform, nonparametric,
  nonasymptotic confidence sequences", eq. 14 and the asymptotic form of Waudby-Smith et al. 2023, as
  GrowthBook, Eppo and Statsig ship it). For an estimate ``Δ̂`` with variance ``V`` from ``n`` units and
  mixing parameter ``ρ² = (-2 ln α + ln(1 - 2 ln α)) / n*`` (tightest at ``n*`` units)::

      half-width(α) = sqrt( V · (1 + nρ²)/(nρ²) · (2 ln(1/α) + ln(1 + nρ²)) )
      p             = min(1, sqrt(1 + nρ²) · exp(-(Δ̂²/V) · nρ² / (2 (1 + nρ²))))

  ``p`` is the smallest α whose interval excludes 0, and ``P(∃ n: p_n ≤ α) ≤ α`` under the null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats

from core.experiments import CONTROL
from core.online import (
    ADD_TO_CARTS,
    CLICKS,
    EXPOSURES,
    PRE_ADD_TO_CARTS,
    PRE_CLICKS,
    PRE_PURCHASER,
    PRE_REVENUE,
    PREFERENCE,
    PURCHASER,
    REPORT_DEFAULTS,
    REVENUE,
    USER_CTR,
)

_NORMAL = NormalDist()

TREATMENT_WINS = "treatment_wins"
CONTROL_WINS = "control_wins"
INCONCLUSIVE = "inconclusive"
SRM_MISMATCH = "srm_mismatch"
SRM_UNCHECKED = "srm_unchecked"


# ---- moments --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of per-unit columns in one arm: ``n``, ``sums[j] = Σ x_j``, ``cross[j, k] = Σ x_j x_k``."""

    columns: tuple[str, ...]
    n: int
    sums: np.ndarray
    cross: np.ndarray

    @classmethod
    def from_arrays(cls, data: Mapping[str, Sequence[float] | np.ndarray]) -> Moments:
        """Moments of equally long per-unit arrays (one per column)."""
        columns = tuple(data)
        matrix = np.column_stack([np.asarray(data[c], dtype=np.float64) for c in columns]) if columns else None
        if matrix is None or matrix.size == 0:
            p = len(columns)
            return cls(columns, 0, np.zeros(p), np.zeros((p, p)))
        return cls(columns, int(matrix.shape[0]), matrix.sum(axis=0), matrix.T @ matrix)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Moments:
        """The JSON form written by the Spark report job: ``{"columns", "n", "sums", "cross"}``."""
        columns = tuple(raw["columns"])
        sums = np.asarray(raw["sums"], dtype=np.float64).reshape(len(columns))
        cross = np.asarray(raw["cross"], dtype=np.float64).reshape(len(columns), len(columns))
        return cls(columns, int(raw["n"]), sums, cross)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "n": self.n, "sums": self.sums.tolist(), "cross": self.cross.tolist()}

    def _index(self, column: str) -> int:
        try:
            return self.columns.index(column)
        except ValueError:
            raise KeyError(f"column {column!r} is not among the moments' columns {list(self.columns)}") from None

    def total(self, column: str) -> float:
        return float(self.sums[self._index(column)])

    def mean(self, column: str) -> float:
        return self.total(column) / self.n if self.n else math.nan

    def cov(self, a: str, b: str) -> float:
        """Sample covariance ``(Σ ab - Σa Σb / n) / (n - 1)`` (NaN below two units)."""
        if self.n < 2:
            return math.nan
        i, j = self._index(a), self._index(b)
        return float((self.cross[i, j] - self.sums[i] * self.sums[j] / self.n) / (self.n - 1))

    def var(self, column: str) -> float:
        return max(self.cov(column, column), 0.0) if self.n >= 2 else math.nan


# ---- metrics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    """A metric: ``numerator`` per unit (mean) or ``Σ numerator / Σ denominator`` (ratio), with a CUPED covariate."""

    name: str
    numerator: str
    denominator: str | None = None
    covariate: str | None = None
    description: str = ""


#: The report's metrics. Exposures = recommendation responses shown; clicks, carts and purchases are
#: the events attributed to them; the covariates are each unit's behaviour before the experiment.
DEFAULT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("ctr", CLICKS, EXPOSURES, PRE_CLICKS, "attributed clicks / exposures"),
    MetricSpec("ctr_per_user", USER_CTR, None, PRE_CLICKS, "mean over units of (clicks / exposures)"),
    MetricSpec("add_to_cart_rate", ADD_TO_CARTS, EXPOSURES, PRE_ADD_TO_CARTS, "attributed add-to-carts / exposures"),
    MetricSpec("conversion", PURCHASER, None, PRE_PURCHASER, "units with an attributed purchase / units"),
    MetricSpec("revenue_per_user", REVENUE, None, PRE_REVENUE, "attributed revenue / units"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in DEFAULT_METRICS)


def metric_spec(name: str, metrics: Sequence[MetricSpec] = DEFAULT_METRICS) -> MetricSpec:
    for spec in metrics:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown metric {name!r}: choose one of {[m.name for m in metrics]}")


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's estimate of a metric: ``value``, the per-unit influence variance and its covariance with the covariate."""

    n: int
    value: float
    influence_var: float
    covariate_mean: float = 0.0
    covariate_var: float = 0.0
    covariate_cov: float = 0.0

    @property
    def variance(self) -> float:
        """``Var(value) = Var(f) / n`` (no CUPED)."""
        return self.influence_var / self.n if self.n else math.nan


def arm_estimate(m: Moments, spec: MetricSpec) -> ArmEstimate:
    """Mean: ``Ȳ``, ``Var(f) = Var(Y)``. Ratio: ``R = ΣY/ΣD``, ``f = (Y - R D)/D̄`` (delta method):
    ``Var(f) = (Var Y - 2R Cov(Y,D) + R² Var D) / D̄²``, ``Cov(f, X) = (Cov(Y,X) - R Cov(D,X)) / D̄``."""
    if m.n < 2:
        return ArmEstimate(m.n, m.mean(spec.numerator) if m.n else math.nan, math.nan)
    y = spec.numerator
    x = spec.covariate
    if spec.denominator is None:
        value = m.mean(y)
        influence = m.var(y)
        cov_x = m.cov(y, x) if x else 0.0
    else:
        d = spec.denominator
        d_mean = m.mean(d)
        if d_mean <= 0:
            return ArmEstimate(m.n, math.nan, math.nan)
        value = m.total(y) / m.total(d)
        influence = max(m.var(y) - 2 * value * m.cov(y, d) + value**2 * m.var(d), 0.0) / d_mean**2
        cov_x = (m.cov(y, x) - value * m.cov(d, x)) / d_mean if x else 0.0
    if x is None:
        return ArmEstimate(m.n, value, influence)
    return ArmEstimate(m.n, value, influence, m.mean(x), m.var(x), cov_x)


def cuped_theta(arms: Sequence[ArmEstimate]) -> float:
    """``θ = Σ (n_a - 1) Cov_a(f, X) / Σ (n_a - 1) Var_a(X)`` (pooled within arms; 0 without covariate variance)."""
    num = sum((a.n - 1) * a.covariate_cov for a in arms if a.n >= 2 and math.isfinite(a.covariate_cov))
    den = sum((a.n - 1) * a.covariate_var for a in arms if a.n >= 2 and math.isfinite(a.covariate_var))
    return num / den if den > 0 else 0.0


def cuped_adjust(arm: ArmEstimate, theta: float, pooled_covariate_mean: float) -> tuple[float, float]:
    """``(Ŷ - θ (X̄_arm - X̄_all), (Var f - 2θ Cov(f,X) + θ² Var X) / n)``."""
    value = arm.value - theta * (arm.covariate_mean - pooled_covariate_mean)
    var = (arm.influence_var - 2 * theta * arm.covariate_cov + theta**2 * arm.covariate_var) / arm.n
    return value, max(var, 0.0)


# ---- sequential inference ---------------------------------------------------------------------------
def mixture_rho2(alpha: float, tuning_n: float) -> float:
    """``ρ² = (-2 ln α + ln(1 - 2 ln α)) / n*``: the normal mixture whose confidence sequence is tightest at ``n*``."""
    _check_alpha(alpha)
    if tuning_n <= 0:
        raise ValueError(f"tuning_n must be > 0, got {tuning_n}")
    log_a = math.log(alpha)
    return (-2 * log_a + math.log(1 - 2 * log_a)) / tuning_n


def cs_halfwidth(variance: float, n: int, alpha: float, tuning_n: float) -> float:
    """Half-width of the (1 - α) always-valid interval: ``sqrt(V (1+nρ²)/(nρ²) (2 ln(1/α) + ln(1+nρ²)))``."""
    if not (n > 0 and math.isfinite(variance) and variance >= 0):
        return math.nan
    rho2 = mixture_rho2(alpha, tuning_n)
    s = n * rho2
    return math.sqrt(variance * (1 + s) / s * (2 * math.log(1 / alpha) + math.log1p(s)))


def always_valid_p(estimate: float, variance: float, n: int, tuning_n: float, alpha: float = 0.05) -> float:
    """``min(1, sqrt(1+nρ²) exp(-(Δ̂²/V) nρ² / (2(1+nρ²))))`` — the mixture SPRT's p-value (1 / likelihood ratio).

    ``ρ²`` is tuned with ``alpha`` (:func:`mixture_rho2`), so ``p < alpha`` exactly when the
    ``(1 - alpha)`` interval of :func:`cs_halfwidth` excludes 0. A zero variance gives 1 for a zero
    estimate and 0 otherwise; a NaN input gives NaN.
    """
    if not (n > 0 and math.isfinite(estimate) and math.isfinite(variance)):
        return math.nan
    if variance <= 0:
        return 1.0 if estimate == 0 else 0.0
    s = n * mixture_rho2(alpha, tuning_n)
    log_p = 0.5 * math.log1p(s) - (estimate**2 / variance) * s / (2 * (1 + s))
    return min(1.0, math.exp(log_p))


def fixed_p(estimate: float, variance: float) -> float:
    """Two-sided fixed-horizon z-test ``2 (1 - Φ(|Δ̂| / sqrt V))`` — valid only for one look at a planned size."""
    if not (math.isfinite(estimate) and math.isfinite(variance)):
        return math.nan
    if variance <= 0:
        return 1.0 if estimate == 0 else 0.0
    return 2 * (1 - _NORMAL.cdf(abs(estimate) / math.sqrt(variance)))


def sequential_mde(variance: float, n: int, alpha: float, tuning_n: float, power: float) -> float:
    """Smallest true effect the always-valid interval excludes 0 for with probability ``power`` now:
    ``half-width(α) + z_power · sqrt V``."""
    return cs_halfwidth(variance, n, alpha, tuning_n) + _NORMAL.inv_cdf(power) * math.sqrt(variance)


def required_sample_size(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Fixed-horizon units for a two-sided z-test on a per-unit statistic with mean ``effect`` and sd ``sd``:
    ``n = ((z_{1-α/2} + z_power) · sd / effect)²`` (a two-sample test: pass the sd of the difference per unit pair)."""
    if effect == 0:
        return math.inf
    return ((_NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)) * sd / effect) ** 2


# ---- sample-ratio mismatch --------------------------------------------------------------------------
def srm_check(counts: Mapping[str, int], shares: Mapping[str, float] | None, alpha: float) -> dict[str, Any]:
    """Chi-square goodness of fit of units per variant against the configured shares: ``Σ (O - E)² / E``,
    ``E = N · share``, ``df = arms - 1``; a mismatch when ``p < alpha``. Unknown shares: not checked."""
    if not shares:
        return {"checked": False, "passed": False, "reason": "the configured shares are unknown"}
    variants = list(shares)
    missing = sorted(set(counts) - set(variants))
    observed = np.array([float(counts.get(v, 0)) for v in variants])
    total = float(observed.sum()) + sum(float(counts[v]) for v in missing)
    if missing:
        return {
            "checked": True,
            "passed": False,
            "reason": f"units in variant(s) {missing} that the experiment does not have",
            "observed": dict(counts),
        }
    if total == 0:
        return {"checked": False, "passed": False, "reason": "no units yet"}
    share = np.array([float(shares[v]) for v in variants])
    expected = total * share / share.sum()
    chi2, p = stats.chisquare(observed, expected)
    passed = bool(p >= alpha)
    return {
        "checked": True,
        "passed": passed,
        "chi2": float(chi2),
        "df": len(variants) - 1,
        "p_value": float(p),
        "alpha": alpha,
        "observed": {v: int(o) for v, o in zip(variants, observed, strict=True)},
        "expected": {v: float(e) for v, e in zip(variants, expected, strict=True)},
        "reason": "units per variant match the shares" if passed else f"sample-ratio mismatch: p = {p:.3g} < {alpha}",
    }


# ---- A/B analysis ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisOptions:
    alpha: float = REPORT_DEFAULTS.alpha
    srm_alpha: float = REPORT_DEFAULTS.srm_alpha
    tuning_n: float = REPORT_DEFAULTS.sequential_tuning_n
    power: float = REPORT_DEFAULTS.power
    cuped: bool = True
    metrics: tuple[MetricSpec, ...] = field(default=DEFAULT_METRICS)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _interval(value: float, halfwidth: float) -> list[float | None]:
    if not (math.isfinite(value) and math.isfinite(halfwidth)):
        return [None, None]
    return [value - halfwidth, value + halfwidth]


def compare_metric(
    control: ArmEstimate, treatment: ArmEstimate, theta: float, pooled_mean: float, options: AnalysisOptions
) -> dict[str, Any]:
    """Treatment minus control on one metric: difference and relative lift with always-valid intervals, the
    always-valid and fixed-horizon p-values, the sequential MDE and the variance CUPED removed.

    Relative lift ``L = Δ / c`` (``c``, ``t`` the adjusted means) with ``Var L ≈ V_t / c² + t² V_c / c⁴``.
    ``p_value`` tests the lift (so it is below α exactly when the lift's interval excludes 0; it also counts
    the control mean's own uncertainty); ``p_value_difference`` tests ``Δ``; both are always valid and
    agree under the null. Without a lift (a zero control mean) ``p_value`` is the difference's.
    """
    alpha, tuning_n = options.alpha, options.tuning_n
    n = control.n + treatment.n
    c, vc = cuped_adjust(control, theta, pooled_mean)
    t, vt = cuped_adjust(treatment, theta, pooled_mean)
    raw_var = control.variance + treatment.variance
    diff, var = t - c, vc + vt
    hw = cs_halfwidth(var, n, alpha, tuning_n)
    out: dict[str, Any] = {
        "difference": _finite(diff),
        "difference_ci": _interval(diff, hw),
        "p_value": _finite(always_valid_p(diff, var, n, tuning_n, alpha)),
        "p_value_difference": _finite(always_valid_p(diff, var, n, tuning_n, alpha)),
        "p_value_fixed_horizon": _finite(fixed_p(diff, var)),
        "variance_reduction": _finite(1 - var / raw_var) if raw_var > 0 else 0.0,
        "cuped_theta": _finite(theta),
        "mde": _finite(sequential_mde(var, n, alpha, tuning_n, options.power)),
    }
    if math.isfinite(c) and c != 0:
        lift = diff / c
        lift_var = vt / c**2 + t**2 * vc / c**4
        out["lift"] = _finite(lift)
        out["lift_ci"] = _interval(lift, cs_halfwidth(lift_var, n, alpha, tuning_n))
        out["p_value"] = _finite(always_valid_p(lift, lift_var, n, tuning_n, alpha))
        out["mde_relative"] = _finite(out["mde"] / abs(c)) if out["mde"] is not None else None
    else:
        out.update({"lift": None, "lift_ci": [None, None], "mde_relative": None})
    p = out["p_value"]
    out["significant"] = bool(p is not None and p < alpha)
    return out


def analyse_ab(
    arms: Mapping[str, Moments],
    shares: Mapping[str, float] | None,
    options: AnalysisOptions | None = None,
    control: str = CONTROL,
) -> dict[str, Any]:
    """Every metric per variant (value, always-valid interval) and each treatment against ``control``
    (:func:`compare_metric`), the SRM check of units against ``shares``. JSON-safe."""
    options = options or AnalysisOptions()
    if control not in arms:
        raise ValueError(f"no {control!r} arm among {sorted(arms)}: the report compares treatments with the control")
    treatments = [v for v in arms if v != control]
    variants: dict[str, Any] = {v: {"units": arms[v].n, "metrics": {}} for v in arms}
    comparisons: dict[str, Any] = {v: {} for v in treatments}
    for spec in options.metrics:
        estimates = {v: arm_estimate(arms[v], spec) for v in arms}
        for v, est in estimates.items():
            hw = cs_halfwidth(est.variance, est.n, options.alpha, options.tuning_n)
            variants[v]["metrics"][spec.name] = {"value": _finite(est.value), "ci": _interval(est.value, hw)}
        usable = [e for e in estimates.values() if e.n >= 2 and math.isfinite(e.influence_var)]
        theta = cuped_theta(usable) if options.cuped and spec.covariate else 0.0
        total_n = sum(e.n for e in usable)
        pooled = sum(e.covariate_mean * e.n for e in usable) / total_n if total_n else 0.0
        for v in treatments:
            c, t = estimates[control], estimates[v]
            if c.n < 2 or t.n < 2 or not (math.isfinite(c.influence_var) and math.isfinite(t.influence_var)):
                comparisons[v][spec.name] = {"significant": False, "note": "fewer than two units with data in an arm"}
                continue
            comparisons[v][spec.name] = compare_metric(c, t, theta, pooled, options)
    return {
        "kind": "ab",
        "control": control,
        "alpha": options.alpha,
        "confidence": 1 - options.alpha,
        "inference": "always-valid (mixture SPRT / normal-mixture confidence sequence), CUPED"
        if options.cuped
        else "always-valid (mixture SPRT / normal-mixture confidence sequence)",
        "sequential_tuning_n": options.tuning_n,
        "power": options.power,
        "metrics": {m.name: m.description for m in options.metrics},
        "variants": variants,
        "comparisons": comparisons,
        "srm": srm_check({v: arms[v].n for v in arms}, shares, options.srm_alpha),
    }


def decide(analysis: Mapping[str, Any], primary: str, alpha: float | None = None) -> dict[str, Any]:
    """The experiment's verdict on the ``primary`` metric.

    A treatment wins when its always-valid p-value is below ``alpha / (number of treatments)``
    (Bonferroni) with a positive difference, *and* the SRM check ran and passed; the best winner (largest
    lift) is named. ``promote`` is true only then. Control wins when every treatment is significantly
    worse. Interleaving analyses decide on the preference test the same way.
    """
    alpha = float(alpha if alpha is not None else analysis["alpha"])
    srm = analysis.get("srm") or {}
    base = {"metric": primary, "alpha": alpha, "winner": None, "promote": False}
    if analysis.get("kind") == "interleaving":
        primary = PREFERENCE
        base["metric"] = primary
        comparisons = {analysis["treatment"]: {primary: analysis["preference"]}} if analysis.get("preference") else {}
    else:
        comparisons = analysis.get("comparisons") or {}
    if not comparisons:
        return {**base, "status": INCONCLUSIVE, "reason": "no treatment to compare"}
    if not srm.get("checked"):
        return {**base, "status": SRM_UNCHECKED, "reason": f"SRM not checked ({srm.get('reason')}): nothing promoted"}
    if not srm.get("passed"):
        return {
            **base,
            "status": SRM_MISMATCH,
            "reason": f"{srm.get('reason')}: the data are suspect, nothing promoted",
        }
    level = alpha / len(comparisons)
    winners, losers = {}, []
    for variant, metrics in comparisons.items():
        result = metrics.get(primary)
        if result is None:
            raise ValueError(f"metric {primary!r} is not in the analysis; it has {sorted(metrics)}")
        p, diff = result.get("p_value"), result.get("difference")
        if p is None or diff is None or p >= level:
            continue
        if diff > 0:
            winners[variant] = result.get("lift") if result.get("lift") is not None else diff
        elif diff < 0:
            losers.append(variant)
    if winners:
        best = max(winners, key=lambda v: winners[v])
        res = comparisons[best][primary]
        return {
            **base,
            "status": TREATMENT_WINS,
            "winner": best,
            "promote": True,
            "reason": f"{best} beats control on {primary}: always-valid p = {res['p_value']:.3g} < {level:.3g}, "
            f"lift {_pct(res.get('lift'))}; SRM check passed",
        }
    if len(losers) == len(comparisons):
        return {
            **base,
            "status": CONTROL_WINS,
            "winner": CONTROL,
            "reason": f"every treatment is significantly worse than control on {primary} (p < {level:.3g})",
        }
    return {
        **base,
        "status": INCONCLUSIVE,
        "reason": f"no treatment differs from control on {primary} at always-valid p < {level:.3g} yet",
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f}%"


# ---- interleaving ----------------------------------------------------------------------------------
def interleaving_analysis(
    wins: int,
    losses: int,
    ties: int,
    units: Moments | None,
    options: AnalysisOptions | None = None,
    control: str = CONTROL,
    treatment: str = "treatment",
    first_pick: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Team-draft interleaving: per request with a click, a win for the treatment when its team's items got
    more clicks than the control's, a loss when fewer, else a tie.

    * preference ``Δ_AB = (wins + ties/2) / (wins + losses + ties) - 1/2`` (Chapelle et al. 2012), in [-1/2, 1/2];
    * sign test: two-sided exact binomial test of wins against losses (fixed horizon, requests independent);
    * always-valid test on the per-unit mean preference ``s_u = (w_u - l_u) / (w_u + l_u + t_u)`` (units are
      independent where a user's requests are not): ``p`` and interval as for an A/B difference;
    * integrity (the interleaving's "SRM"): which team took the first slot is a fair coin per request; a
      chi-square against 50/50 on ``first_pick`` counts.
    """
    options = options or AnalysisOptions()
    decided = wins + losses + ties
    out: dict[str, Any] = {
        "kind": "interleaving",
        "control": control,
        "treatment": treatment,
        "alpha": options.alpha,
        "confidence": 1 - options.alpha,
        "wins": int(wins),
        "losses": int(losses),
        "ties": int(ties),
        "delta_ab": _finite((wins + ties / 2) / decided - 0.5) if decided else None,
        "sign_test_p": float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None,
    }
    if units is not None and units.n >= 2:
        mean, var = units.mean(PREFERENCE), units.var(PREFERENCE) / units.n
        hw = cs_halfwidth(var, units.n, options.alpha, options.tuning_n)
        p = always_valid_p(mean, var, units.n, options.tuning_n, options.alpha)
        out["preference"] = {
            "units": units.n,
            "difference": _finite(mean),
            "difference_ci": _interval(mean, hw),
            "p_value": _finite(p),
            "p_value_fixed_horizon": _finite(fixed_p(mean, var)),
            "mde": _finite(sequential_mde(var, units.n, options.alpha, options.tuning_n, options.power)),
            "lift": None,
            "significant": bool(math.isfinite(p) and p < options.alpha),
        }
    else:
        out["preference"] = None
    picks = dict(first_pick or {})
    out["srm"] = (
        srm_check(picks, {control: 0.5, treatment: 0.5}, options.srm_alpha)
        if picks
        else {"checked": False, "passed": False, "reason": "no first-pick counts"}
    )
    return out


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be within (0, 1), got {alpha}")
