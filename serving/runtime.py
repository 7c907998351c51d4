"""What one scoring API instance runs on: model store, experiments, live user state, landing writers, metrics, batcher.

``create_app`` builds a :class:`ServingRuntime` and keeps it on ``app.state.runtime``; the routes reach
it through ``serving.api.deps``. The runtime starts nothing when built: :meth:`ServingRuntime.start`
(the app's lifespan) makes the first polls and starts the threads, :meth:`ServingRuntime.close` stops
them and flushes every accepted event and exposure.

Per recommendation request: :meth:`ServingRuntime.assign` draws its ``request_id`` (a ULID) and picks
the model — the champion, or the experiment arm of the request's unit (user id, else session id,
else the request id), or both arms of an interleaving experiment; :meth:`ServingRuntime.score_batch`
scores it (merging the two arms' lists by team draft) and remembers the request's arm in the state
for attribution; :meth:`ServingRuntime.served` counts it and appends its exposure record to the
exposure log (buffered; a background thread writes it).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.config import AttributionConfig, ServingConfig
from core.experiments import INTERLEAVED, interleaving_seed, team_draft
from core.ids import new_request_id_and_time
from serving.auth import KeyRing
from serving.batcher import MicroBatcher
from serving.events import LandingWriter
from serving.experiments import ExperimentStore
from serving.idempotency import Idempotency
from serving.metrics import ApiMetrics
from serving.scorer import MODEL_ERROR_REASON, Ranking, RankOptions, RecRequest, ScoredItem
from serving.state import EMPTY, GuardedState, StateStore, UserState, collapse_repeats
from serving.store import LoadedModel, ModelStore
from serving.wal import WriteAheadLog

log = logging.getLogger(__name__)

#: Metric label of requests served outside any experiment.
NO_LABEL = "none"
#: Components whose failure the API survives, degraded (``/health``, ``mercato_degraded``).
DEGRADABLE = ("state", "landing", "exposures", "registry")


@dataclass(frozen=True)
class Assignment:
    """Which experiment arm serves a request; the default (no experiment) is the champion alone.

    An interleaving request names both arms' models (control first) and their variants (``teams``).
    """

    experiment: str | None = None
    variant: str | None = None
    arms: tuple[LoadedModel, ...] = ()
    teams: tuple[str, ...] = ()
    salt: str = ""

    @property
    def interleaving(self) -> bool:
        return bool(self.teams)


NO_EXPERIMENT = Assignment()


@dataclass(frozen=True)
class RecJob:
    """One recommendation request for the micro-batcher; a user's (``user_id`` set) reads the live state first.

    ``loaded`` is the model that scores it (an interleaving request: the control's, with both arms in
    ``assignment.arms``); ``request_id``/``requested_at`` are drawn by :meth:`ServingRuntime.assign`.
    """

    loaded: LoadedModel
    request: RecRequest
    request_id: str = ""
    requested_at: str = ""
    assignment: Assignment = NO_EXPERIMENT
    session_id: str | None = None


#: A scored job: the ranking and how many live (recent) items it used.
ScoredJob = tuple[Ranking, int]


class ServingRuntime:
    """The long-lived objects of one API instance and the batch scoring that the micro-batcher runs."""

    def __init__(
        self,
        config: ServingConfig,
        store: ModelStore,
        user_state: StateStore,
        landing: LandingWriter,
        experiments: ExperimentStore | None = None,
        exposures: LandingWriter | None = None,
        attribution: AttributionConfig | None = None,
        keys: KeyRing | None = None,
        wal: WriteAheadLog | None = None,
        erasure: Any = None,
    ) -> None:
        self.config = config
        self.store = store
        self.user_state: GuardedState = (
            user_state if isinstance(user_state, GuardedState) else GuardedState(user_state, config.state_retry_seconds)
        )
        self.landing = landing
        self.experiments = experiments
        self.exposures = exposures
        self.attribution = attribution or AttributionConfig(window_minutes=60)
        self.keys = keys if keys is not None else KeyRing()
        self.wal = wal
        self.erasure = erasure
        self.idempotency = Idempotency(self.user_state, config.idempotency_ttl_seconds)
        self.metrics = ApiMetrics(self.metrics_snapshot)
        self.batcher: MicroBatcher[RecJob, ScoredJob] = MicroBatcher(
            self.score_batch,
            max_batch=config.score_max_batch,
            name="mercato-scorer",
            on_batch=self.metrics.batch_size.observe,
            max_queue=config.score_max_queue,
            deadline_seconds=config.request_deadline_seconds,
            on_shed=lambda reason: self.metrics.shed.labels(reason).inc(),
        )
        for writer in (self.landing, self.exposures):
            if writer is not None and writer.on_logged is None:
                writer.on_logged = self.idempotency.remember

    def start(self, poll: bool = True) -> None:
        """First polls of the champion and the experiment, then the poll threads (if ``poll``), the landing
        timers, the batcher."""
        self.store.refresh()
        if self.experiments is not None:
            self.experiments.refresh()
        if poll:
            self.store.start()
            if self.experiments is not None:
                self.experiments.start()
        self.landing.start()  # replays the write-ahead log first: nothing acknowledged before a crash is lost
        if self.exposures is not None:
            self.exposures.start()
        self.batcher.start()
        self.metrics.start()
        if self.keys.disabled:
            log.warning("AUTHENTICATION IS DISABLED: every route of this API is open (RECSYS_AUTH_DISABLED)")

    def close(self) -> None:
        """Answer every queued request, stop polling, flush every accepted event and exposure, close the state."""
        self.batcher.close()
        self.store.stop()
        if self.experiments is not None:
            self.experiments.stop()
        flushed = self.landing.close()
        log.info("shutdown: flushed %d events to the landing zone (%d in total)", flushed, self.landing.written)
        if self.exposures is not None:
            shown = self.exposures.close()
            log.info("shutdown: flushed %d exposures (%d in total)", shown, self.exposures.written)
        if self.wal is not None:
            self.wal.close()
        self.metrics.stop()
        self.user_state.close()

    def degraded(self) -> dict[str, str]:
        """Components failing right now and why (empty: all well): ``state``, ``landing``, ``exposures``, ``registry``."""
        out: dict[str, str] = {}
        if self.user_state.down is not None:
            out["state"] = f"real-time state store unavailable ({self.user_state.down}); answers use the model only"
        for name, writer in (("landing", self.landing), ("exposures", self.exposures)):
            if writer is not None and writer.last_error is not None and writer.pending:
                out[name] = f"{writer.pending} records wait for the landing zone ({writer.last_error})"
        registry_error = self.store.status.unreachable
        if registry_error is not None:
            out["registry"] = f"registry unreachable ({registry_error}); serving {self.store.describe_current()}"
        return out

    def metrics_snapshot(self) -> dict[str, Any]:
        """What the Prometheus collector reads at scrape time (state size ``None`` when the store is down)."""
        info = self.store.describe()
        down = self.degraded()
        try:
            users: int | None = self.user_state.size()
        except Exception:
            users = None
        snapshot = {
            "model": info["model"],
            "model_age_seconds": info.get("age_seconds"),
            "model_data_age_seconds": info.get("data_age_seconds"),
            "swaps": info["swaps"],
            "refused": info["refused"],
            "polls": info["polls"],
            "poll_errors": info["poll_errors"],
            "state_users": users,
            "score_queue": self.batcher.depth,
            "landing_written": self.landing.written,
            "landing_pending": self.landing.pending,
            "landing_errors": self.landing.write_errors,
            "landing_recovered": self.landing.recovered,
            "degraded": {component: int(component in down) for component in DEGRADABLE},
        }
        if self.wal is not None:
            snapshot["wal_commits"] = self.wal.commits
            snapshot["wal_entries"] = self.wal.entries
        if self.experiments is not None:
            described = self.experiments.describe()
            snapshot["experiment"] = described["experiment"]
            snapshot["experiment_swaps"] = described["swaps"]
            snapshot["experiment_refused"] = described["refused"]
        if self.exposures is not None:
            snapshot["exposures_written"] = self.exposures.written
            snapshot["exposures_pending"] = self.exposures.pending
            snapshot["exposures_dropped"] = self.exposures.dropped
            snapshot["exposures_errors"] = self.exposures.write_errors
        return snapshot

    # ---- one request ----------------------------------------------------------------------
    def assign(self, job: RecJob, unit: str | None) -> RecJob:
        """``job`` with a new request id and the model(s) that serve it: the experiment arm of ``unit``
        (user id, else session id; ``None``: the request id, a random unit) or, without a running
        experiment, the champion it was checked with."""
        request_id, requested_at = new_request_id_and_time()
        experiment = self.experiments.current if self.experiments is not None else None
        if experiment is None:
            return replace(job, request_id=request_id, requested_at=requested_at)
        if experiment.interleaving:
            control, treatment = experiment.arms
            assignment = Assignment(
                experiment.name,
                INTERLEAVED,
                (control.loaded, treatment.loaded),
                (control.variant, treatment.variant),
                experiment.salt,
            )
            loaded = control.loaded
        else:
            arm = experiment.arm_for(unit if unit is not None else request_id)
            assignment = Assignment(experiment.name, arm.variant, salt=experiment.salt)
            loaded = arm.loaded
        return replace(job, loaded=loaded, request_id=request_id, requested_at=requested_at, assignment=assignment)

    def served(self, job: RecJob, route: str, items: Sequence[ScoredItem], fallback: bool) -> None:
        """Count an answered request (per experiment and variant, fallbacks) and log its exposure."""
        assignment = job.assignment
        self.metrics.experiment_requests.labels(
            assignment.experiment or NO_LABEL, assignment.variant or NO_LABEL, route
        ).inc()
        if fallback:
            self.metrics.fallbacks.labels(route).inc()
        if self.exposures is not None:
            self.exposures.add([exposure_record(job, route, items, fallback)])

    def similar(self, job: RecJob, item_id: str) -> list[ScoredItem] | None:
        """Items similar to ``item_id`` by the job's model (both arms' lists merged when interleaving);
        ``None`` when the model does not know the item."""
        request, assignment = job.request, job.assignment
        if assignment.interleaving:
            found = [arm.scorer.similar(item_id, request.k, request.options) for arm in assignment.arms]
            if all(items is None for items in found):
                return None
            merged = interleave(
                Ranking(found[0] or [], fallback=False),
                Ranking(found[1] or [], fallback=False),
                request.k,
                assignment.teams,
                interleaving_seed(assignment.salt, job.request_id),
            )
            self._remember([job], [merged])
            return merged.items
        items = job.loaded.scorer.similar(item_id, request.k, request.options)
        if items is not None:
            self._remember([job], [Ranking(items, fallback=False)])
        return items

    def attribute(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Count accepted events that carry the ``request_id`` of an experiment request this API served
        (any worker: the arm is remembered in the state), per experiment, variant and event type."""
        request_ids = list(dict.fromkeys(r["request_id"] for r in records if r.get("request_id")))
        if not request_ids:
            return
        try:
            values = dict(zip(request_ids, self.user_state.recall_requests(request_ids), strict=True))
        except Exception as exc:
            self.metrics.state_errors.labels("recall").inc()
            log.debug("attribution lookup of %d requests failed: %s", len(request_ids), exc)
            return
        for record in records:
            request_id = record.get("request_id")
            if not request_id:
                continue
            value = values.get(request_id)
            if value is None:
                self.metrics.unattributed_events.labels(record["event_type"]).inc()
                continue
            experiment, variant, teams = _decode_arm(value)
            position = record.get("position")
            if teams and position is not None and 1 <= position <= len(teams):
                variant = teams[position - 1]
            self.metrics.attributed_events.labels(experiment, variant, record["event_type"]).inc()

    # ---- batches (the micro-batcher's thread) -----------------------------------------------
    def score_batch(self, jobs: list[RecJob]) -> list[ScoredJob]:
        """Runs on the batcher's thread: live states in one read, one ``recommend_many`` per model,
        interleaved lists merged, and the experiment arm of every request remembered in one write."""
        requests, live = self._with_live_state([job.request for job in jobs])
        rankings: dict[tuple[int, int], Ranking] = {}
        for model, slots in _slots_by_model(jobs).values():
            batch = [requests[pos] for pos, _ in slots]
            try:
                found = model.scorer.recommend_many(batch)
            except Exception as exc:  # a model that throws: answer from its popularity fallback, flagged
                self.metrics.model_errors.labels(f"{model.name}/{model.version}").inc()
                log.warning(
                    "model %s/%s failed on a batch of %d (%s: %s); answering from the popularity fallback",
                    model.name,
                    model.version,
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
                found = model.scorer.fallback_many(batch, MODEL_ERROR_REASON)
            rankings.update(zip(slots, found, strict=True))
        scored: list[ScoredJob] = []
        for pos, job in enumerate(jobs):
            ranking = rankings[(pos, 0)]
            assignment = job.assignment
            if assignment.interleaving:
                seed = interleaving_seed(assignment.salt, job.request_id)
                ranking = interleave(ranking, rankings[(pos, 1)], job.request.k, assignment.teams, seed)
            if not live and job.request.user_id is not None:
                ranking = replace(ranking, live=False)
            scored.append((ranking, len(requests[pos].recent_items)))
        self._remember(jobs, [ranking for ranking, _ in scored])
        return scored

    def _remember(self, jobs: Sequence[RecJob], rankings: Sequence[Ranking]) -> None:
        """Keep each experiment request's arm (and, interleaved, each position's team) for the attribution window."""
        kept = [
            (job, ranking)
            for job, ranking in zip(jobs, rankings, strict=True)
            if job.assignment.experiment is not None and job.request_id
        ]
        if not kept:
            return
        entries = {job.request_id: _encode_arm(job.assignment, ranking) for job, ranking in kept}
        users = {job.request_id: job.request.user_id for job, _ in kept}
        try:
            self.user_state.remember_requests(entries, self.attribution.window_seconds, users)
        except Exception as exc:
            self.metrics.state_errors.labels("remember").inc(len(entries))
            log.debug("remembering %d experiment requests failed: %s", len(entries), exc)

    def _with_live_state(self, requests: list[RecRequest]) -> tuple[list[RecRequest], bool]:
        """Users' requests with their live recent and purchased items (sessions carry their own), and whether
        the live state could be read."""
        found, live = self._read_states([r.user_id for r in requests if r.user_id is not None])
        states = iter(found)
        out = [request if request.user_id is None else _with_state(request, next(states)) for request in requests]
        return out, live

    def _read_states(self, user_ids: Sequence[str]) -> tuple[list[UserState], bool]:
        """One read for every user; if the state store fails, answer without live state (counted, flagged)."""
        if not user_ids:
            return [], True
        try:
            return self.user_state.get_many(user_ids), True
        except Exception as exc:
            self.metrics.state_errors.labels("read").inc(len(user_ids))
            log.debug("state read for %d users failed (%s); answering without live state", len(user_ids), exc)
            return [EMPTY] * len(user_ids), False


def interleave(first: Ranking, second: Ranking, k: int, teams: tuple[str, ...], seed: int) -> Ranking:
    """Team-draft merge of two arms' rankings (``core.experiments.team_draft``); each item names its team.

    Scores are each arm's own (not comparable across arms); the answer is a fallback when either arm's was.
    """
    by_id = ({item.item_id: item for item in first.items}, {item.item_id: item for item in second.items})
    merged = team_draft(
        [item.item_id for item in first.items], [item.item_id for item in second.items], k, random.Random(seed)
    )
    items = [replace(by_id[team][item_id], team=teams[team]) for item_id, team in merged]
    return Ranking(items, fallback=first.fallback or second.fallback, unknown_recent=first.unknown_recent)


def exposure_record(job: RecJob, route: str, items: Sequence[ScoredItem], fallback: bool) -> dict[str, Any]:
    """One line of ``landing/exposures`` (the contract in docs/ARCHITECTURE.md "Data contracts")."""
    options: RankOptions = job.request.options
    assignment = job.assignment
    return {
        "request_id": job.request_id,
        "ts": job.requested_at,
        "user_id": job.request.user_id,
        "session_id": job.session_id,
        "route": route,
        "model_name": job.loaded.name,
        "model_version": job.loaded.version,
        "experiment": assignment.experiment,
        "variant": assignment.variant,
        "fallback": fallback,
        "filters": {
            "exclude": options.exclude,
            "category": options.category,
            "min_price": options.min_price,
            "max_price": options.max_price,
            "diversity": options.diversity,
        },
        "items": [
            {"item_id": item.item_id, "position": position, "score": item.score, "team": item.team}
            for position, item in enumerate(items, start=1)
        ],
    }


def _encode_arm(assignment: Assignment, ranking: Ranking) -> str:
    teams = ",".join(item.team or "" for item in ranking.items) if assignment.interleaving else ""
    return f"{assignment.experiment}\t{assignment.variant}\t{teams}"


def _decode_arm(value: str) -> tuple[str, str, list[str]]:
    experiment, variant, teams = [*value.split("\t"), "", "", ""][:3]
    return experiment, variant, teams.split(",") if teams else []


def _with_state(request: RecRequest, live: UserState) -> RecRequest:
    return replace(request, recent_items=collapse_repeats(live.recent), purchased=live.purchased)


def _slots_by_model(jobs: Sequence[RecJob]) -> dict[int, tuple[LoadedModel, list[tuple[int, int]]]]:
    """``(job position, arm slot)`` per model: a swap between two requests of one batch leaves each on its
    own model; an interleaving request is scored by both arms (slots 0 and 1)."""
    groups: dict[int, tuple[LoadedModel, list[tuple[int, int]]]] = {}
    for pos, job in enumerate(jobs):
        models = job.assignment.arms if job.assignment.interleaving else (job.loaded,)
        for slot, model in enumerate(models):
            groups.setdefault(id(model), (model, []))[1].append((pos, slot))
    return groups
