"""Loaders: hand-written files in each format → the contract; landing is partitioned and idempotent."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from core.contract import EVENT_COLUMNS, ITEM_COLUMNS
from jobs.loaders import data_end_date, land, read_diginetica, read_events, read_s3rec
from tests.conftest import require_shared

EVENTS_CSV = """event_id,user_id,item_id,event_type,ts,session_id,price,quantity
e1,u1,i1,view,2026-02-01T10:00:00Z,s1,9.5,
e2,u1,i1,purchase,2026-02-01T12:30:00+02:00,s1,9.5,2
e3,u2,i2,click,2026-02-02 08:00:00,,,
"""
ITEMS_CSV = """item_id,category,brand,price,available,attributes
i1,shoes,acme,9.5,true,"[""red"", ""leather""]"
i2,hats,,20,false,wool|blue
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_events_csv_folder_with_catalogue(tmp_path: Path) -> None:
    _write(tmp_path / "drop" / "events.csv", EVENTS_CSV)
    _write(tmp_path / "drop" / "items.csv", ITEMS_CSV)
    events, items = read_events(tmp_path / "drop")
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert str(events["ts"].dt.tz) == "UTC"
    assert events["ts"].tolist() == [
        pd.Timestamp("2026-02-01T10:00:00Z"),
        pd.Timestamp("2026-02-01T10:30:00Z"),
        pd.Timestamp("2026-02-02T08:00:00Z"),
    ]
    assert events["user_id"].tolist() == ["u1", "u1", "u2"]
    assert events["quantity"].tolist()[1] == 2 and pd.isna(events["quantity"].iloc[0])
    assert events["price"].iloc[0] == 9.5 and pd.isna(events["price"].iloc[2])
    assert events["session_id"].iloc[2] is None
    assert items is not None and list(items.columns) == list(ITEM_COLUMNS)
    assert items["attributes"].tolist() == [["red", "leather"], ["wool", "blue"]]
    assert items["available"].tolist() == [True, False]
    assert items["brand"].iloc[1] is None
    assert events.attrs["report"]["ts_missing"] == 0


def test_read_events_jsonl_and_parquet_agree(tmp_path: Path) -> None:
    csv_events, _ = read_events(_write(tmp_path / "e.csv", EVENTS_CSV))
    lines = [
        json.dumps({k: v for k, v in r.items() if v is not None})
        for r in pd.read_csv(tmp_path / "e.csv", dtype=str)
        .astype(object)
        .where(lambda f: f.notna(), None)
        .to_dict("records")
    ]
    _write(tmp_path / "e.jsonl", "\n".join([*lines, "not json", "[1, 2]"]) + "\n")
    jsonl_events, items = read_events(tmp_path / "e.jsonl")
    assert items is None
    assert jsonl_events.attrs["report"]["bad_lines"] == 2
    pd.testing.assert_frame_equal(jsonl_events, csv_events, check_dtype=False)
    csv_events.to_parquet(tmp_path / "e.parquet")
    parquet_events, _ = read_events(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(parquet_events, csv_events, check_dtype=False)


def test_missing_item_id_is_named(tmp_path: Path) -> None:
    bad = _write(tmp_path / "e.csv", "user_id,event_type,ts\nu1,view,2026-01-01T00:00:00Z\n")
    with pytest.raises(ValueError, match="'item_id' is missing"):
        read_events(bad)
    _write(tmp_path / "ok" / "e.csv", EVENTS_CSV)
    _write(tmp_path / "ok" / "items.csv", "sku,category\ni1,shoes\n")
    with pytest.raises(ValueError, match="item column 'item_id'"):
        read_events(tmp_path / "ok")


def test_read_s3rec_order_preserving(tmp_path: Path) -> None:
    _write(tmp_path / "Toy.txt", "7 3 1 2\n8 1 5 1\n")
    _write(tmp_path / "Toy_item2attributes.json", json.dumps({"1": [4, 9], "2": [4], "3": [], "9": [1]}))
    events, items = read_s3rec(tmp_path, anchor=dt.datetime(2025, 5, 1, tzinfo=dt.UTC))
    assert events["user_id"].tolist() == ["7"] * 3 + ["8"] * 3
    assert events["item_id"].tolist() == ["3", "1", "2", "1", "5", "1"]
    assert set(events["event_type"]) == {"purchase"}
    base = pd.Timestamp("2025-05-01T00:00:00Z")
    assert events["ts"].tolist() == [base + pd.Timedelta(hours=i) for i in (0, 1, 2, 0, 1, 2)]
    assert events["event_id"].is_unique
    assert items["item_id"].tolist() == ["1", "2", "3", "5", "9"]
    assert items["attributes"].tolist() == [["4", "9"], ["4"], [], [], ["1"]]
    assert items["category"].isna().all() and items["price"].isna().all() and items["available"].all()
    assert events.attrs["report"]["items_without_attributes"] == 1
    assert data_end_date(tmp_path, "s3rec") == dt.date(2026, 1, 1)


def test_s3rec_file_path_means_that_file_in_a_folder_of_several(tmp_path: Path) -> None:
    """A folder holding Beauty.txt and Sports.txt: the file path picks one, with its own attribute file."""
    _write(tmp_path / "Beauty.txt", "1 10 11\n")
    _write(tmp_path / "Beauty_item2attributes.json", json.dumps({"10": [1]}))
    _write(tmp_path / "Sports.txt", "2 20 21 22\n")
    _write(tmp_path / "Sports_item2attributes.json", json.dumps({"20": [7], "21": [8]}))
    events, items = read_s3rec(tmp_path / "Sports.txt")
    assert events["item_id"].tolist() == ["20", "21", "22"]
    assert dict(zip(items["item_id"], items["attributes"], strict=True)) == {"20": ["7"], "21": ["8"], "22": []}
    with pytest.raises(ValueError, match=r"found \['Beauty.txt', 'Sports.txt'\]; pass one of them as the path"):
        read_s3rec(tmp_path)
    (tmp_path / "Beauty_item2attributes.json").unlink()
    _, beauty_items = read_s3rec(tmp_path / "Beauty.txt")
    assert beauty_items["attributes"].tolist() == [[], []]  # never Sports' attribute file


def test_read_diginetica_fills_anonymous_users(tmp_path: Path) -> None:
    _write(
        tmp_path / "train-item-views.csv",
        "session_id;user_id;item_id;timeframe;eventdate\n1;NA;81;1500;2016-05-09\n1;NA;82;90000;2016-05-09\n2;42;81;0;2016-05-10\n",
    )
    events, items = read_diginetica(tmp_path)
    assert events["user_id"].tolist() == ["anon-1", "anon-1", "42"]
    assert events["ts"].tolist() == [
        pd.Timestamp("2016-05-09T00:00:01.500Z"),
        pd.Timestamp("2016-05-09T00:01:30Z"),
        pd.Timestamp("2016-05-10T00:00:00Z"),
    ]
    assert set(events["event_type"]) == {"view"}
    assert events["session_id"].tolist() == ["1", "1", "2"]
    assert events.attrs["report"]["anonymous_users_filled"] == 2
    assert items["item_id"].tolist() == ["81", "82"]
    assert data_end_date(tmp_path, "diginetica") == dt.date(2016, 5, 10)


def test_land_partitions_by_day_and_rerun_replaces(tmp_path: Path) -> None:
    _write(tmp_path / "src" / "events.csv", EVENTS_CSV)
    _write(tmp_path / "src" / "items.csv", ITEMS_CSV)
    lake = tmp_path / "lake"
    report = land(tmp_path / "src", "events", lake, dt.date(2026, 2, 2))
    assert report["rows_per_day"] == {"2026-02-01": 2, "2026-02-02": 1}
    assert (report["start"], report["end"], report["n_users"], report["n_items"]) == ("2026-02-01", "2026-02-02", 2, 2)
    day1 = lake / "landing" / "events" / "dt=2026-02-01" / "events-0.jsonl"
    rows = [json.loads(line) for line in day1.read_text().splitlines()]
    assert rows[1]["ts"] == "2026-02-01T10:30:00.000Z" and rows[1]["quantity"] == 2 and rows[0]["quantity"] is None
    landed, items = read_events(lake / "landing")
    original, _ = read_events(tmp_path / "src")
    pd.testing.assert_frame_equal(landed, original, check_dtype=False)
    assert items is not None and len(items) == 2

    land(tmp_path / "src", "events", lake, dt.date(2026, 2, 2))
    assert len(read_events(lake / "landing")[0]) == 3
    # a new day's drop keeps the days landed before it ...
    _write(tmp_path / "src" / "events.csv", EVENTS_CSV.splitlines()[0] + "\n" + EVENTS_CSV.splitlines()[3] + "\n")
    again = land(tmp_path / "src", "events", lake, dt.date(2026, 2, 2))
    assert again["stale_files_removed"] == 0 and day1.exists()
    assert len(read_events(lake / "landing")[0]) == 3
    # ... while a re-landed source that no longer has a day inside its span removes that day's file
    day3 = EVENTS_CSV.splitlines()[1].replace("e1,", "e9,").replace("2026-02-01", "2026-02-03")
    _write(
        tmp_path / "src" / "events.csv", EVENTS_CSV.splitlines()[0] + "\n" + EVENTS_CSV.splitlines()[1] + "\n" + day3
    )
    spanning = land(tmp_path / "src", "events", lake, dt.date(2026, 2, 3))
    assert spanning["stale_files_removed"] == 1 and day1.exists()
    assert not (lake / "landing" / "events" / "dt=2026-02-02" / "events-0.jsonl").exists()
    assert data_end_date(lake / "landing" / "events", "events") == dt.date(2026, 2, 3)
    assert data_end_date(tmp_path / "src", "events") == dt.date(2026, 2, 3)


def test_land_simulated_ends_at_run_date(tmp_path: Path) -> None:
    report = land(None, "simulated", tmp_path, dt.date(2026, 4, 30), users=60, items=50, days=3, seed=1)
    assert (report["start"], report["end"]) == ("2026-04-28", "2026-04-30")
    assert sorted(report["rows_per_day"]) == ["2026-04-28", "2026-04-29", "2026-04-30"]
    assert (report["n_users"], report["n_items"]) == (60, 50)
    with pytest.raises(ValueError, match="colour"):
        land(None, "simulated", tmp_path, dt.date(2026, 4, 30), colour="red")
    with pytest.raises(ValueError, match="format 'csv' is unknown"):
        land(tmp_path, "csv", tmp_path, dt.date(2026, 4, 30))


@pytest.mark.shared
def test_real_amazon_beauty() -> None:
    events, items = read_s3rec(require_shared("amazon-beauty"))
    assert (events["user_id"].nunique(), events["item_id"].nunique(), len(events)) == (22_363, 12_101, 198_502)
    assert len(items) == 12_101 and items["attributes"].map(len).sum() > 3 * 12_101
    first = events.groupby("user_id", sort=False).head(1)
    assert (first["ts"] == pd.Timestamp("2026-01-01T00:00:00Z")).all()
    assert events.groupby("user_id", sort=False)["ts"].is_monotonic_increasing.all()


@pytest.mark.shared
def test_real_diginetica(tmp_path: Path) -> None:
    source = require_shared("diginetica-sample")
    events, items = read_diginetica(source)
    assert (len(events), events["item_id"].nunique(), len(items), events["session_id"].nunique()) == (
        12_391,
        7_139,
        7_139,
        2_986,
    )
    assert events["ts"].min().date() == dt.date(2016, 1, 3) and events["ts"].max().date() == dt.date(2016, 6, 1)
    assert (
        events.attrs["report"]["anonymous_users_filled"] == int((events["user_id"].str.startswith("anon-")).sum()) > 0
    )
    assert data_end_date(source, "diginetica") == dt.date(2016, 6, 1)
    report = land(source, "diginetica", tmp_path, dt.date(2016, 6, 1))
    assert sum(report["rows_per_day"].values()) == 12_391 and report["converted"]["anonymous_users_filled"] > 0


def test_s3rec_synthetic_timestamps_never_look_like_bots() -> None:
    """No Beauty user may trip the clean job's bot thresholds because of the synthetic clock."""
    from core.config import load_config

    events, _ = read_s3rec(require_shared("amazon-beauty"))
    limits = load_config().clean
    per_minute = events.groupby([events["user_id"], events["ts"].dt.floor("min")]).size().max()
    per_day = events.groupby([events["user_id"], events["ts"].dt.floor("D")]).size().max()
    assert per_minute <= limits.bot_max_events_per_minute
    assert per_day <= limits.bot_max_events_per_day
