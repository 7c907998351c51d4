"""Every model of the zoo beats popularity on the simulated shop (quick profile, leave-one-out, full ranking)."""

from __future__ import annotations

import pytest

from core.config import load_config
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.base import get_model_class
from training.offline import load_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop() -> tuple[TrainData, float]:
    events, items = load_dataset("simulated", None)
    data = TrainData.from_events(events, items, protocol="leave-one-out", cfg=load_config())
    popularity = get_model_class("popularity")(profile="quick").fit(data)
    return data, evaluate(popularity, data, "test")["ndcg@10"]


def test_zoo_config_lists_every_shipped_model() -> None:
    from models.base import available_models
    from models.zoo import MODEL_MODULES

    shipped = {module.rsplit(".", 1)[-1] for module in MODEL_MODULES} | {"item_knn", "user_knn"}
    assert set(load_config().train.zoo) <= set(available_models())
    assert set(load_config().train.zoo) >= shipped - {"knn"}


@pytest.mark.parametrize("name", [m for m in load_config().train.zoo if m != "popularity"])
def test_model_beats_popularity_on_the_simulated_shop(shop: tuple[TrainData, float], name: str) -> None:
    data, popularity_ndcg = shop
    model = get_model_class(name)(profile="quick", device="cpu").fit(data)
    ndcg = evaluate(model, data, "test")["ndcg@10"]
    assert ndcg > popularity_ndcg, f"{name}: NDCG@10 {ndcg:.4f} does not beat popularity's {popularity_ndcg:.4f}"
