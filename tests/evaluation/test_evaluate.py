"""Evaluation protocol: exclusion, LOO history, alignment of a model trained on other indices, speed."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.config import load_config
from evaluation.data import TrainData
from evaluation.evaluate import evaluate, split_histories
from models.base import EpochCallback, Recommender
from models.popularity import PopularityRecommender
from tests.evaluation.test_data import EVENTS, ITEMS, beauty_events


class FixedScores(Recommender):
    """A real (if trivial) model: one fixed score per item, known by external id."""

    name = "fixed-scores-test"

    def __init__(self, scores: dict[str, float]) -> None:
        super().__init__()
        self._by_id = scores

    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        self._col = np.array([self._by_id.get(str(i), 0.0) for i in data.item_ids], dtype=np.float32)

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        self.seen_histories = [np.asarray(h).tolist() for h in histories]
        return np.ones((len(users), 1), dtype=np.float32)

    def item_matrix(self) -> np.ndarray:
        return self._col[:, None]

    def _state(self) -> dict[str, np.ndarray]:
        return {"col": self._col}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._col = state["col"]


@pytest.fixture
def data() -> TrainData:
    return TrainData.from_events(EVENTS, ITEMS, protocol="leave-one-out", cfg=load_config())


def test_test_split_sees_valid_item_and_excludes_it(data: TrainData) -> None:
    ix = {v: i for i, v in enumerate(data.item_ids)}
    # d (valid) scores highest, then e (test): d must be excluded at test time so e ranks first
    model = FixedScores({"d": 10.0, "e": 9.0, "a": 100.0, "z": 1.0}).fit(data)
    out: dict[str, list[str]] = {}
    m = evaluate(model, data, split="test", ks=(1, 2), topk_out=out)
    assert model.seen_histories == [[ix["a"], ix["b"], ix["c"], ix["d"]]]
    assert out == {"u1": ["e", "z"]}  # a, b, c (train) and d (valid) are excluded
    assert m["hr@1"] == 1.0 and m["ndcg@1"] == 1.0 and m["n_users"] == 1.0
    assert m["coverage@1"] == pytest.approx(1 / 6)


def test_valid_split_sees_train_only(data: TrainData) -> None:
    model = FixedScores({"e": 10.0, "d": 5.0}).fit(data)
    m = evaluate(model, data, split="valid", ks=(1, 2))
    assert model.seen_histories == [data.sequences[0].tolist()]
    assert m["hr@1"] == 0.0 and m["hr@2"] == 1.0
    assert m["mrr@2"] == pytest.approx(0.5)
    assert split_histories(data, "test", np.array([0]))[0].tolist()[-1] == data.valid[0][0]


def test_exclude_seen_off_lets_train_items_rank(data: TrainData) -> None:
    model = FixedScores({"a": 100.0, "e": 1.0}).fit(data)
    out: dict[str, list[str]] = {}
    evaluate(model, data, ks=(1,), exclude_seen=False, topk_out=out)
    assert out["u1"] == ["a"]


def test_model_on_other_indices_is_aligned_by_id(data: TrainData, tmp_path: Path) -> None:
    model = FixedScores({"e": 2.0, "z": 1.0}).fit(data)
    model.item_ids = np.array(["z", "e", "unknown"], dtype=object)  # yesterday's catalogue
    model._col = np.array([1.0, 2.0, 50.0], dtype=np.float32)
    model.user_ids = np.array(["someone-else"], dtype=object)
    path = tmp_path / "topk.json"
    m = evaluate(model, data, ks=(3,), topk_out=path)
    assert json.loads(path.read_text()) == {"u1": ["e", "z"]}  # items the model lacks are not recommended
    assert m["hr@3"] == 1.0


@pytest.mark.shared
@pytest.mark.slow
def test_popularity_on_beauty_is_sane() -> None:
    events, catalogue = beauty_events()
    data = TrainData.from_events(events, catalogue, protocol="leave-one-out", cfg=load_config())
    model = PopularityRecommender(by="users").fit(data)
    start = time.perf_counter()
    m = evaluate(model, data)
    seconds = time.perf_counter() - start
    assert m["n_users"] == 22363
    # S3-Rec paper PopRec on this file: HR@10 0.0152, NDCG@10 0.0068 (same protocol)
    assert 0.008 < m["hr@10"] < 0.03 and 0.003 < m["ndcg@10"] < 0.015
    assert 0 < m["diversity@10"] <= 1 and m["novelty@10"] > 0
    print(f"popularity on Beauty: {m} in {seconds:.2f}s")
