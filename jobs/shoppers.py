"""Simulated shoppers who browse the simulated shop through the real scoring API and click what they like.

The shop is ``jobs.simulator``'s: the same seed gives the same users with the same hidden tastes
(favourite categories and brands with Dirichlet weights, a price sensitivity) and the same catalogue.
For ``n_users`` of its users, over ``days`` simulated days, each shopper has a Poisson number of
sessions per day; each session asks the API for ``pages_per_session`` pages of ``k`` recommendations
(``GET /v1/recommendations/{user_id}?session_id=...``) and, on each page, clicks the item at position
``p`` with probability

    P(click) = position_bias(p) · attractiveness(user, item),   position_bias(p) = 1 / p ** position_bias_exponent

(the examination hypothesis: a shopper looks at lower positions less, and clicks what she looks at
in proportion to how much she likes it). A click is followed by an add-to-cart with ``cart_prob`` and
that by a purchase with ``purchase_prob``. The events go back through ``POST /v1/events`` with the
answer's ``request_id`` and the item's ``position`` and a ``ts`` inside the simulated day, so the next
page reflects them and the lake can attribute them.

``attractiveness`` is the simulator's hidden preference, never shown to the models: a better model
earns a higher click-through rate (``ShopperReport.ctr``, per experiment arm in ``by_arm``).

``complement_interest`` > 0 adds the simulator's other habit, the one a sequential model can learn and
popularity cannot: its users very often look next at a *complement* of the item they last touched. A
complement of the shopper's last item (her last item in ``recent``, the history before the run, then the
last one she clicked) is then at least as attractive as ``complement_interest`` × that complement's weight
(``SimConfig.complement_decay``: the first complement weighs most); 0 (default) = tastes only.

Pure Python + httpx + numpy (no Spark): ``python -m jobs.shoppers --api http://localhost:8000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np

from core.client import HOW_TO_GET_ONE, api_key, auth_headers
from jobs.simulator import SECONDS_PER_DAY, Shop, SimConfig, build_shop, item_id, user_id


@dataclass(frozen=True)
class ShopperConfig:
    """How the simulated shoppers browse (the shop itself is a ``SimConfig``)."""

    n_users: int = 200
    days: int = 1
    end_date: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    sessions_per_day: float = 1.0
    pages_per_session: int = 2
    k: int = 10
    position_bias_exponent: float = 1.0
    #: Interest in an item outside the shopper's tastes (attractiveness never drops below it).
    base_interest: float = 0.02
    #: How much a favourite category and a favourite brand weigh in attractiveness (sum <= 1).
    category_weight: float = 0.7
    brand_weight: float = 0.3
    #: Attractiveness of the complements of the shopper's last item (× each complement's weight); 0 = off.
    complement_interest: float = 0.0
    cart_prob: float = 0.3
    purchase_prob: float = 0.5
    seed: int = 7
    concurrency: int = 4
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("n_users", "days", "pages_per_session", "k", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"ShopperConfig.{name} must be at least 1 (got {getattr(self, name)})")
        if self.category_weight + self.brand_weight > 1 + 1e-9:
            raise ValueError("ShopperConfig.category_weight + brand_weight must not exceed 1")
        for name in ("base_interest", "complement_interest", "cart_prob", "purchase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ShopperConfig.{name} must be within 0..1")

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days - 1)


def position_bias(position: np.ndarray | int, exponent: float) -> np.ndarray:
    """Probability that a shopper examines the item at 1-based ``position``: ``1 / position ** exponent``."""
    return 1.0 / np.asarray(position, dtype=np.float64) ** exponent


def _weights(cdf: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([np.zeros((len(cdf), 1), dtype=np.float64), cdf.astype(np.float64)], axis=1), axis=1)


def attractiveness(shop: Shop, users: np.ndarray, cfg: ShopperConfig | None = None) -> np.ndarray:
    """The hidden preference of ``users`` (simulator indices) for every item, in [0, 1]: shape (users, items).

    ``base + (1 - base) · (category_weight · w_cat + brand_weight · w_brand) · price_fit`` where
    ``w_cat``/``w_brand`` are the user's taste weights for the item's category/brand (0 when it is
    not a favourite) and ``price_fit = clip((price / category median) ** -sensitivity, 0.2, 1)``;
    0 for an unavailable item.
    """
    cfg = cfg or ShopperConfig()
    users = np.asarray(users, dtype=np.int64)
    cat_w, brand_w = _weights(shop.user_category_cdf[users]), _weights(shop.user_brand_cdf[users])
    affinity = np.zeros((len(users), len(shop.item_category)), dtype=np.float64)
    for slot in range(cat_w.shape[1]):
        affinity += (
            cfg.category_weight
            * cat_w[:, slot, None]
            * (shop.item_category[None, :] == shop.user_categories[users, slot, None])
        )
    for slot in range(brand_w.shape[1]):
        affinity += (
            cfg.brand_weight
            * brand_w[:, slot, None]
            * (shop.item_brand[None, :] == shop.user_brands[users, slot, None])
        )
    ratio = shop.item_price / shop.category_median_price[shop.item_category]
    price_fit = np.clip(ratio[None, :] ** -shop.user_price_sensitivity[users, None], 0.2, 1.0)
    attractive = cfg.base_interest + (1.0 - cfg.base_interest) * np.minimum(affinity, 1.0) * price_fit
    return np.where(shop.item_available[None, :], attractive, 0.0)


@dataclass
class ArmTally:
    """What one arm (or the champion alone) showed and what it earned."""

    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")

    def add(self, other: ArmTally) -> None:
        for name in ("requests", "impressions", "clicks", "carts", "purchases", "revenue"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ShopperReport:
    """Totals, per arm (``"<experiment>/<variant>"``, ``"champion"`` outside experiments; interleaving
    credits each item to its team), and the run's errors."""

    total: ArmTally = field(default_factory=ArmTally)
    by_arm: dict[str, ArmTally] = field(default_factory=dict)
    events_posted: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ctr(self) -> float:
        return self.total.ctr

    def as_dict(self) -> dict[str, Any]:
        def arm(t: ArmTally) -> dict[str, Any]:
            return {**asdict(t), "ctr": None if math.isnan(t.ctr) else round(t.ctr, 6)}

        return {
            "total": arm(self.total),
            "by_arm": {name: arm(t) for name, t in sorted(self.by_arm.items())},
            "events_posted": self.events_posted,
            "errors": self.errors[:20],
            "n_errors": len(self.errors),
            "seconds": round(self.seconds, 3),
        }


def _arm_of(body: dict[str, Any], item: dict[str, Any]) -> str:
    if body.get("experiment") is None:
        return "champion"
    return f"{body['experiment']}/{item.get('team') or body.get('variant')}"


def _iso(day_start: dt.datetime, seconds: float) -> str:
    stamp = day_start + dt.timedelta(seconds=min(seconds, SECONDS_PER_DAY - 0.001))
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Shoppers:
    """Simulated shoppers of one shop browsing one API (``base_url``)."""

    def __init__(
        self,
        sim: SimConfig,
        cfg: ShopperConfig,
        shop: Shop | None = None,
        recent: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``recent``: each shopper's items before the run (user id → item ids, oldest first), whose last one
        ``complement_interest`` starts from."""
        if cfg.n_users > sim.n_users:
            raise ValueError(f"{cfg.n_users} shoppers asked of a shop with {sim.n_users} users; lower n_users")
        self.sim = sim
        self.cfg = cfg
        self.shop = shop or build_shop(sim)
        bots = set(self.shop.bot_users.tolist())
        #: The shoppers: the shop's first ``n_users`` users that are not bots (simulator indices).
        self.users = np.asarray([u for u in range(sim.n_users) if u not in bots][: cfg.n_users], dtype=np.int64)
        self.item_index = {item_id(i): i for i in range(sim.n_items)}
        weights = np.diff(np.concatenate([[0.0], self.shop.complement_cdf.astype(np.float64)]))
        self._complement_weights = weights
        #: Each shopper's last item (simulator index); one thread serves a shopper at a time.
        self._last: dict[int, int] = {}
        for uid, items in (recent or {}).items():
            known = [self.item_index[i] for i in items if i in self.item_index]
            if known and uid.startswith("u") and uid[1:].isdigit():
                self._last[int(uid[1:])] = known[-1]

    def _likes(self, user: int) -> np.ndarray:
        """The shopper's attractiveness of every item now: tastes, raised for the complements of her last item."""
        likes = attractiveness(self.shop, np.asarray([user]), self.cfg)[0]
        last = self._last.get(user)
        if self.cfg.complement_interest > 0 and last is not None:
            complements = self.shop.complements[last]
            boost = self.cfg.complement_interest * self._complement_weights[: len(complements)]
            available = self.shop.item_available[complements]
            likes[complements] = np.where(available, np.maximum(likes[complements], boost), 0.0)
        return likes

    def run(self, base_url: str, api_key: str | None = None) -> ShopperReport:
        """Every shopper's sessions of every simulated day, ``concurrency`` shoppers at a time; ``api_key``
        (scopes ``recs:read`` and ``events:write``) is presented on every call."""
        report = ShopperReport()
        lock = threading.Lock()
        started = time.perf_counter()
        headers = auth_headers(api_key)
        with httpx.Client(base_url=base_url, timeout=self.cfg.timeout_s, headers=headers) as http:
            for day in range(self.cfg.days):
                date = self.cfg.start_date + dt.timedelta(days=day)

                def one(user: int, date: dt.date = date) -> None:
                    mine = self._shop_one_day(http, int(user), date)
                    with lock:
                        _merge(report, mine)

                with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
                    list(pool.map(one, self.users))
        report.seconds = time.perf_counter() - started
        return report

    def _shop_one_day(self, http: httpx.Client, user: int, date: dt.date) -> ShopperReport:
        cfg = self.cfg
        report = ShopperReport()
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, date.toordinal(), user]))
        likes = self._likes(user)
        day_start = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
        uid = user_id(user)
        for session in range(int(rng.poisson(cfg.sessions_per_day))):
            clock = float(rng.uniform(0, SECONDS_PER_DAY - 3600))
            session_id = f"sim{cfg.seed}-{date:%Y%m%d}-{uid}-{session}"
            for _ in range(cfg.pages_per_session):
                try:
                    resp = http.get(f"/v1/recommendations/{uid}", params={"k": cfg.k, "session_id": session_id})
                    resp.raise_for_status()
                    body = resp.json()
                except httpx.HTTPError as exc:
                    report.errors.append(f"GET {uid}: {exc}")
                    continue
                events = self._browse(body, likes, uid, session_id, day_start, clock, rng, report)
                clock += 60.0
                clicked = [self.item_index.get(e["item_id"]) for e in events if e["event_type"] == "click"]
                if clicked and clicked[-1] is not None and cfg.complement_interest > 0:
                    self._last[user] = clicked[-1]
                    likes = self._likes(user)
                if not events:
                    continue
                try:
                    posted = http.post("/v1/events", json={"events": events})
                    posted.raise_for_status()
                    report.events_posted += int(posted.json()["accepted"])
                except httpx.HTTPError as exc:
                    report.errors.append(f"POST events {uid}: {exc}")
        return report

    def _browse(
        self,
        body: dict[str, Any],
        likes: np.ndarray,
        uid: str,
        session_id: str,
        day_start: dt.datetime,
        clock: float,
        rng: np.random.Generator,
        report: ShopperReport,
    ) -> list[dict[str, Any]]:
        """One page: count what was shown, draw clicks (position bias × attractiveness), carts and purchases."""
        cfg = self.cfg
        items = body.get("items") or []
        arms = [_arm_of(body, item) for item in items]
        for arm in set(arms) or {_arm_of(body, {})}:
            report.by_arm.setdefault(arm, ArmTally()).requests += 1
        report.total.requests += 1
        events: list[dict[str, Any]] = []
        draws = rng.random((len(items), 3))
        for position, (item, arm, draw) in enumerate(zip(items, arms, draws, strict=True), start=1):
            tally = report.by_arm[arm]
            tally.impressions += 1
            report.total.impressions += 1
            index = self.item_index.get(item["item_id"])
            like = float(likes[index]) if index is not None else 0.0
            if draw[0] >= float(position_bias(position, cfg.position_bias_exponent)) * like:
                continue
            base = {"user_id": uid, "item_id": item["item_id"], "session_id": session_id,
                    "request_id": body["request_id"], "position": position}  # fmt: skip
            at = clock + 5.0 * position
            events.append({**base, "event_type": "click", "ts": _iso(day_start, at)})
            for t in (tally, report.total):
                t.clicks += 1
            if draw[1] >= cfg.cart_prob:
                continue
            events.append({**base, "event_type": "add_to_cart", "ts": _iso(day_start, at + 10.0)})
            for t in (tally, report.total):
                t.carts += 1
            if draw[2] >= cfg.purchase_prob or index is None:
                continue
            price = float(self.shop.item_price[index])
            events.append({**base, "event_type": "purchase", "ts": _iso(day_start, at + 30.0), "price": price,
                           "quantity": 1})  # fmt: skip
            for t in (tally, report.total):
                t.purchases += 1
                t.revenue += price
        return events


def _merge(into: ShopperReport, part: ShopperReport) -> None:
    into.total.add(part.total)
    for arm, tally in part.by_arm.items():
        into.by_arm.setdefault(arm, ArmTally()).add(tally)
    into.events_posted += part.events_posted
    into.errors.extend(part.errors)


def _args(argv: list[str] | None) -> Iterator[Any]:
    sim_defaults, defaults = SimConfig(), ShopperConfig()
    p = argparse.ArgumentParser(prog="python -m jobs.shoppers", description=__doc__.splitlines()[0])
    p.add_argument("--api", default="http://127.0.0.1:8000", help="base URL of the scoring API")
    p.add_argument(
        "--api-key",
        default=None,
        help="key with scopes recs:read,events:write (default: RECSYS_API_KEY, else the local key of make run)",
    )
    p.add_argument("--shoppers", type=int, default=defaults.n_users, help="how many of the shop's users browse")
    p.add_argument("--days", type=int, default=defaults.days)
    p.add_argument("--end-date", type=dt.date.fromisoformat, default=defaults.end_date)
    p.add_argument("--sessions-per-day", type=float, default=defaults.sessions_per_day)
    p.add_argument("--pages", type=int, default=defaults.pages_per_session)
    p.add_argument("--k", type=int, default=defaults.k)
    p.add_argument("--concurrency", type=int, default=defaults.concurrency)
    p.add_argument("--seed", type=int, default=defaults.seed, help="the shoppers' own seed")
    shop = p.add_argument_group("the simulated shop (the same options as python -m jobs.simulator)")
    shop.add_argument("--users", type=int, default=sim_defaults.n_users)
    shop.add_argument("--items", type=int, default=sim_defaults.n_items)
    shop.add_argument("--categories", type=int, default=sim_defaults.n_categories)
    shop.add_argument("--brands", type=int, default=sim_defaults.n_brands)
    shop.add_argument("--shop-seed", type=int, default=sim_defaults.seed)
    args = p.parse_args(argv)
    yield args.api
    key = args.api_key or api_key()
    if key is None:
        p.error(HOW_TO_GET_ONE)
    yield key
    yield SimConfig(
        n_users=args.users,
        n_items=args.items,
        n_categories=args.categories,
        n_brands=args.brands,
        seed=args.shop_seed,
    )
    yield ShopperConfig(
        n_users=args.shoppers,
        days=args.days,
        end_date=args.end_date,
        sessions_per_day=args.sessions_per_day,
        pages_per_session=args.pages,
        k=args.k,
        seed=args.seed,
        concurrency=args.concurrency,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: browse a running API and print the report (CTR, conversions, revenue per arm) as JSON."""
    api, key, sim, cfg = _args(argv)
    report = Shoppers(sim, cfg).run(api, key).as_dict()
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
