"""The Spark path (ingest → clean → features → split → ``TrainData.from_gold``) and the pandas path used by
the offline CLI (``TrainData.from_events``) build the same dataset from the same events, for both protocols."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.lake import Lake
from evaluation.data import TrainData
from jobs import clean, features, ingest, split
from jobs.loaders import land

pytestmark = [pytest.mark.spark, pytest.mark.slow]

RUN_DATE = dt.date(2026, 2, 10)


def _events(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-02-01", tz="UTC")
    kinds = ["view", "click", "add_to_cart", "purchase"]
    rows = []
    for u in range(40):
        n = int(rng.integers(2, 9))
        for j in range(n):
            ts = start + pd.Timedelta(minutes=int(rng.integers(0, 60 * 24 * 9)))
            rows.append(
                {
                    "user_id": f"u{u:02d}",
                    "item_id": f"i{int(rng.zipf(1.6)) % 30:02d}",
                    "event_type": kinds[int(rng.integers(0, 4))],
                    "ts": ts,
                    "price": 10.0,
                    "session_id": f"s{u}-{j}",
                }
            )
    events = pd.DataFrame(rows)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(30)],
            "category": [f"c{i % 4}" for i in range(30)],
            "brand": [f"b{i % 3}" for i in range(30)],
            "price": np.linspace(5, 50, 30),
            "available": True,
        }
    )
    return events, items


def _as_frame(data: TrainData) -> dict[str, object]:
    coo = data.train.tocoo()
    train = {
        (str(data.user_ids[u]), str(data.item_ids[i])): round(float(w), 5)
        for u, i, w in zip(coo.row, coo.col, coo.data, strict=True)
    }
    seqs = {str(data.user_ids[u]): [str(data.item_ids[i]) for i in s] for u, s in enumerate(data.sequences) if len(s)}

    def targets(split_map: dict[int, np.ndarray]) -> dict[str, list[str]]:
        return {str(data.user_ids[u]): sorted(str(data.item_ids[i]) for i in v) for u, v in split_map.items()}

    return {"train": train, "sequences": seqs, "valid": targets(data.valid), "test": targets(data.test)}


@pytest.mark.parametrize("protocol", ["leave-one-out", "temporal"])
def test_spark_and_pandas_paths_agree(spark, tmp_path: Path, protocol: str) -> None:
    events, items = _events()
    source = tmp_path / "src"
    source.mkdir()
    events.assign(ts=events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_json(
        source / "events.jsonl", orient="records", lines=True
    )
    items.to_json(source / "items.jsonl", orient="records", lines=True)
    lake = tmp_path / "lake"
    cfg = load_config()
    cfg = cfg.replace(split={"protocol": protocol})
    land(str(source), "events", str(lake), RUN_DATE)
    for job in (ingest, clean, features, split):
        job.run(str(lake), RUN_DATE, cfg, spark, window_days=30)
    from_gold = TrainData.from_gold(Lake(lake).gold(RUN_DATE), cfg)

    reference = pd.Timestamp(RUN_DATE + dt.timedelta(days=1), tz="UTC")
    from_events = TrainData.from_events(events, items, protocol=protocol, cfg=cfg, reference_ts=reference)

    spark_side, pandas_side = _as_frame(from_gold), _as_frame(from_events)
    assert spark_side["test"] == pandas_side["test"]
    assert spark_side["valid"] == pandas_side["valid"]
    assert spark_side["sequences"] == pandas_side["sequences"]
    assert spark_side["train"].keys() == pandas_side["train"].keys()
    for pair, weight in spark_side["train"].items():
        assert weight == pytest.approx(pandas_side["train"][pair], rel=1e-3), pair
    assert len(spark_side["test"]) > 5
