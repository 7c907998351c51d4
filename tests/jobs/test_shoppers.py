"""Simulated shoppers browse the real API (uvicorn) and click by position bias × hidden preference: a model
that ranks by that preference earns a higher CTR than popularity, arm by arm in one A/B experiment."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from core.experiments import new_document
from core.lake import Lake
from core.registry import ServingRegistry
from jobs.shoppers import ShopperConfig, Shoppers, attractiveness, position_bias
from jobs.simulator import SimConfig, build_shop, item_id, user_id
from serving.app import create_app
from serving.auth import KeyRing
from tests.core.test_registry import ToyRecommender
from tests.serving.clusters import TEST_KEY, TEST_KEY_RECORD, live_cfg, served, settings_for

SIM = SimConfig(n_users=150, n_items=300, n_categories=10, n_brands=30, seed=3)


def test_hidden_preference_and_position_bias() -> None:
    shop = build_shop(SIM)
    likes = attractiveness(shop, np.arange(SIM.n_users))
    assert likes.shape == (SIM.n_users, SIM.n_items)
    assert likes.min() >= 0.0 and likes.max() <= 1.0
    assert (likes[:, ~shop.item_available] == 0).all(), "nobody clicks what cannot be bought"
    user = 0
    favourite = shop.user_categories[user, np.argmax(np.diff(np.r_[0.0, shop.user_category_cdf[user]]))]
    in_taste = likes[user, (shop.item_category == favourite) & shop.item_available].mean()
    assert in_taste > 5 * likes[user, shop.item_category != favourite].mean(), "tastes drive attractiveness"
    bias = position_bias(np.arange(1, 11), 1.0)
    assert bias[0] == 1.0 and bias[9] == pytest.approx(0.1) and (np.diff(bias) < 0).all()


def test_complement_interest_raises_the_complements_of_the_last_item() -> None:
    shop = build_shop(SIM)
    user, last = 0, int(np.flatnonzero(shop.item_available)[0])
    recent = {user_id(user): [item_id(5), item_id(last)]}
    tastes = Shoppers(SIM, ShopperConfig(n_users=10), shop, recent)._likes(user)
    assert np.array_equal(tastes, attractiveness(shop, np.asarray([user]))[0]), "0 (default): tastes only"
    habit = Shoppers(SIM, ShopperConfig(n_users=10, complement_interest=1.0), shop, recent)._likes(user)
    complements = shop.complements[last]
    weights = np.diff(np.r_[0.0, shop.complement_cdf])
    expected = np.where(shop.item_available[complements], np.maximum(tastes[complements], weights), 0.0)
    assert np.allclose(habit[complements], expected) and habit[complements].max() > tastes[complements].max()
    others = np.setdiff1d(np.arange(SIM.n_items), complements)
    assert np.array_equal(habit[others], tastes[others])


def _toy(users: np.ndarray, items: np.ndarray) -> ToyRecommender:
    model = ToyRecommender(profile="quick")
    model.user_ids = np.asarray([user_id(u) for u in range(SIM.n_users)], dtype=object)
    model.item_ids = np.asarray([item_id(i) for i in range(SIM.n_items)], dtype=object)
    model.users, model.items = users.astype(np.float32), items.astype(np.float32)
    return model


@pytest.mark.integration
def test_a_model_that_ranks_by_the_hidden_preference_earns_a_higher_ctr(tmp_path: Path) -> None:
    shop = build_shop(SIM)
    oracle = _toy(attractiveness(shop, np.arange(SIM.n_users)), np.eye(SIM.n_items))
    popular = _toy(np.ones((SIM.n_users, 1)), shop.item_popularity[:, None])
    registry = ServingRegistry(str(tmp_path / "registry"))
    registry.publish(popular.export(tmp_path / "popular"), "shop", 1)
    registry.publish(oracle.export(tmp_path / "oracle"), "shop", 2)
    registry.set_champion("shop", 1)
    registry.write_experiment(new_document("ctr", ("shop", "1"), [("shop", "2")], salt="shoppers"))

    settings = settings_for(tmp_path / "home", tmp_path / "registry")
    app = create_app(settings, cfg=live_cfg(), poll=False, keys=KeyRing([TEST_KEY_RECORD]))
    cfg = ShopperConfig(n_users=120, days=2, end_date=dt.date(2024, 3, 2), sessions_per_day=1.0, pages_per_session=2)
    with served(app) as base:
        report = Shoppers(SIM, cfg, shop).run(base, TEST_KEY)
        metrics = app.state.metrics.registry

    assert report.errors == [] and report.total.requests > 300
    control, treatment = report.by_arm["ctr/control"], report.by_arm["ctr/treatment"]
    assert control.impressions > 1000 and treatment.impressions > 1000
    # two-proportion z-test: the oracle's CTR is higher, by far more than chance
    pooled = (control.clicks + treatment.clicks) / (control.impressions + treatment.impressions)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.impressions + 1 / treatment.impressions))
    assert (treatment.ctr - control.ctr) / se > 5, (control, treatment)
    assert treatment.ctr > 2 * control.ctr, (control.ctr, treatment.ctr)
    assert treatment.purchases > control.purchases

    # the API saw exactly those clicks, attributed to the arm that served them
    for variant, tally in (("control", control), ("treatment", treatment)):
        attributed = metrics.get_sample_value(
            "mercato_attributed_events_total", {"experiment": "ctr", "variant": variant, "event_type": "click"}
        )
        assert attributed == tally.clicks
    assert report.events_posted == report.total.clicks + report.total.carts + report.total.purchases

    # events carry request_id, position and a ts in the simulated days; exposures landed per request
    lake = Lake(settings.lake)
    events = [json.loads(line) for f in lake.landing_events().rglob("*.jsonl") for line in f.open()]
    clicks = [e for e in events if e["event_type"] == "click"]
    assert len(clicks) == report.total.clicks
    assert all(e["request_id"] and e["position"] >= 1 for e in clicks)
    assert {e["ts"][:10] for e in events} == {"2024-03-01", "2024-03-02"}
    exposures = [json.loads(line) for f in lake.landing_exposures().rglob("*.jsonl") for line in f.open()]
    assert len(exposures) == report.total.requests
    assert {e["request_id"] for e in clicks} <= {x["request_id"] for x in exposures}
