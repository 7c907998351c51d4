"""Seeded e-commerce shop simulator that streams raw events into the landing zone.

The shop: items with a category, a brand, a log-normal price per category, Zipf popularity and a few
per cent out of stock; users with Dirichlet tastes over a few favourite categories and brands and a
price sensitivity; sessions that walk a view → click → add_to_cart → purchase funnel. Each item has
a few *complementary* items that users very often look at next (within a session, and at the start of
their next session), which is the signal a sequential model can learn and popularity cannot.

The feed is dirty on purpose, each kind at a configured rate and counted in the summary: exact
duplicate lines (same ``event_id``), bot users firing hundreds of events a minute, missing prices,
late events (written to a landing day a few days after their timestamp) and unknown event types.

Days are simulated one at a time (users in chunks), formatted straight to JSONL and written
atomically to ``landing/events/dt=<day>/sim-<seed>-<part>.jsonl``; memory stays bounded by one
chunk, and re-simulating the same config replaces its own files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from core.contract import EVENT_TYPES
from core.lake import Lake, commit_path, staging_path

VIEW, CLICK, CART, PURCHASE = range(4)
SECONDS_PER_DAY = 86_400
_EVENT_TEMPLATE = (
    '{"event_id":"e<stamp>-%d","user_id":"%s","item_id":"%s","event_type":"%s","ts":"%sZ",'
    '"session_id":"s<stamp>-%d","price":%s,"quantity":%s}'
)


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulated shop; the defaults give the ``make run`` shop."""

    n_users: int = 5_000
    n_items: int = 2_000
    n_categories: int = 20
    n_brands: int = 100
    days: int = 30
    end_date: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    seed: int = 42
    # Catalogue
    zipf_exponent: float = 1.1
    price_median: float = 30.0
    price_category_sigma: float = 0.8
    price_item_sigma: float = 0.5
    unavailable_fraction: float = 0.03
    brand_in_category_share: float = 0.8
    n_tags: int = 60
    # Users
    favourite_categories: int = 3
    favourite_brands: int = 3
    taste_concentration: float = 0.5
    # Sessions
    sessions_per_user_per_day: float = 0.25
    mean_views_per_session: float = 6.0
    max_views_per_session: int = 40
    mean_view_gap_s: float = 45.0
    diurnal_peak_hour: float = 20.0
    diurnal_amplitude: float = 0.6
    # Item choice of a view: complement of the previous item, else a category / brand / global pick
    n_complements: int = 3
    complement_decay: float = 0.6
    complement_next_prob: float = 0.55
    complement_cross_session_prob: float = 0.35
    category_route_prob: float = 0.6
    brand_route_prob: float = 0.25
    # Funnel
    click_prob: float = 0.3
    cart_prob: float = 0.25
    purchase_prob: float = 0.45
    price_elasticity: float = 1.0
    extra_quantity_prob: float = 0.2
    funnel_delay_means_s: tuple[float, float, float] = (5.0, 15.0, 60.0)
    session_tail_margin_s: float = 1800.0
    # Dirt
    duplicate_rate: float = 0.01
    missing_price_rate: float = 0.05
    late_rate: float = 0.01
    late_min_days: int = 3
    late_max_days: int = 5
    unknown_event_rate: float = 0.005
    unknown_event_types: tuple[str, ...] = ("wishlist", "share")
    bot_user_fraction: float = 0.001
    bot_events_per_minute: int = 300
    bot_active_prob: float = 0.25
    # Streaming
    chunk_users: int = 100_000
    max_events_per_file: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "n_brands", "days", "n_complements", "chunk_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimConfig.{name} must be at least 1 (got {getattr(self, name)})")
        if self.late_min_days < 1 or self.late_max_days < self.late_min_days:
            raise ValueError("SimConfig.late_min_days must be >= 1 and <= late_max_days")
        if self.category_route_prob + self.brand_route_prob > 1:
            raise ValueError("SimConfig.category_route_prob + brand_route_prob must not exceed 1")
        if set(self.unknown_event_types) & set(EVENT_TYPES):
            raise ValueError(f"SimConfig.unknown_event_types must not contain a known type {EVENT_TYPES}")

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days - 1)


@dataclass
class Shop:
    """The simulated world: catalogue, users and the lookup tables the samplers need."""

    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_available: np.ndarray
    item_popularity: np.ndarray
    item_tags: list[list[int]]
    complements: np.ndarray
    category_median_price: np.ndarray
    user_categories: np.ndarray
    user_category_cdf: np.ndarray
    user_brands: np.ndarray
    user_brand_cdf: np.ndarray
    user_price_sensitivity: np.ndarray
    bot_users: np.ndarray
    category_sampler: tuple[np.ndarray, np.ndarray]
    brand_sampler: tuple[np.ndarray, np.ndarray]
    global_cdf: np.ndarray
    complement_cdf: np.ndarray


def _group_sampler(group: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys and item order to draw an item of group ``g`` in proportion to ``weight`` in one searchsorted.

    Key of the j-th item of group g = g + (its cumulative share of the group's weight), so a draw for
    group g with uniform u is the first key above g + u.
    """
    order = np.lexsort((-weight, group))
    g = group[order]
    w = weight[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    csum = np.cumsum(w)
    before = np.repeat(csum[starts] - w[starts], sizes)
    total = np.repeat(csum[starts + sizes - 1], sizes) - before
    within = (csum - before) / total
    within[starts + sizes - 1] = 1.0
    return g + within, order


def _draw_in_group(sampler: tuple[np.ndarray, np.ndarray], groups: np.ndarray, u: np.ndarray) -> np.ndarray:
    keys, order = sampler
    return order[np.searchsorted(keys, groups + np.minimum(u, 1 - 1e-9), side="right")]


def _draw_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column index drawn per row of a row-wise CDF matrix."""
    return np.minimum((cdf < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


def build_shop(cfg: SimConfig) -> Shop:
    """Draw the catalogue and the users from the seed (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    n_i, n_c, n_b = cfg.n_items, cfg.n_categories, cfg.n_brands

    category_share = rng.dirichlet(np.full(n_c, 2.0))
    item_category = rng.choice(n_c, size=n_i, p=category_share)
    item_category[: min(n_c, n_i)] = np.arange(min(n_c, n_i))
    home_brand = rng.integers(0, max(1, n_b // n_c), size=n_i) * n_c + item_category
    home_brand = np.where(home_brand < n_b, home_brand, home_brand % n_b)
    item_brand = np.where(rng.random(n_i) < cfg.brand_in_category_share, home_brand, rng.integers(0, n_b, size=n_i))

    category_mu = math.log(cfg.price_median) + rng.normal(0, cfg.price_category_sigma, size=n_c)
    item_price = np.round(np.exp(category_mu[item_category] + rng.normal(0, cfg.price_item_sigma, size=n_i)), 2)
    item_price = np.maximum(item_price, 0.01)
    category_median_price = np.exp(category_mu)
    item_available = rng.random(n_i) >= cfg.unavailable_fraction
    rank = rng.permutation(n_i)
    item_popularity = (rank + 1.0) ** -cfg.zipf_exponent

    tags_per_category = max(1, cfg.n_tags // n_c)
    n_item_tags = rng.integers(1, 4, size=n_i)
    tag_pick = rng.integers(0, tags_per_category, size=(n_i, 3))
    item_tags = [
        sorted({int(item_category[i] * tags_per_category + t) for t in tag_pick[i, : n_item_tags[i]]})
        for i in range(n_i)
    ]

    complement_weight = np.sqrt(item_popularity)
    complements = rng.choice(n_i, size=(n_i, cfg.n_complements), p=complement_weight / complement_weight.sum())
    self_hit = complements == np.arange(n_i)[:, None]
    complements[self_hit] = (complements[self_hit] + 1) % n_i
    comp_w = cfg.complement_decay ** np.arange(cfg.n_complements)
    complement_cdf = np.cumsum(comp_w / comp_w.sum())

    category_size = np.bincount(item_category, minlength=n_c).astype(float)
    brand_size = np.bincount(item_brand, minlength=n_b).astype(float)
    user_categories = rng.choice(
        n_c, size=(cfg.n_users, cfg.favourite_categories), p=category_size / category_size.sum()
    )
    user_brands = rng.choice(n_b, size=(cfg.n_users, cfg.favourite_brands), p=brand_size / brand_size.sum())
    user_category_cdf = np.cumsum(
        rng.dirichlet(np.full(cfg.favourite_categories, cfg.taste_concentration), size=cfg.n_users), axis=1
    )
    user_brand_cdf = np.cumsum(
        rng.dirichlet(np.full(cfg.favourite_brands, cfg.taste_concentration), size=cfg.n_users), axis=1
    )
    n_bots = round(cfg.bot_user_fraction * cfg.n_users)
    bot_users = np.sort(rng.choice(cfg.n_users, size=n_bots, replace=False)) if n_bots else np.empty(0, dtype=np.int64)

    global_cdf = np.cumsum(item_popularity) / item_popularity.sum()
    global_cdf[-1] = 1.0
    return Shop(
        item_category=item_category,
        item_brand=item_brand,
        item_price=item_price,
        item_available=item_available,
        item_popularity=item_popularity,
        item_tags=item_tags,
        complements=complements,
        category_median_price=category_median_price,
        user_categories=user_categories,
        user_category_cdf=user_category_cdf.astype(np.float32),
        user_brands=user_brands,
        user_brand_cdf=user_brand_cdf.astype(np.float32),
        user_price_sensitivity=rng.beta(2.0, 2.0, size=cfg.n_users),
        bot_users=bot_users,
        category_sampler=_group_sampler(item_category, item_popularity),
        brand_sampler=_group_sampler(item_brand, item_popularity),
        global_cdf=global_cdf,
        complement_cdf=complement_cdf,
    )


def _taste_items(shop: Shop, cfg: SimConfig, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An item per user drawn from their tastes: favourite category, favourite brand, or what is popular."""
    n = len(users)
    route = rng.random(n)
    u = rng.random(n)
    out = np.searchsorted(shop.global_cdf, u, side="right").clip(max=cfg.n_items - 1)
    by_cat = route < cfg.category_route_prob
    if by_cat.any():
        cu = users[by_cat]
        cat = shop.user_categories[cu, _draw_rows(shop.user_category_cdf[cu], rng.random(len(cu)))]
        out[by_cat] = _draw_in_group(shop.category_sampler, cat, u[by_cat])
    by_brand = (route >= cfg.category_route_prob) & (route < cfg.category_route_prob + cfg.brand_route_prob)
    if by_brand.any():
        bu = users[by_brand]
        brand = shop.user_brands[bu, _draw_rows(shop.user_brand_cdf[bu], rng.random(len(bu)))]
        out[by_brand] = _draw_in_group(shop.brand_sampler, brand, u[by_brand])
    return out


def _complement_of(shop: Shop, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    slot = np.searchsorted(shop.complement_cdf, rng.random(len(items)), side="right").clip(
        max=shop.complements.shape[1] - 1
    )
    return shop.complements[items, slot]


@dataclass
class _Events:
    """One chunk's events as parallel arrays (``ts`` in epoch milliseconds)."""

    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    quantity: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def _concat(parts: list[_Events]) -> _Events:
    return _Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in _Events.__dataclass_fields__))


def _session_starts(cfg: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds into the day, with a daily peak at ``diurnal_peak_hour`` (rejection sampling)."""
    out = np.empty(0)
    while len(out) < n:
        s = rng.random(2 * (n - len(out)) + 8) * SECONDS_PER_DAY
        shape = 1 + cfg.diurnal_amplitude * np.cos(2 * np.pi * (s / 3600 - cfg.diurnal_peak_hour) / 24)
        keep = rng.random(len(s)) * (1 + cfg.diurnal_amplitude) < shape
        out = np.r_[out, s[keep]]
    return out[:n]


def _shopper_events(
    shop: Shop, cfg: SimConfig, users: np.ndarray, day_ms: int, last_item: np.ndarray, rng: np.random.Generator
) -> _Events:
    """Sessions of ordinary users for one day: item walk with complements, then the funnel."""
    n_sess = rng.poisson(cfg.sessions_per_user_per_day, size=len(users))
    sess_user = np.repeat(users, n_sess)
    length = np.minimum(rng.geometric(1 / cfg.mean_views_per_session, size=len(sess_user)), cfg.max_views_per_session)
    order = np.argsort(-length, kind="stable")
    sess_user, length = sess_user[order], length[order]
    n_s = len(sess_user)
    offset = np.r_[0, np.cumsum(length)[:-1]].astype(np.int64)
    n_views = int(length.sum())
    view_item = np.empty(n_views, dtype=np.int64)

    prev = last_item[sess_user]
    n_active_by_t = np.bincount(length, minlength=1)[::-1].cumsum()[::-1][1:]
    for t, n_active in enumerate(n_active_by_t):
        users_t = sess_user[:n_active]
        p = prev[:n_active]
        comp_prob = cfg.complement_cross_session_prob if t == 0 else cfg.complement_next_prob
        use_comp = (p >= 0) & (rng.random(n_active) < comp_prob)
        cur = np.empty(n_active, dtype=np.int64)
        if use_comp.any():
            cur[use_comp] = _complement_of(shop, p[use_comp], rng)
        if (~use_comp).any():
            cur[~use_comp] = _taste_items(shop, cfg, users_t[~use_comp], rng)
        view_item[offset[:n_active] + t] = cur
        prev = cur
    if n_s:
        last_item[sess_user] = view_item[offset + length - 1]

    view_sess = np.repeat(np.arange(n_s), length)
    view_user = sess_user[view_sess]
    gaps = rng.exponential(cfg.mean_view_gap_s, size=n_views)
    csum = np.cumsum(gaps)
    within = csum - np.repeat(csum[offset] - gaps[offset], length) - gaps
    start = _session_starts(cfg, n_s, rng)
    end_of_session = start + within[offset + length - 1] + cfg.session_tail_margin_s
    start = start - np.maximum(0.0, end_of_session - (SECONDS_PER_DAY - 1))
    start = np.maximum(start, 0.0)
    view_s = start[view_sess] + within

    clicked = rng.random(n_views) < cfg.click_prob
    carted = clicked & (rng.random(n_views) < cfg.cart_prob) & shop.item_available[view_item]
    ratio = shop.item_price[view_item] / shop.category_median_price[shop.item_category[view_item]]
    price_factor = np.clip(ratio ** (-cfg.price_elasticity * shop.user_price_sensitivity[view_user]), 0.2, 1.5)
    bought = carted & (rng.random(n_views) < np.minimum(1.0, cfg.purchase_prob * price_factor))

    to_click, to_cart, to_buy = cfg.funnel_delay_means_s
    click_s = view_s + 1 + rng.exponential(to_click, size=n_views)
    cart_s = click_s + 1 + rng.exponential(to_cart, size=n_views)
    buy_s = cart_s + 1 + rng.exponential(to_buy, size=n_views)
    qty = rng.geometric(1 - cfg.extra_quantity_prob, size=n_views)

    parts = [
        (np.ones(n_views, bool), VIEW, view_s),
        (clicked, CLICK, click_s),
        (carted, CART, cart_s),
        (bought, PURCHASE, buy_s),
    ]
    ev = _concat(
        [
            _Events(
                user=view_user[m],
                item=view_item[m],
                etype=np.full(int(m.sum()), code, dtype=np.int8),
                ts=day_ms + (np.minimum(secs[m], SECONDS_PER_DAY - 0.001) * 1000).astype(np.int64),
                session=view_sess[m],
                quantity=np.where(code >= CART, qty[m], 0),
            )
            for m, code, secs in parts
        ]
    )
    return ev


def _bot_events(cfg: SimConfig, bots: np.ndarray, day_ms: int, session_base: int, rng: np.random.Generator) -> _Events:
    """Each active bot fires one minute-long burst of ``bot_events_per_minute`` views on random items."""
    n = cfg.bot_events_per_minute
    user = np.repeat(bots, n)
    start = rng.random(len(bots)) * (SECONDS_PER_DAY - 61)
    secs = np.repeat(start, n) + rng.random(len(user)) * 60
    return _Events(
        user=user,
        item=rng.integers(0, cfg.n_items, size=len(user)),
        etype=np.zeros(len(user), dtype=np.int8),
        ts=day_ms + (secs * 1000).astype(np.int64),
        session=session_base + np.repeat(np.arange(len(bots)), n),
        quantity=np.zeros(len(user), dtype=np.int64),
    )


class _DayWriter:
    """Buffered, atomic writer of one day's parts: ``sim-<seed>-<part>.jsonl`` in the day's folder."""

    def __init__(self, folder: Path, seed: int, max_lines: int) -> None:
        self.folder, self.seed, self.max_lines = folder, seed, max_lines
        self.part, self.lines_in_part, self.lines = 0, 0, 0
        self.staged: list[tuple[Path, Path]] = []
        self.fh: TextIO | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> TextIO:
        target = self.folder / f"sim-{self.seed}-{self.part}.jsonl"
        staged = staging_path(target)
        self.staged.append((staged, target))
        return open(staged, "w", encoding="utf-8", buffering=1 << 20)

    def write(self, lines: list[str]) -> None:
        pos = 0
        while pos < len(lines):
            if self.fh is None:
                self.fh = self._open()
            take = min(len(lines) - pos, self.max_lines - self.lines_in_part)
            self.fh.write("\n".join(lines[pos : pos + take]))
            self.fh.write("\n")
            pos += take
            self.lines_in_part += take
            self.lines += take
            if self.lines_in_part >= self.max_lines:
                self.fh.close()
                self.fh, self.part, self.lines_in_part = None, self.part + 1, 0

    def commit(self) -> list[Path]:
        """Rename every part into place and delete stale parts of the same seed from an earlier run."""
        if self.fh is None and not self.staged:
            self.fh = self._open()
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        for staged, target in self.staged:
            commit_path(staged, target)
        kept = {t.name for _, t in self.staged}
        for stale in self.folder.glob(f"sim-{self.seed}-*.jsonl"):
            if stale.name not in kept:
                stale.unlink()
        return [t for _, t in self.staged]


def _format(
    ev: _Events, day: dt.date, chunk: int, cfg: SimConfig, tables: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[list[str], np.ndarray, dict[str, int], np.ndarray]:
    """JSONL lines of one chunk (time-ordered) plus the unknown-type extras, duplicates and missing prices.

    Returns the lines, a per-line mask of the duplicate copies, dirt counts and event counts per type
    code (duplicates excluded).
    """
    n_base = len(ev)
    extra = rng.random(n_base) < cfg.unknown_event_rate
    n_unknown = int(extra.sum())
    if n_unknown:
        src = np.flatnonzero(extra)
        unknown_type = 4 + rng.integers(0, len(cfg.unknown_event_types), size=n_unknown).astype(np.int8)
        ev = _Events(
            user=np.r_[ev.user, ev.user[src]],
            item=np.r_[ev.item, ev.item[src]],
            etype=np.r_[ev.etype, unknown_type],
            ts=np.r_[ev.ts, ev.ts[src] + 2000],
            session=np.r_[ev.session, ev.session[src]],
            quantity=np.r_[ev.quantity, np.zeros(n_unknown, dtype=np.int64)],
        )
    order = np.argsort(ev.ts, kind="stable")
    n = len(order)
    template = _EVENT_TEMPLATE.replace("<stamp>", f"{cfg.seed}-{day:%Y%m%d}-{chunk}")
    missing = rng.random(n) < cfg.missing_price_rate
    price = tables["price"][ev.item[order]]
    price[missing] = "null"
    qty = tables["quantity"][np.minimum(ev.quantity[order], len(tables["quantity"]) - 1)]
    ts = np.datetime_as_string(ev.ts[order].astype("datetime64[ms]"), unit="ms")
    lines = [
        template % row
        for row in zip(
            range(n),
            tables["user"][ev.user[order]].tolist(),
            tables["item"][ev.item[order]].tolist(),
            tables["etype"][ev.etype[order]].tolist(),
            ts.tolist(),
            ev.session[order].tolist(),
            price.tolist(),
            qty.tolist(),
            strict=True,
        )
    ]
    dup = np.flatnonzero(rng.random(n) < cfg.duplicate_rate)
    if len(dup):
        lines = list(map(lines.__getitem__, np.insert(np.arange(n), dup + 1, dup).tolist()))
    is_dup = np.zeros(len(lines), dtype=bool)
    is_dup[dup + np.arange(1, len(dup) + 1)] = True
    counts = {"duplicates": len(dup), "missing_price": int(missing.sum()), "unknown_event_type": n_unknown}
    return lines, is_dup, counts, np.bincount(ev.etype, minlength=len(tables["etype"]))


def _tables(cfg: SimConfig, shop: Shop) -> dict[str, np.ndarray]:
    return {
        "user": np.array([user_id(u) for u in range(cfg.n_users)], dtype=object),
        "item": np.array([item_id(i) for i in range(cfg.n_items)], dtype=object),
        "etype": np.array([*EVENT_TYPES, *cfg.unknown_event_types], dtype=object),
        "price": np.array([f"{p:.2f}" for p in shop.item_price], dtype=object),
        "quantity": np.array(["null", *(str(q) for q in range(1, 10))], dtype=object),
    }


def user_id(index: int) -> str:
    return f"u{index:07d}"


def item_id(index: int) -> str:
    return f"i{index:06d}"


def catalogue_records(cfg: SimConfig, shop: Shop) -> Iterator[dict[str, Any]]:
    """The catalogue rows in the landing-items contract."""
    for i in range(cfg.n_items):
        cat, brand = int(shop.item_category[i]), int(shop.item_brand[i])
        yield {
            "item_id": item_id(i),
            "category": f"cat-{cat:03d}",
            "brand": f"brand-{brand:04d}",
            "price": float(shop.item_price[i]),
            "available": bool(shop.item_available[i]),
            "title": f"brand-{brand:04d} cat-{cat:03d} #{i}",
            "attributes": [f"tag-{t:03d}" for t in shop.item_tags[i]],
        }


def write_catalogue(cfg: SimConfig, shop: Shop, lake: Lake) -> Path:
    """Write ``landing/items/items.jsonl`` atomically."""
    target = lake.landing_items() / "items.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(target)
    with open(staged, "w", encoding="utf-8") as fh:
        for rec in catalogue_records(cfg, shop):
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    commit_path(staged, target)
    return target


def simulate_to_landing(cfg: SimConfig, lake_root: str | Path) -> dict[str, Any]:
    """Simulate ``cfg.days`` days ending at ``cfg.end_date`` into the landing zone; return a summary.

    The summary holds ``rows_per_day`` (lines written per landing day), ``n_events``, ``n_users``,
    ``n_items``, ``start``/``end`` (landing days), ``dirt`` (counts per kind), ``event_types``,
    ``files``, ``seconds`` and ``events_per_second``.
    """
    t0 = time.perf_counter()
    lake = Lake(lake_root)
    shop = build_shop(cfg)
    tables = _tables(cfg, shop)
    write_catalogue(cfg, shop, lake)

    last_item = np.full(cfg.n_users, -1, dtype=np.int64)
    is_bot = np.zeros(cfg.n_users, dtype=bool)
    is_bot[shop.bot_users] = True
    shoppers = np.flatnonzero(~is_bot)
    pending: dict[dt.date, list[str]] = {}
    rows_per_day: dict[str, int] = {}
    dirt = dict.fromkeys(("duplicates", "missing_price", "unknown_event_type", "late", "bot_events"), 0)
    dirt["bot_users"] = len(shop.bot_users)
    type_counts = np.zeros(len(tables["etype"]), dtype=np.int64)
    files: list[str] = []

    for d in range(cfg.days):
        day = cfg.start_date + dt.timedelta(days=d)
        day_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, day.toordinal()]))
        writer = _DayWriter(lake.landing_events(day), cfg.seed, cfg.max_events_per_file)
        days_left = (cfg.end_date - day).days
        for chunk, lo in enumerate(range(0, len(shoppers), cfg.chunk_users)):
            ev = _shopper_events(shop, cfg, shoppers[lo : lo + cfg.chunk_users], day_ms, last_item, rng)
            active_bots = shop.bot_users[rng.random(len(shop.bot_users)) < cfg.bot_active_prob]
            if chunk == 0 and len(active_bots):
                bots = _bot_events(cfg, active_bots, day_ms, int(ev.session.max(initial=-1)) + 1, rng)
                dirt["bot_events"] += len(bots)
                ev = _concat([ev, bots])
            lines, is_dup, counts, types = _format(ev, day, chunk, cfg, tables, rng)
            type_counts += types
            for k, v in counts.items():
                dirt[k] += v
            if days_left >= cfg.late_min_days and cfg.late_rate > 0:
                late = (rng.random(len(lines)) < cfg.late_rate) & ~is_dup
                lag = rng.integers(cfg.late_min_days, cfg.late_max_days + 1, size=int(late.sum()))
                for idx, lg in zip(np.flatnonzero(late).tolist(), np.minimum(lag, days_left).tolist(), strict=True):
                    pending.setdefault(day + dt.timedelta(days=lg), []).append(lines[idx])
                dirt["late"] += int(late.sum())
                lines = list(map(lines.__getitem__, np.flatnonzero(~late).tolist()))
            writer.write(lines)
        writer.write(pending.pop(day, []))
        files += [str(p) for p in writer.commit()]
        rows_per_day[day.isoformat()] = writer.lines
    n_events = sum(rows_per_day.values())
    seconds = time.perf_counter() - t0
    return {
        "source": "simulated",
        "config": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(cfg).items()},
        "start": cfg.start_date.isoformat(),
        "end": cfg.end_date.isoformat(),
        "rows_per_day": rows_per_day,
        "n_events": n_events,
        "n_users": cfg.n_users,
        "n_items": cfg.n_items,
        "dirt": dirt,
        "event_types": {str(t): int(c) for t, c in zip(tables["etype"], type_counts, strict=True)},
        "files": files,
        "seconds": round(seconds, 3),
        "events_per_second": round(n_events / seconds) if seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: ``python -m jobs.simulator --lake PATH --users N --items N --days N --end-date YYYY-MM-DD --seed S``."""
    from core.settings import get_settings

    defaults = SimConfig()
    parser = argparse.ArgumentParser(prog="python -m jobs.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=None, help="lake root (default: RECSYS_LAKE_URI / .recsys/lake)")
    parser.add_argument("--users", type=int, default=defaults.n_users)
    parser.add_argument("--items", type=int, default=defaults.n_items)
    parser.add_argument("--categories", type=int, default=defaults.n_categories)
    parser.add_argument("--brands", type=int, default=defaults.n_brands)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=defaults.end_date)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--sessions-per-user-per-day", type=float, default=defaults.sessions_per_user_per_day)
    args = parser.parse_args(argv)
    cfg = SimConfig(
        n_users=args.users,
        n_items=args.items,
        n_categories=args.categories,
        n_brands=args.brands,
        days=args.days,
        end_date=args.end_date,
        seed=args.seed,
        sessions_per_user_per_day=args.sessions_per_user_per_day,
    )
    summary = simulate_to_landing(cfg, args.lake or get_settings().lake)
    shown = {k: v for k, v in summary.items() if k not in ("files", "config")}
    print(json.dumps(shown, indent=2))
    return summary


if __name__ == "__main__":
    main()
