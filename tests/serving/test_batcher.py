"""The micro-batcher: queued jobs share a batch, results reach the right request, failures stay local."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batcher import MicroBatcher


class Recorder:
    """A batch handler that records each batch; ``gate`` holds the first batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, jobs: list[int]) -> list[int]:
        self.batches.append(list(jobs))
        self.entered.set()
        self.gate.wait(10)
        if any(j < 0 for j in jobs):
            raise ValueError(f"negative job in {jobs}")
        return [j * 10 for j in jobs]


async def _submit_while_first_runs(batcher: MicroBatcher[int, int], rec: Recorder, later: list[int]) -> list[object]:
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.to_thread(rec.entered.wait, 10)
    rest = [asyncio.ensure_future(batcher.submit(j)) for j in later]
    await asyncio.sleep(0.05)  # every later job is queued behind the running batch
    rec.gate.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


def test_jobs_queued_during_a_batch_run_together_and_in_order() -> None:
    rec = Recorder()
    sizes: list[int] = []
    batcher = MicroBatcher(rec, max_batch=64, on_batch=sizes.append)
    try:
        results = asyncio.run(_submit_while_first_runs(batcher, rec, list(range(2, 9))))
    finally:
        batcher.close()
    assert results == [10, 20, 30, 40, 50, 60, 70, 80]
    assert rec.batches == [[1], [2, 3, 4, 5, 6, 7, 8]]
    assert sizes == [1, 7] and batcher.batches == 2 and batcher.jobs == 8 and batcher.largest == 7


def test_max_batch_splits_the_queue() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch=3)
    try:
        results = asyncio.run(_submit_while_first_runs(batcher, rec, list(range(2, 9))))
    finally:
        batcher.close()
    assert results == [10 * j for j in range(1, 9)]
    assert rec.batches == [[1], [2, 3, 4], [5, 6, 7], [8]]


def test_a_failing_job_fails_only_its_own_request() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec)
    try:
        results = asyncio.run(_submit_while_first_runs(batcher, rec, [2, -3, 4]))
    finally:
        batcher.close()
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError) and "negative job" in str(results[2])
    assert rec.batches[1] == [2, -3, 4]  # tried together first, then one by one
    assert sorted(rec.batches[2:]) == [[-3], [2], [4]]


def test_close_answers_everything_queued_and_submit_restarts() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec)

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(rec.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(j)) for j in (2, 3, 4)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        await asyncio.sleep(0.05)
        rec.gate.set()
        await closing
        answered = list(await asyncio.gather(first, *rest))
        return [*answered, await batcher.submit(5)]

    try:
        assert asyncio.run(scenario()) == [10, 20, 30, 40, 50]
    finally:
        batcher.close()


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0)
