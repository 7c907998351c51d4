"""Interleaving against A/B: how many users each needs to detect the same ranker difference at the same power.

``python -m bench.interleaving_sensitivity [--users 20000] [--requests 2,8] [--treatment-noise 0.85] [--seed 0]``

Simulated shoppers (``evaluation.online_sim.simulate_rankers``) with latent tastes, heavy and light
clickers and position bias browse two rankers of known quality (control and treatment see the true
utility through different noise). Every simulated user is observed three times, independently: served
by control, by treatment, and by their team-draft interleaving — so both methods measure the same truth.

* A/B on CTR: per-user clicks / requests; effect ``δ`` = treatment mean - control mean, per-arm sd.
  Users needed (both arms) ``2 · (z_{1-α/2} + z_power)² (σ_c² + σ_t²) / δ²``.
* Interleaving: per-user preference ``s_u = (w - l) / (w + l + t)`` (0 for a user without a clicked
  request); users needed ``(z_{1-α/2} + z_power)² σ_s² / s̄²``.

Both are also given for the always-valid test the experiment report uses (the size at which its
sequential MDE reaches the effect), and checked by resampling: the share of ``--resamples`` draws of that
many users in which the fixed-horizon test rejects (should be near the power). One run per
``--requests`` value (interleaving gains with every request a user makes: each is a paired comparison,
while an A/B user's CTR stays as heterogeneous as the users are). Last line: the sensitivity ratio
(A/B users / interleaving users) measured in this run, per value.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from core.online import REPORT_DEFAULTS
from evaluation.online import fixed_p, required_sample_size, sequential_mde
from evaluation.online_sim import RankingWorld, simulate_rankers


def sequential_users(
    per_unit_var: float, effect: float, alpha: float, power: float, tuning_n: float, scale: int
) -> int:
    """Smallest total users ``N`` at which the always-valid MDE (the estimate's variance ``scale · per_unit_var / N``:
    4 for a difference of two halves, 1 for one mean) is at most ``effect``; doubling, then bisection."""
    if effect == 0:
        return 0

    def mde(total: int) -> float:
        return sequential_mde(scale * per_unit_var / total, total, alpha, tuning_n, power)

    high = 2
    while mde(high) > abs(effect):
        high *= 2
        if high > 10**12:
            return 0
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if mde(mid) <= abs(effect) else (mid, high)
    return high


def empirical_power(
    rng: np.random.Generator, samples: list[np.ndarray], sizes: list[int], alpha: float, resamples: int
) -> float:
    """Share of resamples (each sample drawn ``size`` times with replacement) where the z-test on the difference of
    means (one sample: its mean against 0) has p < alpha."""
    rejected = 0
    for _ in range(resamples):
        draws = [rng.choice(s, size=max(n, 2), replace=True) for s, n in zip(samples, sizes, strict=True)]
        if len(draws) == 1:
            estimate, variance = draws[0].mean(), draws[0].var(ddof=1) / len(draws[0])
        else:
            estimate = draws[1].mean() - draws[0].mean()
            variance = sum(d.var(ddof=1) / len(d) for d in draws)
        rejected += fixed_p(float(estimate), float(variance)) < alpha
    return rejected / resamples


def measure(args: argparse.Namespace, requests_per_user: float) -> dict[str, Any]:
    """Both methods on one simulated world (users make ``1 + Poisson(requests_per_user)`` requests)."""
    world = RankingWorld(
        control_noise=args.control_noise, treatment_noise=args.treatment_noise, requests=requests_per_user
    )
    started = time.perf_counter()
    outcome = simulate_rankers(args.seed, args.users, world)
    simulated = time.perf_counter() - started
    shown = outcome.requests.astype(float)
    ctr_c, ctr_t = outcome.control_clicks / shown, outcome.treatment_clicks / shown
    delta = float(ctr_t.mean() - ctr_c.mean())
    var_c, var_t = float(ctr_c.var(ddof=1)), float(ctr_t.var(ddof=1))
    per_arm = required_sample_size(delta, math.sqrt(var_c + var_t), args.alpha, args.power)
    preference = outcome.preference()
    s_mean, s_var = float(preference.mean()), float(preference.var(ddof=1))
    interleaving = required_sample_size(s_mean, math.sqrt(s_var), args.alpha, args.power)
    wins, losses, ties = int(outcome.wins.sum()), int(outcome.losses.sum()), int(outcome.ties.sum())
    rng = np.random.default_rng(args.seed + 1)
    ab_n, il_n = math.ceil(per_arm), math.ceil(interleaving)
    return {
        "users_simulated": args.users,
        "requests": requests_per_user,
        "seconds": simulated,
        "ab": {
            "ctr_control": float(ctr_c.mean()),
            "ctr_treatment": float(ctr_t.mean()),
            "effect": delta,
            "lift": delta / float(ctr_c.mean()),
            "sd": math.sqrt((var_c + var_t) / 2),
            "users": 2 * ab_n,
            "users_always_valid": sequential_users(
                (var_c + var_t) / 2, delta, args.alpha, args.power, REPORT_DEFAULTS.sequential_tuning_n, 4
            ),
            "power": empirical_power(rng, [ctr_c, ctr_t], [ab_n, ab_n], args.alpha, args.resamples),
        },
        "interleaving": {
            "wins": wins,
            "losses": losses,
            "ties": ties,
            "delta_ab": float((wins + ties / 2) / max(wins + losses + ties, 1) - 0.5),
            "effect": s_mean,
            "sd": math.sqrt(s_var),
            "users": il_n,
            "users_always_valid": sequential_users(
                s_var, s_mean, args.alpha, args.power, REPORT_DEFAULTS.sequential_tuning_n, 1
            ),
            "power": empirical_power(rng, [preference], [il_n], args.alpha, args.resamples),
        },
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.interleaving_sensitivity", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20_000, help="simulated users (each seen by both methods)")
    p.add_argument("--control-noise", type=float, default=1.0, help="control ranker's noise on the true utility")
    p.add_argument("--treatment-noise", type=float, default=0.85, help="treatment ranker's noise (lower = better)")
    p.add_argument(
        "--requests",
        default="2,8",
        help="comma-separated: each user makes 1 + Poisson(this) requests over the experiment; one run per value",
    )
    p.add_argument("--alpha", type=float, default=REPORT_DEFAULTS.alpha)
    p.add_argument("--power", type=float, default=REPORT_DEFAULTS.power)
    p.add_argument("--resamples", type=int, default=400, help="resamples of the empirical power check")
    p.add_argument("--seed", type=int, default=0)
    return p


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    ab, il = result["ab"], result["interleaving"]
    print(
        f"\n{result['users_simulated']:,} users x 3 (control, treatment, interleaved), 1 + Poisson({result['requests']:g}) "
        f"requests each, control noise {args.control_noise}, treatment noise {args.treatment_noise} "
        f"({result['seconds']:.1f}s)"
    )
    print(
        f"A/B CTR per user: control {ab['ctr_control']:.4f}, treatment {ab['ctr_treatment']:.4f} "
        f"(lift {100 * ab['lift']:+.1f}%); interleaving: {il['wins']:,} wins / {il['losses']:,} losses / "
        f"{il['ties']:,} ties, Δ_AB {il['delta_ab']:+.4f}"
    )
    print(f"{'method':<14}{'effect/user':>13}{'sd/user':>10}{'users':>10}{'power@users':>13}{'always-valid':>14}")
    for name, r in (("A/B on CTR", ab), ("interleaving", il)):
        print(
            f"{name:<14}{r['effect']:>13.5f}{r['sd']:>10.4f}{r['users']:>10,}{r['power']:>13.2f}"
            f"{r['users_always_valid']:>14,}"
        )
    print(
        f"sensitivity ratio (A/B users / interleaving users): {result['sensitivity_ratio']:.1f}x "
        f"(always-valid: {result['sensitivity_ratio_always_valid']:.1f}x)"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    results = []
    for requests in (float(r) for r in str(args.requests).split(",")):
        result = measure(args, requests)
        ab, il = result["ab"], result["interleaving"]
        result["sensitivity_ratio"] = ab["users"] / il["users"] if il["users"] else math.inf
        result["sensitivity_ratio_always_valid"] = (
            ab["users_always_valid"] / il["users_always_valid"] if il["users_always_valid"] else math.inf
        )
        report(args, result)
        results.append(result)
    ratios = ", ".join(f"{r['sensitivity_ratio']:.1f}x at {1 + r['requests']:g} requests/user" for r in results)
    print(f"\nsensitivity ratio (same effect, α={args.alpha}, power {args.power}): {ratios}")
    return results


if __name__ == "__main__":
    main()
