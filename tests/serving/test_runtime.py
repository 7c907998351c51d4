"""``ServingRuntime.score_batch`` (what the micro-batcher runs): one state read, one scorer call per model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from core.config import load_config
from core.registry import ServingRegistry
from serving.events import LandingWriter
from serving.runtime import RecJob, ServingRuntime
from serving.scorer import Ranking, RecRequest, Scorer
from serving.state import LiveEvent, MemoryState, UserState
from serving.store import LoadedModel, ModelStore
from tests.core.test_registry import make_toy


class RecordingState(MemoryState):
    """The in-memory state, recording every ``get_many``; ``down`` makes every call fail."""

    def __init__(self) -> None:
        super().__init__(max_users=100, max_recent=10, ttl_seconds=3600)
        self.reads: list[list[str]] = []
        self.down = False

    def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        self.reads.append(list(user_ids))
        if self.down:
            raise ConnectionError("state store unreachable")
        return super().get_many(user_ids)

    def size(self) -> int:
        if self.down:
            raise ConnectionError("state store unreachable")
        return super().size()


class RecordingScorer(Scorer):
    """A scorer that records the size of every ``recommend_many`` batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def recommend_many(self, requests: Sequence[RecRequest]) -> list[Ranking]:
        self.batches.append(len(requests))
        return super().recommend_many(requests)


def loaded_toy(version: str, tmp_path: Path) -> LoadedModel:
    scorer = RecordingScorer(make_toy(seed=int(version)))
    return LoadedModel("toy", version, f"sum{version}", tmp_path, scorer, {}, {}, "2024-01-01T00:00:00+00:00")


@pytest.fixture
def state() -> RecordingState:
    return RecordingState()


@pytest.fixture
def runtime(tmp_path: Path, state: RecordingState) -> ServingRuntime:
    store = ModelStore(ServingRegistry(str(tmp_path / "registry")), tmp_path / "cache", poll_seconds=60.0)
    landing = LandingWriter(tmp_path / "lake", flush_events=100, flush_seconds=60.0, source="api")
    return ServingRuntime(load_config().serving, store, state, landing)


def items(ranking: Ranking) -> list[tuple[str, float]]:
    """Ids and scores, rounded: a batch is one GEMM, a lone request a GEMV (float32 rounding differs)."""
    return [(item.item_id, round(item.score, 5)) for item in ranking.items]


def test_users_get_their_live_state_in_one_read(runtime: ServingRuntime, state: RecordingState, tmp_path: Path) -> None:
    state.record([LiveEvent("u1", item, "view") for item in ("i1", "i1", "i2")] + [LiveEvent("u1", "i3", "purchase")])
    model = loaded_toy("1", tmp_path)
    jobs = [
        RecJob(model, RecRequest("u1", 8)),
        RecJob(model, RecRequest(None, 3, recent_items=("i4",))),  # a session: its own items, no read
        RecJob(model, RecRequest("u2", 2)),
    ]
    results = runtime.score_batch(jobs)
    assert state.reads == [["u1", "u2"]]
    (u1, u1_live), (session, session_live), (u2, u2_live) = results
    scorer = model.scorer
    assert items(u1) == items(scorer.recommend("u1", 8, ("i1", "i2", "i3"), {"i3"})), "repeats collapsed"
    assert u1_live == 3 and not {"i1", "i2", "i3"} & {item.item_id for item in u1.items}
    assert session_live == 1 and not session.fallback and "i4" not in {item.item_id for item in session.items}
    assert items(u2) == items(scorer.recommend("u2", 2)) and u2_live == 0


def test_sessions_alone_read_no_state(runtime: ServingRuntime, state: RecordingState, tmp_path: Path) -> None:
    runtime.score_batch([RecJob(loaded_toy("1", tmp_path), RecRequest(None, 2))])
    assert state.reads == []


def test_each_job_keeps_the_model_it_started_with(runtime: ServingRuntime, tmp_path: Path) -> None:
    old, new = loaded_toy("1", tmp_path), loaded_toy("2", tmp_path)
    jobs = [RecJob(model, RecRequest(f"u{n}", 3)) for n, model in enumerate((old, new, old, new, old))]
    results = runtime.score_batch(jobs)
    for job, (ranking, _) in zip(jobs, results, strict=True):
        assert items(ranking) == items(job.loaded.scorer.recommend(job.request.user_id, 3)), job
    assert items(old.scorer.recommend("u0", 3)) != items(new.scorer.recommend("u0", 3)), "the models differ"
    assert old.scorer.batches[0] == 3 and new.scorer.batches[0] == 2, "one recommend_many per model"


def test_a_failed_state_read_answers_without_live_state(
    runtime: ServingRuntime, state: RecordingState, tmp_path: Path
) -> None:
    state.record([LiveEvent("u1", "i1", "view")])
    state.down = True
    model = loaded_toy("1", tmp_path)
    results = runtime.score_batch([RecJob(model, RecRequest("u1", 4)), RecJob(model, RecRequest("u2", 4))])
    assert [live for _, live in results] == [0, 0]
    assert items(results[0][0]) == items(model.scorer.recommend("u1", 4))
    assert runtime.metrics.registry.get_sample_value("mercato_state_errors_total", {"op": "read"}) == 2
    assert runtime.metrics_snapshot()["state_users"] is None


def test_metrics_snapshot_before_and_after_a_model(runtime: ServingRuntime, state: RecordingState) -> None:
    snapshot = runtime.metrics_snapshot()
    assert snapshot["model"] is None and snapshot["swaps"] == 0 and snapshot["state_users"] == 0
    state.record([LiveEvent("u1", "i1", "view")])
    runtime.landing.add([{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2024-01-01T00:00:00Z"}])
    snapshot = runtime.metrics_snapshot()
    assert snapshot["state_users"] == 1 and snapshot["landing_pending"] == 1 and snapshot["landing_written"] == 0
