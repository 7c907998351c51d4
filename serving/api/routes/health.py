"""``GET /health`` (no key needed) and ``GET /metrics`` (Prometheus; the ``admin`` scope).

``/health`` is 503 before the first model, else 200 with ``status`` ``ok`` or ``degraded`` and, per
failing component, why: ``state`` (the real-time state store is down: answers come from the model
alone, events get 503), ``landing`` / ``exposures`` (records wait for a lake that cannot be written),
``registry`` (unreachable: the current or cached champion keeps serving). It never waits on a
dependency longer than one state-store timeout (and not at all while the state's breaker is open).
"""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.deps import Administers, Model, Runtime
from serving.api.schemas import ErrorOut, HealthOut, ModelRef

router = APIRouter()


@router.get("/health", response_model=HealthOut, responses={503: {"model": ErrorOut}})
def health(loaded: Model, runtime: Runtime) -> HealthOut:
    runtime.user_state.healthy()  # one ping (bounded by the state timeout) unless the breaker is open
    degraded = runtime.degraded()
    return HealthOut(
        status="degraded" if degraded else "ok",
        model=ModelRef.of(loaded),
        checksum=loaded.checksum,
        loaded_at=loaded.loaded_at,
        degraded=degraded,
        auth="disabled" if runtime.keys.disabled else "on",
    )


@router.get("/metrics", include_in_schema=False, dependencies=[Administers])
def prometheus_metrics(runtime: Runtime) -> Response:
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
