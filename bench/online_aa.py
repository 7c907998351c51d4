"""A/A experiments read every day: how often does the report ever call a difference that is not there?

``python -m bench.online_aa [--seeds 20] [--days 14] [--units-per-day 300] [--alpha 0.05] [--metric ctr]``

Each seed simulates one A/A experiment (``evaluation.online_sim.simulate_ab``: both arms identical, units
arriving daily, position bias, per-unit propensities, a pre-period) and reads it after every day with
``evaluation.online.analyse_ab``, as the daily report does. Counted per seed: significant at *some* look
with the report's always-valid p-value (mixture SPRT; it should stay near ``alpha`` × seeds or below),
the same looks with the fixed-horizon p-value (the baseline: peeking at a classical test, which inflates
false positives), the fixed-horizon test read once at the end (nominal ``alpha``), and SRM failures.
The same A/A setting as ``tests/evaluation/test_online_honesty.py``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from evaluation.online import analyse_ab
from evaluation.online_sim import moments_by_day, simulate_ab

SHARES = {"control": 0.5, "treatment": 0.5}


def aa_false_positives(
    seeds: int = 20, days: int = 14, units_per_day: int = 300, alpha: float = 0.05, metric: str = "ctr"
) -> dict[str, Any]:
    """Counts over ``seeds`` A/A experiments read after each of ``days`` days (see the module docstring)."""
    ever_valid = ever_fixed = final_fixed = srm_failed = 0
    for seed in range(seeds):
        looks = [
            analyse_ab(day, SHARES)
            for day in moments_by_day(simulate_ab(seed, days=days, new_units_per_day=units_per_day))
        ]
        comparisons = [look["comparisons"]["treatment"][metric] for look in looks]
        ever_valid += any(c["p_value"] is not None and c["p_value"] < alpha for c in comparisons)
        ever_fixed += any(
            c["p_value_fixed_horizon"] is not None and c["p_value_fixed_horizon"] < alpha for c in comparisons
        )
        final = comparisons[-1]["p_value_fixed_horizon"]
        final_fixed += final is not None and final < alpha
        srm_failed += not looks[-1]["srm"]["passed"]
    return {
        "seeds": seeds,
        "days": days,
        "units_per_day": units_per_day,
        "alpha": alpha,
        "metric": metric,
        "ever_significant_always_valid": ever_valid,
        "ever_significant_fixed_horizon_peeking": ever_fixed,
        "significant_fixed_horizon_final_look": final_fixed,
        "srm_failed": srm_failed,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.online_aa", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--units-per-day", type=int, default=300)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--metric", default="ctr")
    args = p.parse_args(argv)
    result = aa_false_positives(args.seeds, args.days, args.units_per_day, args.alpha, args.metric)
    n = result["seeds"]
    print(f"A/A experiments ({n} seeds, {result['days']} daily looks, {result['units_per_day']} new units a day, "
          f"alpha = {result['alpha']}, metric {result['metric']}):")  # fmt: skip
    print(f"  significant at some look, always-valid p (the report):   {result['ever_significant_always_valid']}/{n}")
    print(
        f"  significant at some look, fixed-horizon p (peeking):     {result['ever_significant_fixed_horizon_peeking']}/{n}"
    )
    print(
        f"  significant at the last look only, fixed-horizon p:      {result['significant_fixed_horizon_final_look']}/{n}"
    )
    print(f"  SRM check failed at the last look:                       {result['srm_failed']}/{n}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
