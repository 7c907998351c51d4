"""The durability benchmark at toy size: two real API processes (write-ahead log on and off), one load generator."""

from __future__ import annotations

import pytest

from bench.durability import main


@pytest.mark.slow
def test_durability_bench_runs_both_servers_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    res = main(["--quick", "--items", "500", "--users", "100"])
    out = capsys.readouterr().out
    durable, memory = res["durable"], res["in-memory"]
    assert durable["errors"] == 0 and memory["errors"] == 0, res
    assert durable["events_per_s"] > 0 and memory["events_per_s"] > 0
    assert durable["accepted"] > 0 and memory["accepted"] > 0
    assert durable["wal_commits"] > 0 and durable["wal_entries"] >= durable["wal_commits"], "every 202 was synced"
    assert memory["wal_commits"] == 0, "the baseline has no write-ahead log"
    assert res["ratio"] == pytest.approx(durable["events_per_s"] / memory["events_per_s"])
    assert "events/s durable / in-memory:" in out and "batches/fsync" in out
