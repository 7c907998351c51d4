"""Right to erasure, lake side: a user planted in every layer by the real jobs is gone, byte for byte, after
``jobs.erasure``; everyone else's rows are intact; the audit keeps a salted hash, never the id."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.config import Config, load_config
from core.lake import Lake
from core.reports import write_report
from jobs import clean, erasure, features, ingest, quarantine, split
from jobs.common import rejected_path

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAY1, DAY2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
VICTIM = "erase-me-9f2c"
SALT = "test-salt-0123456789abcdef"
OTHERS = ("u1", "u2", "u3")


def _event(user: str, item: str, etype: str, ts: str, **extra: object) -> str:
    return json.dumps({"user_id": user, "item_id": item, "event_type": etype, "ts": ts, **extra})


def _plant(lake: Lake) -> None:
    """Three steady users and the victim (four items over two days, a corrupt line, an exposure)."""
    items = [f"i{k}" for k in range(1, 7)]
    for day, hour in ((DAY1, 9), (DAY2, 10)):
        lines = [
            _event(user, item, "view", f"{day.isoformat()}T{hour:02d}:{k * 7 + n:02d}:00Z", price=5.0)
            for n, user in enumerate(OTHERS)
            for k, item in enumerate(items[n : n + 4])
        ]
        victim_items = items[:2] if day == DAY1 else items[2:4]
        lines += [
            _event(f" {VICTIM} ", item, "purchase", f"{day.isoformat()}T{hour + 1:02d}:{k:02d}:00Z", price=9.0)
            for k, item in enumerate(victim_items)
        ]
        folder = lake.landing_events(day)
        folder.mkdir(parents=True)
        (folder / "api-0.jsonl").write_text("\n".join(lines) + "\n")
    corrupt = f'{{"user_id": "{VICTIM}", "item_id": '
    with gzip.open(lake.landing_events(DAY2) / "api-1.jsonl.gz", "wt") as fh:
        fh.write(_event("u1", "i5", "click", "2026-03-02T12:00:00Z") + "\n" + corrupt + "\n")
    (lake.landing_events(DAY2) / "api-2.jsonl").write_text(_event(VICTIM, "i6", "view", "2026-03-02T13:00:00Z") + "\n")
    exposures = lake.root / "landing" / "exposures" / f"dt={DAY2.isoformat()}"
    exposures.mkdir(parents=True)
    (exposures / "api-0.jsonl").write_text(
        json.dumps({"request_id": "r1", "user_id": VICTIM, "items": ["i1", "i2"]})
        + "\n"
        + json.dumps({"request_id": "r2", "user_id": "u2", "items": ["i3"]})
        + "\n"
    )
    catalogue = [
        json.dumps({"item_id": i, "category": "c", "brand": "b", "price": 5.0, "available": True}) for i in items
    ]
    lake.landing_items().mkdir(parents=True)
    (lake.landing_items() / "items.jsonl").write_text("\n".join(catalogue) + "\n")


def _traces(root: Path, needle: str) -> set[str]:
    """Files under ``root`` holding ``needle``: raw bytes, gzip content, or any Parquet value or metadata."""
    found = set()
    raw = needle.encode()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hit = raw in data
        if not hit and path.name.endswith(".gz"):
            hit = raw in gzip.decompress(data)
        if not hit and path.name.endswith(".parquet"):
            table = pq.read_table(path)
            hit = needle in json.dumps(table.to_pylist(), default=str) or needle in str(pq.read_metadata(path))
        if hit:
            found.add(path.relative_to(root).as_posix())
    return found


def _layers(paths: set[str]) -> set[str]:
    out = set()
    for p in paths:
        parts = p.split("/")
        out.add("bronze/_rejected" if parts[:2] == ["bronze", "_rejected"] else parts[0])
    return out


def _rows(spark, path: Path, users: tuple[str, ...] = OTHERS) -> list[tuple]:
    frame = spark.read.parquet(str(path))
    return sorted(tuple(r) for r in frame.where(frame["user_id"].isin(list(users))).collect())


@pytest.fixture
def cfg() -> Config:
    return load_config().replace(split={"min_user_items": 3})


def test_a_user_planted_in_every_layer_leaves_no_byte_behind(
    spark, tmp_path: Path, cfg: Config, recsys_home: Path
) -> None:
    lake = Lake(tmp_path / "lake")
    reports = tmp_path / "reports"
    _plant(lake)
    ingest.run(lake.root, DAY2, cfg, spark, window_days=2)
    clean.run(lake.root, DAY2, cfg, spark, window_days=2)
    features.run(lake.root, DAY2, cfg, spark)
    split.run(lake.root, DAY2, cfg, spark)
    write_report(lake.root, DAY2, "bots", {"suspects": [VICTIM, "u9"], "note": f"{VICTIM} fired 2 events"})
    (reports / DAY2.isoformat() / "data_docs").mkdir(parents=True)
    (reports / DAY2.isoformat() / "validation_features.json").write_text(
        json.dumps(
            {"success": False, "unexpected_sample": [VICTIM, "u2"], "rows": 1, "failure_report": f"rows: {VICTIM}, u2"}
        )
    )
    (reports / DAY2.isoformat() / "data_docs" / "index.html").write_text(f"<td>{VICTIM}</td><td>1</td>")
    quarantine.quarantine(lake.root, [str(lake.landing_events(DAY2) / "api-2.jsonl")], reason="test")
    erasure.write_request(lake.root, VICTIM, "api:support", request_id="req-1")

    planted = _traces(lake.root, VICTIM)
    assert {"landing", "bronze", "bronze/_rejected", "silver", "gold", "reports", "quarantine", "erasure"} <= _layers(
        planted
    ), planted
    assert any("split=test" in p for p in planted) and any("sequences" in p for p in planted)
    assert _traces(reports, VICTIM)
    keep = {
        "bronze": _rows(spark, lake.bronze_events(DAY2)),
        "silver": _rows(spark, lake.silver_events(DAY2)),
        "interactions": _rows(spark, lake.gold(DAY2, "interactions")),
        "train": _rows(spark, lake.gold(DAY2, "split=train")),
        "rejected": spark.read.parquet(str(rejected_path(lake, DAY2))).count(),
    }

    report = erasure.run(lake.root, DAY2, cfg, spark, reports_dir=reports, salt=SALT)

    assert _traces(lake.root, VICTIM) == set()
    assert _traces(reports, VICTIM) == set()
    assert keep["bronze"] == _rows(spark, lake.bronze_events(DAY2))
    assert keep["silver"] == _rows(spark, lake.silver_events(DAY2))
    assert keep["interactions"] == _rows(spark, lake.gold(DAY2, "interactions"))
    assert keep["train"] == _rows(spark, lake.gold(DAY2, "split=train"))
    assert spark.read.parquet(str(rejected_path(lake, DAY2))).count() == keep["rejected"] - 1
    assert (lake.landing_events(DAY2) / "api-0.jsonl").read_text().count("\n") == 12  # the others' lines
    assert "u2" in (lake.root / "landing" / "exposures" / f"dt={DAY2.isoformat()}" / "api-0.jsonl").read_text()
    saved = json.loads((reports / DAY2.isoformat() / "validation_features.json").read_text())
    assert saved["unexpected_sample"] == ["[erased]", "u2"] and saved["rows"] == 1
    assert "<td>1</td>" in (reports / DAY2.isoformat() / "data_docs" / "index.html").read_text()

    expected_hash = hmac.new(SALT.encode(), VICTIM.encode(), hashlib.sha256).hexdigest()
    (audit,) = [json.loads(line) for line in (lake.root / "erasure" / "audit.jsonl").read_text().splitlines()]
    assert audit["request_id"] == "req-1" and audit["user_hash"] == expected_hash
    assert audit["requested_by"] == "api:support"
    assert {"landing", "bronze/events", "bronze/_rejected", "silver/events", "gold", "quarantine"} <= set(
        audit["removed"]
    )
    assert not (lake.root / "erasure" / "requests" / "req-1.json").exists()
    assert json.loads((lake.root / "erasure" / "done" / "req-1.json").read_text())["user_hash"] == expected_hash
    assert report["done"] == ["req-1"] and report["removed"]["gold"] > 0
    (drop,) = quarantine.list_drops(lake.root)
    assert drop["files"][0]["removed_by_erasure"] is True

    # the next run re-ingests the rewritten landing days: still no trace, and the others' events are all there
    again = ingest.run(lake.root, DAY2, cfg, spark, window_days=2)
    assert again["ingested_days"] == [DAY1.isoformat(), DAY2.isoformat()]
    assert keep["bronze"] == _rows(spark, lake.bronze_events(DAY2))
    assert _traces(lake.root, VICTIM) == set()


def test_requests_need_a_salt_and_the_contract(
    spark, tmp_path: Path, cfg: Config, monkeypatch, recsys_home: Path
) -> None:
    """(``recsys_home``: erasure also redacts trained models, so the settings' registry must be a test one.)"""
    lake = Lake(tmp_path / "lake")
    assert erasure.run(lake.root, DAY2, cfg, spark, reports_dir=tmp_path / "r")["requests"] == 0  # nothing to do

    erasure.write_request(lake.root, "u1", "ops", request_id="ok-1")
    monkeypatch.delenv(erasure.SALT_ENV, raising=False)
    with pytest.raises(erasure.ErasureError, match="RECSYS_ERASURE_SALT"):
        erasure.run(lake.root, DAY2, cfg, spark, reports_dir=tmp_path / "r")
    assert (lake.root / "erasure" / "requests" / "ok-1.json").exists()  # left for the next run

    bad = lake.root / "erasure" / "requests" / "bad.json"
    bad.write_text(json.dumps({"request_id": "bad", "user_id": "u-secret", "requested_at": "yesterday"}))
    monkeypatch.setenv(erasure.SALT_ENV, SALT)
    with pytest.raises(erasure.ErasureError, match=r"bad\.json") as caught:
        erasure.run(lake.root, DAY2, cfg, spark, reports_dir=tmp_path / "r")
    assert "u-secret" not in str(caught.value)
    assert bad.exists() and (lake.root / "erasure" / "done" / "ok-1.json").exists()
    saved = json.loads(Lake(lake.root).report(DAY2, "erase").read_text())
    assert saved["done"] == ["ok-1"] and saved["invalid_requests"][0]["file"] == "bad.json"
    assert "u-secret" not in json.dumps(saved)
