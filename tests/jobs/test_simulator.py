"""The shop simulator: deterministic, streaming, dirty at the configured rates, and learnable."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from core.contract import EVENT_TYPES
from jobs.simulator import SimConfig, main, simulate_to_landing

END = dt.date(2026, 3, 10)


def _tiny(**overrides: object) -> SimConfig:
    base: dict[str, object] = {
        "n_users": 300,
        "n_items": 200,
        "n_categories": 8,
        "n_brands": 20,
        "days": 6,
        "end_date": END,
        "seed": 7,
    }
    base.update(overrides)
    return SimConfig(**base)  # type: ignore[arg-type]


def _read_landing(root: Path) -> list[tuple[dt.date, dict]]:
    rows = []
    for f in sorted((root / "landing" / "events").glob("dt=*/*.jsonl")):
        day = dt.date.fromisoformat(f.parent.name[3:])
        rows += [(day, json.loads(line)) for line in f.read_text().splitlines()]
    return rows


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_same_seed_same_bytes_and_rerun_replaces(tmp_path: Path) -> None:
    cfg = _tiny()
    a = simulate_to_landing(cfg, tmp_path / "a")
    simulate_to_landing(cfg, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    again = simulate_to_landing(cfg, tmp_path / "a")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert again["rows_per_day"] == a["rows_per_day"]
    other = simulate_to_landing(_tiny(seed=8), tmp_path / "c")
    assert other["rows_per_day"] != a["rows_per_day"]


def test_streams_one_file_per_day_and_stale_parts_go(tmp_path: Path) -> None:
    summary = simulate_to_landing(_tiny(max_events_per_file=500), tmp_path)
    days = sorted((tmp_path / "landing" / "events").glob("dt=*"))
    assert [d.name for d in days] == [f"dt={END - dt.timedelta(days=i)}" for i in range(5, -1, -1)]
    assert summary["start"] == str(END - dt.timedelta(days=5)) and summary["end"] == str(END)
    for d in days:
        parts = sorted(d.glob("sim-7-*.jsonl"))
        n_lines = sum(len(p.read_text().splitlines()) for p in parts)
        assert n_lines == summary["rows_per_day"][d.name[3:]] > 500
        assert len(parts) == -(-n_lines // 500)
        assert not list(d.glob(".*")), "no temp files left behind"
    simulate_to_landing(_tiny(), tmp_path)
    assert all(sorted(p.name for p in d.glob("*.jsonl")) == ["sim-7-0.jsonl"] for d in days)
    catalogue = [json.loads(line) for line in (tmp_path / "landing" / "items" / "items.jsonl").read_text().splitlines()]
    assert len(catalogue) == 200
    assert set(catalogue[0]) == {"item_id", "category", "brand", "price", "available", "title", "attributes"}
    assert 0 < sum(not c["available"] for c in catalogue) < 30


def test_dirt_at_configured_rates(tmp_path: Path) -> None:
    cfg = _tiny(
        n_users=1000,
        days=8,
        duplicate_rate=0.04,
        missing_price_rate=0.05,
        unknown_event_rate=0.02,
        late_rate=0.03,
        bot_user_fraction=0.003,
        bot_active_prob=1.0,
    )
    summary = simulate_to_landing(cfg, tmp_path)
    rows = _read_landing(tmp_path)
    n = len(rows)
    assert n == summary["n_events"]

    ids = Counter(r["event_id"] for _, r in rows)
    dup_lines = n - len(ids)
    assert dup_lines == summary["dirt"]["duplicates"]
    assert 0.025 < dup_lines / n < 0.055

    missing = sum(r["price"] is None for _, r in rows)
    assert len({r["event_id"] for _, r in rows if r["price"] is None}) == summary["dirt"]["missing_price"]
    assert 0.035 < missing / n < 0.065

    unknown = [r for _, r in rows if r["event_type"] not in EVENT_TYPES]
    assert {r["event_type"] for r in unknown} == set(cfg.unknown_event_types)
    assert 0.013 < len(unknown) / n < 0.027

    late = [(day, r) for day, r in rows if dt.date.fromisoformat(r["ts"][:10]) < day]
    assert len(late) == summary["dirt"]["late"]
    eligible = sum(dt.date.fromisoformat(r["ts"][:10]) <= END - dt.timedelta(days=cfg.late_min_days) for _, r in rows)
    assert 0.02 < len(late) / eligible < 0.04
    assert all(
        cfg.late_min_days <= (day - dt.date.fromisoformat(r["ts"][:10])).days <= cfg.late_max_days for day, r in late
    )
    assert not [r for day, r in rows if dt.date.fromisoformat(r["ts"][:10]) > day], "no event lands before it happens"

    per_minute = Counter((r["user_id"], r["ts"][:16]) for _, r in rows)
    bots = {u for (u, _), c in per_minute.items() if c > 60}
    assert len(bots) == summary["dirt"]["bot_users"] == 3
    assert max(per_minute.values()) >= 100


def test_funnel_order_and_rates(tmp_path: Path) -> None:
    summary = simulate_to_landing(_tiny(duplicate_rate=0, late_rate=0.05), tmp_path)
    first_seen: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for _, r in _read_landing(tmp_path):
        key = (r["session_id"], r["user_id"], r["item_id"])
        first_seen[key][r["event_type"]] = min(first_seen[key].get(r["event_type"], r["ts"]), r["ts"])
    purchases = [v for v in first_seen.values() if "purchase" in v]
    assert purchases
    for v in purchases:
        assert v["view"] < v["click"] < v["add_to_cart"] < v["purchase"]
    counts = summary["event_types"]
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert 0.2 < counts["click"] / counts["view"] < 0.4
    assert 0.005 < counts["purchase"] / counts["view"] < 0.06


def test_next_item_is_far_more_predictable_than_popularity(tmp_path: Path) -> None:
    simulate_to_landing(_tiny(n_users=800, n_items=400, days=10, bot_user_fraction=0), tmp_path)
    sessions: dict[str, list[tuple[str, str]]] = defaultdict(list)
    popularity: Counter[str] = Counter()
    for _, r in _read_landing(tmp_path):
        if r["event_type"] == "view":
            sessions[r["session_id"]].append((r["ts"], r["item_id"]))
            popularity[r["item_id"]] += 1
    follows: dict[str, Counter[str]] = defaultdict(Counter)
    for views in sessions.values():
        items = [i for _, i in sorted(views)]
        for a, b in pairwise(items):
            if a != b:
                follows[a][b] += 1
    top3_share = [
        sum(c for _, c in nxt.most_common(3)) / sum(nxt.values()) for nxt in follows.values() if sum(nxt.values()) >= 20
    ]
    pop_top3_share = sum(c for _, c in popularity.most_common(3)) / sum(popularity.values())
    assert len(top3_share) > 50
    assert float(np.mean(top3_share)) > 0.4
    assert float(np.mean(top3_share)) > 4 * pop_top3_share


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="n_items"):
        SimConfig(n_items=0)
    with pytest.raises(ValueError, match="unknown_event_types"):
        SimConfig(unknown_event_types=("view",))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = main(
        [
            "--lake",
            str(tmp_path),
            "--users",
            "50",
            "--items",
            "40",
            "--days",
            "2",
            "--end-date",
            "2026-01-02",
            "--seed",
            "3",
        ]
    )
    assert json.loads(capsys.readouterr().out)["n_events"] == summary["n_events"] > 0
    assert sorted(p.name for p in (tmp_path / "landing" / "events").iterdir()) == ["dt=2026-01-01", "dt=2026-01-02"]
    assert (tmp_path / "landing" / "events" / "dt=2026-01-02" / "sim-3-0.jsonl").exists()
