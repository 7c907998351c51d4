"""The serving benchmark end to end at toy size: real API and naive servers, a separate load generator."""

from __future__ import annotations

import pytest

from bench.serving_load import main


@pytest.mark.slow
def test_serving_load_runs_and_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--items", "3000", "--users", "200", "--seconds", "1", "--warmup", "0.3", "--ann-items", "20000"]
    args += ["--overhead-rounds", "1"]
    res = main(args)
    out = capsys.readouterr().out
    for (server, conns), r in res["load"].items():
        assert r["requests"] > 0 and r["errors"] == 0, (server, conns, r)
    assert set(res["load"]) == {("naive", 1), ("naive", 8), ("api", 1), ("api", 8)}
    assert res["events"]["events_per_s"] > 0 and res["events"]["errors"] == 0
    assert res["ann"]["recall@10"] >= 0.9 and res["ann"]["n_items"] == 20000
    overhead = res["exposure_overhead"]
    assert overhead["api-log"]["errors"] == 0 and overhead["api-nolog"]["errors"] == 0
    logged = overhead["api-log"]
    assert logged["logging"] and logged["exposures_logged"] == logged["served"] > 0, "every answer was logged"
    assert not overhead["api-nolog"]["logging"], "the other server logs nothing"
    assert overhead["ratio"] == pytest.approx(overhead["api-log"]["rps"] / overhead["api-nolog"]["rps"])
    assert overhead["cpu_ratio"] > 0 and logged["cpu_ms_per_request"] > 0
    assert "throughput with exposure logging / without:" in out
    for figure in (
        "exposure log cost",
        "p99 @1 conn (ms)",
        "p99 @8 conns (ms)",
        "req/s @8 vs naive",
        "events/s (batch 100)",
        "ANN recall@10",
    ):
        assert figure in out
