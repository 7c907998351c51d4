"""Popularity baseline and its cold-start fallback lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.base import Recommender
from models.popularity import PopularityRecommender, fallback_lists

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _data() -> TrainData:
    rows = []
    for u in range(12):
        items = ["hot", f"own{u}a", f"own{u}b"] if u < 10 else [f"own{u}a", f"own{u}b", f"own{u}c"]
        for k, item in enumerate(items):
            rows.append((f"u{u:02d}", item, "purchase" if item == "warm" else "view", T0 + pd.Timedelta(hours=k)))
    for u in range(5):
        rows.append((f"u{u:02d}", "warm", "view", T0 - pd.Timedelta(hours=1)))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    items = pd.DataFrame({"item_id": ["hot", "warm"], "category": ["a", "b"]})
    return TrainData.from_events(events, items, protocol="leave-one-out", cfg=load_config())


def test_popular_item_ranks_first_and_seen_items_never_appear() -> None:
    data = _data()
    model = PopularityRecommender(by="users").fit(data)
    ix = {v: i for i, v in enumerate(data.item_ids)}
    users = np.array([10, 11])  # the two users who never saw "hot"
    idx, _ = model.recommend(users, [data.sequences[u] for u in users], k=2)
    assert idx[:, 0].tolist() == [ix["hot"], ix["hot"]]
    assert idx[:, 1].tolist() == [ix["warm"], ix["warm"]]
    for row, u in enumerate(users):
        assert not set(idx[row]) & set(data.sequences[u].tolist())


def test_weight_vs_users_parameter() -> None:
    data = _data()
    by_users = PopularityRecommender(by="users").fit(data).item_matrix().ravel()
    by_weight = PopularityRecommender(by="weight").fit(data).item_matrix().ravel()
    assert by_users.max() == pytest.approx(1.0) and by_weight.max() == pytest.approx(1.0)
    assert not np.allclose(by_users, by_weight)
    with pytest.raises(ValueError, match="'by'"):
        PopularityRecommender(by="clicks").fit(data)


def test_export_load_identical(tmp_path: Path) -> None:
    data = _data()
    model = PopularityRecommender().fit(data)
    loaded = Recommender.load(model.export(tmp_path / "pop"))
    assert isinstance(loaded, PopularityRecommender)
    assert evaluate(loaded, data) == evaluate(model, data)


def test_fallback_lists() -> None:
    data = _data()
    fb = fallback_lists(data, n=3, by="users")
    assert [x["item_id"] for x in fb["overall"]][:2] == ["hot", "warm"]
    assert len(fb["overall"]) == 3
    assert [x["item_id"] for x in fb["by_category"]["a"]] == ["hot"]
    assert fb["by_category"]["b"][0]["score"] == pytest.approx(5.0)
