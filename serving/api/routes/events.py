"""``POST /v1/events``: validate each event, update the live user state, log them durably (202).

The order is the promise: duplicates are told apart first (``serving.idempotency``: an
``Idempotency-Key`` already answered replays its answer; an ``event_id`` accepted before with the same
payload is acknowledged and not landed again, with another payload rejected on that event), then the
state is written (while it is down the whole batch is refused with 503 + Retry-After, so an accepted
event always shows in the user's next recommendations), then the batch is appended to the write-ahead
log and synced (group commit) — only then the 202. A landing zone that is behind (``landing_max_pending``) or a
log that cannot be written answers 503 + Retry-After, nothing acknowledged. Events may carry the
``request_id`` of the recommendation they follow and the item's ``position`` in it: both are landed
with the event, and an event whose request an experiment served is counted for its arm in /metrics.
"""

import datetime as dt
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from serving.api.deps import Runtime, WritesEvents
from serving.api.errors import CLIENT_ERRORS, ApiError, unavailable
from serving.api.schemas import EventErrorOut, EventsIn, EventsOut
from serving.events import EventError, LandingFull, check_batch
from serving.idempotency import IdempotencyConflict, check_key
from serving.state import LiveEvent, StateUnavailable
from serving.wal import WalError

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[WritesEvents])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A unique id of this batch (e.g. a UUID): a retry with the same key and body lands nothing "
        "twice and gets the first answer back.",
    ),
]


@router.post("/v1/events", status_code=202, response_model=EventsOut, responses={409: {}, **CLIENT_ERRORS})
def post_events(
    batch: EventsIn, runtime: Runtime, request: Request, response: Response, idempotency_key: IdempotencyKey = None
) -> Any:
    config, metrics = runtime.config, runtime.metrics
    retry_after = config.retry_after_seconds
    if len(batch.events) > config.max_events_per_batch:
        metrics.batches_rejected.labels("too_large").inc()
        raise ApiError(
            413,
            f"events: batch of {len(batch.events)} events exceeds max_events_per_batch={config.max_events_per_batch}; split it",
        )
    if idempotency_key is not None:
        try:
            check_key(idempotency_key)
        except ValueError as exc:
            raise ApiError(422, f"Idempotency-Key: {exc}") from None
    key = getattr(request.state, "api_key", None)
    scope = key.key_id if key is not None else "-"
    idempotency = runtime.idempotency
    try:
        claim = idempotency.begin(scope, idempotency_key, batch.events)
    except IdempotencyConflict as exc:
        raise ApiError(exc.status_code, exc.message) from None
    except StateUnavailable as exc:
        return _state_down(runtime, exc, 0)
    if claim.replay is not None:
        metrics.idempotent_replays.inc()
        response.headers["Idempotent-Replayed"] = "true"
        return claim.replay

    accepted, problems = check_batch(batch.events, config.max_id_length)
    fresh: list[tuple[int, dict[str, Any], str]] = []
    try:
        fresh, duplicates, conflicts = idempotency.claim_events(accepted)
        oldest_first = sorted(fresh, key=lambda item: dt.datetime.fromisoformat(item[1]["ts"]))
        runtime.user_state.record(
            [LiveEvent(record["user_id"], record["item_id"], record["event_type"]) for _, record, _ in oldest_first]
        )
    except StateUnavailable as exc:
        idempotency.release_events(fresh)
        idempotency.abort(claim)
        return _state_down(runtime, exc, len(accepted))
    problems = sorted(
        [*problems, *(EventError(index, "event_id", message) for index, message in conflicts)],
        key=lambda problem: problem.index,
    )
    body = EventsOut(
        accepted=len(fresh) + len(duplicates),
        rejected=len({problem.index for problem in problems}),
        duplicates=len(duplicates),
        errors=[EventErrorOut(index=p.index, field=p.field, message=p.message) for p in problems],
    ).model_dump()
    records = [record for _, record, _ in fresh]
    try:
        runtime.landing.add(records, marks=idempotency.marks(claim, body, fresh))
    except (LandingFull, WalError, TimeoutError) as exc:
        idempotency.release_events(fresh)
        idempotency.abort(claim)
        reason = "landing_full" if isinstance(exc, LandingFull) else "log_unwritable"
        metrics.batches_rejected.labels(reason).inc()
        log.warning("events refused (%s): %s", reason, exc)
        raise unavailable(f"events: not accepted, {exc}; nothing of this batch was kept, retry", retry_after) from None
    try:  # the batch is durable: what follows is bookkeeping (the log's replay sets the marks again)
        idempotency.events_done(fresh)
        idempotency.complete(claim, body)
    except StateUnavailable as exc:
        log.warning("events logged, but their idempotency marks not stored yet: %s", exc)
    metrics.events_accepted.inc(len(records))
    metrics.event_duplicates.inc(len(duplicates))
    runtime.attribute(records)
    for problem in problems:
        metrics.events_rejected.labels(problem.field.split(".")[0]).inc()
    return body


def _state_down(runtime: Any, exc: Exception, n: int) -> Any:
    runtime.metrics.state_errors.labels("write").inc()
    runtime.metrics.batches_rejected.labels("state_unavailable").inc()
    log.warning("state write of %d events failed: %s", n, exc)
    cause = exc.__cause__ or exc
    raise unavailable(
        f"state: the real-time state store is unavailable ({type(cause).__name__}); retry",
        runtime.config.retry_after_seconds,
    )
