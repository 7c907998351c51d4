"""TrainData builders: split rules, indexing, weights, features, gold round trip."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from evaluation.data import TrainData, price_bands
from tests.conftest import require_shared

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _events(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    """(user, item, event_type, day offset) → contract frame."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": [T0 + pd.Timedelta(days=r[3]) for r in rows],
        }
    )


EVENTS = _events(
    [
        ("u1", "a", "view", 0),
        ("u1", "a", "purchase", 30),
        ("u1", "b", "click", 1),
        ("u1", "d", "view", 2),
        ("u1", "c", "view", 2),  # same instant as d: ties broken by item_id, so c before d
        ("u1", "e", "view", 3),
        ("u2", "b", "view", 4),
        ("u2", "c", "view", 5),  # u2 has 2 items < min_user_items=3: all train
        ("u3", "x", "bogus", 5),  # unknown event type: dropped and counted
    ]
)
ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "z", "z"],
        "category": ["shoes", "bags", "shoes", None, "bags", "hats", "hats"],
        "brand": ["n", "n", "m", "m", None, "k", "k"],
        "price": [10.0, 20.0, 30.0, None, 50.0, 60.0, 60.0],
        "available": [True, True, False, True, None, True, True],
        "attributes": [["x", "y"], ["y"], [], None, ["z"], ["x"], ["x"]],
    }
)


def test_leave_one_out_split_and_index() -> None:
    data = TrainData.from_events(EVENTS, ITEMS, protocol="leave-one-out", cfg=load_config())
    assert list(data.user_ids) == ["u1", "u2"]
    assert list(data.item_ids) == ["a", "b", "c", "d", "e", "z"]  # catalogue-only z is indexed too
    ix = {v: i for i, v in enumerate(data.item_ids)}
    # u1 order by first_ts, ties by item_id: a, b, c, d, e → test e, valid d
    assert data.test[0].tolist() == [ix["e"]]
    assert data.valid[0].tolist() == [ix["d"]]
    assert data.sequences[0].tolist() == [ix["a"], ix["b"], ix["c"]]
    assert data.sequences[1].tolist() == [ix["b"], ix["c"]]
    assert 1 not in data.valid and 1 not in data.test
    assert data.meta["dropped_events"] == {"missing_field": 0, "unknown_event_type": 1}
    assert data.train.shape == (2, 6)


def test_weights_are_event_weighted_and_decayed() -> None:
    cfg = load_config()
    ref = T0 + pd.Timedelta(days=30)
    data = TrainData.from_events(EVENTS, None, protocol="leave-one-out", cfg=cfg, reference_ts=ref)
    w = cfg.events.weights
    half = cfg.events.half_life_days
    expected_a = w["view"] * 0.5 ** (30 / half) + w["purchase"]
    assert data.train[0, 0] == pytest.approx(expected_a)
    assert data.train[1, 1] == pytest.approx(w["view"] * 0.5 ** (26 / half))


def test_temporal_split_drops_cold_targets() -> None:
    cfg = load_config()
    cfg = cfg.replace(split={"temporal_test_fraction": 0.2, "temporal_valid_fraction": 0.2})
    ev = _events(
        [
            ("u1", "a", "view", 0),
            ("u1", "b", "view", 2),
            ("u2", "a", "view", 3),
            ("u1", "c", "view", 7),  # valid window (6, 8]: c not in train → dropped
            ("u2", "b", "view", 8),  # valid
            ("u1", "a", "view", 9),  # same pair as day 0: first_ts stays 0, train
            ("u3", "a", "view", 10),  # test window (8, 10]: u3 has no train item → dropped
            ("u2", "b", "click", 10),
            ("u1", "b", "purchase", 10),
        ]
    )
    data = TrainData.from_events(ev, None, protocol="temporal", cfg=cfg)
    ix = {v: i for i, v in enumerate(data.item_ids)}
    uix = {v: i for i, v in enumerate(data.user_ids)}
    assert list(data.user_ids) == ["u1", "u2"]  # u3's only row was a dropped cold target
    assert {u: v.tolist() for u, v in data.valid.items()} == {uix["u2"]: [ix["b"]]}
    assert data.meta["dropped_cold_targets"] == {"valid": 1, "test": 1}
    assert data.test == {}
    assert data.sequences[uix["u1"]].tolist() == [ix["a"], ix["b"]]


def test_item_features() -> None:
    data = TrainData.from_events(EVENTS, ITEMS, protocol="leave-one-out", cfg=load_config())
    f = data.item_features
    assert f is not None
    ix = {v: i for i, v in enumerate(data.item_ids)}
    assert f.category_names == ["", "bags", "hats", "shoes"]
    assert f.category[ix["a"]] == 3 and f.category[ix["d"]] == 0 and f.category[ix["z"]] == 2
    assert f.brand[ix["e"]] == 0 and f.brand[ix["a"]] == f.brand[ix["b"]] > 0
    assert f.price_band[ix["d"]] == 0
    assert f.price_band[ix["a"]] == 1 and f.price_band[ix["z"]] == 5
    assert not f.available[ix["c"]] and f.available[ix["e"]]
    assert f.attributes.shape == (6, 3)
    assert f.attributes[ix["a"]].toarray().tolist() == [[1, 1, 0]]
    assert f.attributes[ix["d"]].nnz == 0
    assert data.meta["duplicate_catalogue_items"] == 1


def test_price_bands_like_ntile() -> None:
    prices = pd.Series([5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, np.nan])
    ids = pd.Series([f"i{k}" for k in range(8)])
    # 7 known prices in 5 bands: sizes 2, 2, 1, 1, 1 in price order 1,2 | 3,4 | 5 | 6 | 7
    assert price_bands(prices, ids).tolist() == [3, 1, 1, 2, 2, 4, 5, 0]


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="event_type"):
        TrainData.from_events(EVENTS.drop(columns=["event_type"]), None, cfg=load_config())
    with pytest.raises(ValueError, match="protocol"):
        TrainData.from_events(EVENTS, None, protocol="random", cfg=load_config())


def _write_gold(data_events: pd.DataFrame, items: pd.DataFrame, root: Path) -> None:
    """Gold tables in the documented schema, written with pandas (the Spark job writes the same columns)."""
    from evaluation.data import aggregate_interactions, split_interactions

    cfg = load_config()
    inter, _ = aggregate_interactions(data_events, cfg.events.weights, cfg.events.half_life_days)
    train, valid, test, _ = split_interactions(inter, "leave-one-out", cfg.split)
    for name, frame in (("split=train", train), ("split=valid", valid), ("split=test", test)):
        (root / name).mkdir(parents=True)
        if name != "split=train":
            frame = frame[["user_id", "item_id", "first_ts"]].rename(columns={"first_ts": "ts"})
        frame.to_parquet(root / name / "part-0.parquet", index=False)
    gold_items = items.drop_duplicates("item_id").assign(price_band=lambda f: price_bands(f["price"], f["item_id"]))
    (root / "items").mkdir()
    gold_items.to_parquet(root / "items" / "part-0.parquet", index=False)


def test_from_gold_matches_from_events(tmp_path: Path) -> None:
    _write_gold(EVENTS, ITEMS, tmp_path)
    a = TrainData.from_events(EVENTS, ITEMS, protocol="leave-one-out", cfg=load_config())
    b = TrainData.from_gold(tmp_path)
    assert list(a.user_ids) == list(b.user_ids) and list(a.item_ids) == list(b.item_ids)
    assert np.allclose(a.train.toarray(), b.train.toarray())
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    assert {k: v.tolist() for k, v in a.test.items()} == {k: v.tolist() for k, v in b.test.items()}
    assert {k: v.tolist() for k, v in a.valid.items()} == {k: v.tolist() for k, v in b.valid.items()}
    assert a.item_features.price_band.tolist() == b.item_features.price_band.tolist()
    assert a.item_features.category.tolist() == b.item_features.category.tolist()


def test_from_gold_missing_partition_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="split=train"):
        TrainData.from_gold(tmp_path)


def beauty_events() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Amazon Beauty as purchases with order-preserving synthetic timestamps (one second apart)."""
    root = require_shared("amazon-beauty")
    users, items = [], []
    for line in (root / "Beauty.txt").read_text().splitlines():
        parts = line.split()
        users += [parts[0]] * (len(parts) - 1)
        items += parts[1:]
    frame = pd.DataFrame({"user_id": users, "item_id": items, "event_type": "purchase"})
    frame["ts"] = T0 + pd.to_timedelta(frame.groupby("user_id").cumcount(), unit="s")
    attrs = json.loads((root / "Beauty_item2attributes.json").read_text())
    catalogue = pd.DataFrame({"item_id": list(attrs), "attributes": [[str(a) for a in v] for v in attrs.values()]})
    return frame, catalogue


@pytest.mark.shared
@pytest.mark.slow
def test_beauty_builds_with_the_papers_counts() -> None:
    events, catalogue = beauty_events()
    start = time.perf_counter()
    data = TrainData.from_events(events, catalogue, protocol="leave-one-out", cfg=load_config())
    seconds = time.perf_counter() - start
    assert (data.n_users, data.n_items) == (22363, 12101)
    assert len(data.test) == len(data.valid) == 22363
    assert data.train.nnz + 2 * 22363 == 198502
    print(f"Beauty built in {seconds:.2f}s")
