"""What one scoring API instance runs on: model store, live user state, landing writer, metrics, batcher.

``create_app`` builds a :class:`ServingRuntime` and keeps it on ``app.state.runtime``; the routes reach
it through ``serving.api.deps``. The runtime starts nothing when built: :meth:`ServingRuntime.start`
(the app's lifespan) makes the first poll and starts the threads, :meth:`ServingRuntime.close` stops
them and flushes every accepted event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.config import ServingConfig
from serving.batcher import MicroBatcher
from serving.events import LandingWriter
from serving.metrics import ApiMetrics
from serving.scorer import Ranking, RecRequest
from serving.state import EMPTY, StateStore, UserState, collapse_repeats
from serving.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecJob:
    """One recommendation request for the micro-batcher; a user's (``user_id`` set) reads the live state first."""

    loaded: LoadedModel
    request: RecRequest


#: A scored job: the ranking and how many live (recent) items it used.
ScoredJob = tuple[Ranking, int]


class ServingRuntime:
    """The long-lived objects of one API instance and the batch scoring that the micro-batcher runs."""

    def __init__(
        self, config: ServingConfig, store: ModelStore, user_state: StateStore, landing: LandingWriter
    ) -> None:
        self.config = config
        self.store = store
        self.user_state = user_state
        self.landing = landing
        self.metrics = ApiMetrics(self.metrics_snapshot)
        self.batcher: MicroBatcher[RecJob, ScoredJob] = MicroBatcher(
            self.score_batch,
            max_batch=config.score_max_batch,
            name="mercato-scorer",
            on_batch=self.metrics.batch_size.observe,
        )

    def start(self, poll: bool = True) -> None:
        """First poll of the champion, then the poll thread (if ``poll``), the landing timer, the batcher."""
        self.store.refresh()
        if poll:
            self.store.start()
        self.landing.start()
        self.batcher.start()

    def close(self) -> None:
        """Answer every queued request, stop polling, flush every accepted event, close the state."""
        self.batcher.close()
        self.store.stop()
        flushed = self.landing.close()
        log.info("shutdown: flushed %d events to the landing zone (%d in total)", flushed, self.landing.written)
        self.user_state.close()

    def metrics_snapshot(self) -> dict[str, Any]:
        """What the Prometheus collector reads at scrape time (state size ``None`` when the store is down)."""
        info = self.store.describe()
        try:
            users: int | None = self.user_state.size()
        except Exception:
            users = None
        return {
            "model": info["model"],
            "swaps": info["swaps"],
            "refused": info["refused"],
            "polls": info["polls"],
            "state_users": users,
            "landing_written": self.landing.written,
            "landing_pending": self.landing.pending,
            "landing_errors": self.landing.write_errors,
        }

    def score_batch(self, jobs: list[RecJob]) -> list[ScoredJob]:
        """Runs on the batcher's thread: live states in one read, then one ``recommend_many`` per model."""
        requests = self._with_live_state([job.request for job in jobs])
        scored: dict[int, ScoredJob] = {}
        for loaded, positions in _positions_by_model(jobs).values():
            rankings = loaded.scorer.recommend_many([requests[pos] for pos in positions])
            for pos, ranking in zip(positions, rankings, strict=True):
                scored[pos] = (ranking, len(requests[pos].recent_items))
        return [scored[pos] for pos in range(len(jobs))]

    def _with_live_state(self, requests: list[RecRequest]) -> list[RecRequest]:
        """Users' requests with their live recent and purchased items (sessions carry their own)."""
        states = iter(self._read_states([r.user_id for r in requests if r.user_id is not None]))
        return [request if request.user_id is None else _with_state(request, next(states)) for request in requests]

    def _read_states(self, user_ids: Sequence[str]) -> list[UserState]:
        """One read for every user; if the state store fails, answer without live state (counted)."""
        if not user_ids:
            return []
        try:
            return self.user_state.get_many(user_ids)
        except Exception as exc:
            self.metrics.state_errors.labels("read").inc(len(user_ids))
            log.debug("state read for %d users failed (%s); answering without live state", len(user_ids), exc)
            return [EMPTY] * len(user_ids)


def _with_state(request: RecRequest, live: UserState) -> RecRequest:
    return replace(request, recent_items=collapse_repeats(live.recent), purchased=live.purchased)


def _positions_by_model(jobs: Sequence[RecJob]) -> dict[int, tuple[LoadedModel, list[int]]]:
    """Job positions per model: a swap between two requests of one batch leaves each on its own model."""
    groups: dict[int, tuple[LoadedModel, list[int]]] = {}
    for pos, job in enumerate(jobs):
        groups.setdefault(id(job.loaded), (job.loaded, []))[1].append(pos)
    return groups
