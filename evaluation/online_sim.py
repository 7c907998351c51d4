"""Simulated shoppers with a known truth, to measure the online statistics (``evaluation.online``).

Two worlds, both seeded and vectorised with numpy:

* :func:`simulate_ab` — an A/B experiment read every day: units arrive over ``days``, come back, and
  are shown ``k`` items per request; each unit has its own click propensity (Beta), add-to-cart
  propensity and basket value, and examines position ``j`` with probability ``1 / j^decay`` (position
  bias). A treatment multiplies the click probability by ``1 + effect``. Each unit's pre-experiment
  behaviour (the CUPED covariate) comes from the same propensities (or independent ones, to show that
  CUPED then removes nothing). Returns, after each day, the cumulative per-unit columns of the report
  job (``core.online.UNIT_METRIC_COLUMNS``) per variant.
* :func:`simulate_rankers` — two rankers of known quality over latent user/item tastes; the same users
  are served by control, by treatment and by their team-draft interleaving, so A/B and interleaving
  can be compared on the same known difference.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.experiments import CONTROL, team_draft
from core.online import (
    ADD_TO_CARTS,
    CLICKS,
    EXPOSURES,
    PRE_ADD_TO_CARTS,
    PRE_CLICKS,
    PRE_PURCHASER,
    PRE_REVENUE,
    PURCHASER,
    PURCHASES,
    REVENUE,
    UNIT_METRIC_COLUMNS,
    USER_CTR,
)
from evaluation.online import Moments

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Shoppers:
    """How simulated units behave (every probability per shown item, request or click)."""

    k: int = 10
    #: P(examine position j) = 1 / j^examination_decay.
    examination_decay: float = 1.0
    #: Per-unit click propensity of an examined item ~ Beta(click_a, click_b).
    click_a: float = 0.6
    click_b: float = 6.0
    #: Requests on the first visit: 1 + Poisson(first_requests); a unit comes back on a later day with
    #: probability return_prob and then makes Poisson(return_requests) requests.
    first_requests: float = 1.0
    return_prob: float = 0.3
    return_requests: float = 2.0
    #: Per-unit add-to-cart propensity of a click ~ Beta(cart_a, cart_b); a cart is bought with purchase_prob.
    cart_a: float = 2.0
    cart_b: float = 6.0
    purchase_prob: float = 0.35
    #: Basket value per purchase ~ LogNormal(price_log_mean, price_log_sd), one per unit.
    price_log_mean: float = 3.0
    price_log_sd: float = 0.7
    #: Requests in the pre-experiment period ~ Poisson(pre_requests).
    pre_requests: float = 6.0
    #: False: the pre-period comes from independent propensities (CUPED can remove nothing).
    pre_correlated: bool = True


def _clicks(rng: np.random.Generator, requests: np.ndarray, p: np.ndarray, examine: np.ndarray) -> np.ndarray:
    out = np.zeros(len(requests), dtype=np.int64)
    for ex in examine:
        out += rng.binomial(requests, np.clip(p * ex, 0.0, 1.0))
    return out


def simulate_ab(
    seed: int,
    *,
    days: int = 14,
    new_units_per_day: int = 400,
    served_shares: Mapping[str, float] | None = None,
    effects: Mapping[str, float] | None = None,
    shoppers: Shoppers | None = None,
) -> list[dict[str, Arrays]]:
    """After each of ``days`` days: ``{variant: {column: per-unit array}}`` over the units exposed so far.

    ``served_shares`` is how traffic was really split (control first; default 50/50);
    ``effects[variant]`` the true relative change of that variant's click probability.
    """
    s = shoppers or Shoppers()
    shares = dict(served_shares or {CONTROL: 0.5, "treatment": 0.5})
    effects = dict(effects or {})
    rng = np.random.default_rng(seed)
    n = days * new_units_per_day
    names = list(shares)
    arm = rng.choice(len(names), size=n, p=np.array(list(shares.values())) / sum(shares.values()))
    arrival = np.repeat(np.arange(days), new_units_per_day)
    click_p = rng.beta(s.click_a, s.click_b, n)
    cart_p = rng.beta(s.cart_a, s.cart_b, n)
    price = rng.lognormal(s.price_log_mean, s.price_log_sd, n)
    multiplier = np.array([1.0 + effects.get(name, 0.0) for name in names])[arm]
    examine = 1.0 / np.arange(1, s.k + 1) ** s.examination_decay

    pre_click_p = click_p if s.pre_correlated else rng.beta(s.click_a, s.click_b, n)
    pre_cart_p = cart_p if s.pre_correlated else rng.beta(s.cart_a, s.cart_b, n)
    pre_price = price if s.pre_correlated else rng.lognormal(s.price_log_mean, s.price_log_sd, n)
    pre_clicks = _clicks(rng, rng.poisson(s.pre_requests, n), pre_click_p, examine)
    pre_carts = rng.binomial(pre_clicks, pre_cart_p)
    pre_purchases = rng.binomial(pre_carts, s.purchase_prob)
    pre = {
        PRE_CLICKS: pre_clicks.astype(np.float64),
        PRE_ADD_TO_CARTS: pre_carts.astype(np.float64),
        PRE_PURCHASER: (pre_purchases > 0).astype(np.float64),
        PRE_REVENUE: pre_purchases * pre_price,
    }

    totals = {c: np.zeros(n) for c in (EXPOSURES, CLICKS, ADD_TO_CARTS, PURCHASES, REVENUE)}
    out: list[dict[str, Arrays]] = []
    for day in range(days):
        first = arrival == day
        back = (arrival < day) & (rng.random(n) < s.return_prob)
        requests = np.where(first, 1 + rng.poisson(s.first_requests, n), 0)
        requests = requests + np.where(back, rng.poisson(s.return_requests, n), 0)
        clicks = _clicks(rng, requests, click_p * multiplier, examine)
        carts = rng.binomial(clicks, cart_p)
        purchases = rng.binomial(carts, s.purchase_prob)
        totals[EXPOSURES] += requests
        totals[CLICKS] += clicks
        totals[ADD_TO_CARTS] += carts
        totals[PURCHASES] += purchases
        totals[REVENUE] += purchases * price
        exposed = totals[EXPOSURES] > 0
        snapshot: dict[str, Arrays] = {}
        for index, name in enumerate(names):
            mask = exposed & (arm == index)
            cols = {c: totals[c][mask].copy() for c in totals}
            cols[PURCHASER] = (cols[PURCHASES] > 0).astype(np.float64)
            cols[USER_CTR] = cols[CLICKS] / cols[EXPOSURES]
            cols.update({c: v[mask] for c, v in pre.items()})
            snapshot[name] = {c: cols[c] for c in UNIT_METRIC_COLUMNS}
        out.append(snapshot)
    return out


def moments_by_day(days: list[dict[str, Arrays]]) -> list[dict[str, Moments]]:
    """Per day, each variant's :class:`Moments` (what the Spark report job computes from the lake)."""
    return [{variant: Moments.from_arrays(cols) for variant, cols in day.items()} for day in days]


# ---- rankers: A/B against interleaving -------------------------------------------------------------
@dataclass(frozen=True)
class RankingWorld:
    """Users and items with latent tastes; two rankers that see the true utility through noise of their own."""

    n_items: int = 300
    dim: int = 8
    k: int = 10
    #: Each ranker scores utility + N(0, noise²) per (user, item): less noise is a better model.
    control_noise: float = 1.0
    treatment_noise: float = 0.85
    #: P(click | examined) = activity_u · sigmoid(relevance_scale · utility + relevance_bias).
    relevance_scale: float = 1.5
    relevance_bias: float = -6.0
    #: Per-user activity ~ Gamma(activity_shape, 1/activity_shape) (mean 1, CV 1/sqrt(shape)): heavy and light clickers.
    activity_shape: float = 0.5
    examination_decay: float = 1.0
    #: Requests per user: 1 + Poisson(requests).
    requests: float = 2.0


@dataclass
class RankerOutcome:
    """Per user: requests and clicks under control, under treatment, and the interleaved outcome."""

    requests: np.ndarray
    control_clicks: np.ndarray
    treatment_clicks: np.ndarray
    wins: np.ndarray
    losses: np.ndarray
    ties: np.ndarray
    #: Requests whose first slot the control's team took / the treatment's team took.
    first_pick: dict[str, int]

    def preference(self) -> np.ndarray:
        """``s_u = (w_u - l_u) / (w_u + l_u + t_u)`` over the user's requests with a click (0 for a user without one)."""
        decided = self.wins + self.losses + self.ties
        return np.where(decided > 0, (self.wins - self.losses) / np.maximum(decided, 1), 0.0)


def simulate_rankers(seed: int, n_users: int, world: RankingWorld | None = None) -> RankerOutcome:
    """Each user browses three times as often as it would in one arm: as a control user, as a treatment user
    and as an interleaving user (independent clicks, the same tastes), so both methods see the same truth."""
    w = world or RankingWorld()
    rng = np.random.default_rng(seed)
    coin = random.Random(seed)
    items = rng.normal(size=(w.n_items, w.dim))
    item_bias = rng.normal(scale=0.5, size=w.n_items)
    examine = 1.0 / np.arange(1, w.k + 1) ** w.examination_decay
    out = RankerOutcome(
        requests=1 + rng.poisson(w.requests, n_users),
        control_clicks=np.zeros(n_users, dtype=np.int64),
        treatment_clicks=np.zeros(n_users, dtype=np.int64),
        wins=np.zeros(n_users, dtype=np.int64),
        losses=np.zeros(n_users, dtype=np.int64),
        ties=np.zeros(n_users, dtype=np.int64),
        first_pick={CONTROL: 0, "treatment": 0},
    )
    activity = rng.gamma(w.activity_shape, 1.0 / w.activity_shape, n_users)
    for u in range(n_users):
        utility = items @ rng.normal(size=w.dim) / np.sqrt(w.dim) + item_bias
        p_click = np.clip(activity[u] / (1 + np.exp(-(w.relevance_scale * utility + w.relevance_bias))), 0, 1)
        control = np.argsort(-(utility + rng.normal(scale=w.control_noise, size=w.n_items)))[: w.k]
        treatment = np.argsort(-(utility + rng.normal(scale=w.treatment_noise, size=w.n_items)))[: w.k]
        r = int(out.requests[u])
        out.control_clicks[u] = int((rng.random((r, w.k)) < p_click[control] * examine).sum())
        out.treatment_clicks[u] = int((rng.random((r, w.k)) < p_click[treatment] * examine).sum())
        for _ in range(r):
            merged = team_draft(control.tolist(), treatment.tolist(), w.k, coin)
            shown = np.array([item for item, _ in merged])
            teams = np.array([team for _, team in merged])
            out.first_pick[CONTROL if teams[0] == 0 else "treatment"] += 1
            clicked = rng.random(len(shown)) < p_click[shown] * examine[: len(shown)]
            for_control = int((clicked & (teams == 0)).sum())
            for_treatment = int((clicked & (teams == 1)).sum())
            if for_control + for_treatment == 0:
                continue
            if for_treatment > for_control:
                out.wins[u] += 1
            elif for_treatment < for_control:
                out.losses[u] += 1
            else:
                out.ties[u] += 1
    return out
