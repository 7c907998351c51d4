"""The interleaving sensitivity benchmark at toy size: both methods measured, the ratio printed."""

from __future__ import annotations

import pytest

from bench.interleaving_sensitivity import main, sequential_users


def test_benchmark_prints_the_sensitivity_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    (result,) = main(["--users", "1500", "--requests", "8", "--resamples", "20", "--treatment-noise", "0.5"])
    out = capsys.readouterr().out
    assert "sensitivity ratio (same effect" in out and "A/B on CTR" in out and "interleaving" in out
    assert result["ab"]["effect"] > 0 and result["interleaving"]["effect"] > 0
    assert result["sensitivity_ratio"] == pytest.approx(result["ab"]["users"] / result["interleaving"]["users"])
    assert result["ab"]["users_always_valid"] > result["ab"]["users"]


def test_sequential_users_is_where_the_always_valid_mde_reaches_the_effect() -> None:
    from evaluation.online import sequential_mde

    n = sequential_users(1.0, 0.1, 0.05, 0.8, 10_000, 1)
    assert (
        sequential_mde(1.0 / n, n, 0.05, 10_000, 0.8) <= 0.1 < sequential_mde(1.0 / (n - 1), n - 1, 0.05, 10_000, 0.8)
    )
    assert sequential_users(1.0, 0.0, 0.05, 0.8, 10_000, 1) == 0
