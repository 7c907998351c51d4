"""``POST /v1/events``: validate each event, update the live user state, buffer for the landing zone (202).

The state is written before the events are buffered: while it is down the whole batch is refused (503,
retry), so an accepted event always shows in the user's next recommendations. Events may carry the
``request_id`` of the recommendation they follow and the item's ``position`` in it: both are landed
with the event, and an event whose request an experiment served is counted for its arm in /metrics.
"""

import datetime as dt
import logging

from fastapi import APIRouter

from serving.api.deps import Runtime
from serving.api.errors import CLIENT_ERRORS, ApiError
from serving.api.schemas import EventErrorOut, EventsIn, EventsOut
from serving.events import validate_batch
from serving.state import LiveEvent

log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/events", status_code=202, response_model=EventsOut, responses=CLIENT_ERRORS)
def post_events(batch: EventsIn, runtime: Runtime) -> EventsOut:
    config, metrics = runtime.config, runtime.metrics
    if len(batch.events) > config.max_events_per_batch:
        metrics.batches_rejected.labels("too_large").inc()
        raise ApiError(
            413,
            f"events: batch of {len(batch.events)} events exceeds max_events_per_batch={config.max_events_per_batch}; split it",
        )
    accepted, problems = validate_batch(batch.events, config.max_id_length)
    oldest_first = sorted(accepted, key=lambda record: dt.datetime.fromisoformat(record["ts"]))
    try:
        runtime.user_state.record(
            [LiveEvent(record["user_id"], record["item_id"], record["event_type"]) for record in oldest_first]
        )
    except Exception as exc:
        metrics.state_errors.labels("write").inc()
        metrics.batches_rejected.labels("state_unavailable").inc()
        log.warning("state write of %d events failed: %s", len(oldest_first), exc)
        raise ApiError(503, f"state: the real-time state store is unavailable ({type(exc).__name__}); retry") from None
    runtime.landing.add(accepted)
    metrics.events_accepted.inc(len(accepted))
    runtime.attribute(accepted)
    for problem in problems:
        metrics.events_rejected.labels(problem.field.split(".")[0]).inc()
    return EventsOut(
        accepted=len(accepted),
        rejected=len({problem.index for problem in problems}),
        errors=[
            EventErrorOut(index=problem.index, field=problem.field, message=problem.message) for problem in problems
        ],
    )
