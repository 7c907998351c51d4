"""``GET /v1/recommendations/{user_id}`` (model + the user's live state) and ``POST /v1/recommendations``
(an anonymous session from its recent items): both scored by the runtime's micro-batcher.

Each answer carries a ``request_id`` and the model, experiment and variant that produced it, and is
logged to the exposure log (``ServingRuntime.served``). It says when it is degraded: ``"live": false``
(the real-time state could not be read: model and training history only), ``"fallback": true`` with
``fallback_reason`` (``unknown_user``, or ``model_error``: the model failed, popularity answered). A
request beyond the scorer's queue or deadline gets 503 with ``Retry-After`` (load shedding).
"""

from fastapi import APIRouter

from serving.api.deps import ReadsRecommendations, Runtime, SessionRecommendation, UserRecommendation
from serving.api.errors import CLIENT_ERRORS
from serving.api.schemas import ItemOut, ModelRef, RecommendationsOut
from serving.runtime import RecJob, ServingRuntime

router = APIRouter(dependencies=[ReadsRecommendations])

USER_ROUTE = "/v1/recommendations/{user_id}"
SESSION_ROUTE = "/v1/recommendations"


@router.get(USER_ROUTE, response_model=RecommendationsOut, responses=CLIENT_ERRORS)
async def recommendations(job: UserRecommendation, runtime: Runtime) -> RecommendationsOut:
    return await _recommend(runtime, job, USER_ROUTE)


@router.post(SESSION_ROUTE, response_model=RecommendationsOut, responses=CLIENT_ERRORS)
async def session_recommendations(job: SessionRecommendation, runtime: Runtime) -> RecommendationsOut:
    return await _recommend(runtime, job, SESSION_ROUTE)


async def _recommend(runtime: ServingRuntime, job: RecJob, route: str) -> RecommendationsOut:
    job = runtime.assign(job, unit=job.request.user_id if job.request.user_id is not None else job.session_id)
    ranking, live_items = await runtime.batcher.submit(job)
    runtime.served(job, route, ranking.items, ranking.fallback)
    return RecommendationsOut(
        request_id=job.request_id,
        user_id=job.request.user_id,
        items=[ItemOut.of(item) for item in ranking.items],
        model=ModelRef.of(job.loaded),
        experiment=job.assignment.experiment,
        variant=job.assignment.variant,
        fallback=ranking.fallback,
        fallback_reason=ranking.fallback_reason,
        live=ranking.live,
        live_items=live_items,
    )
