"""``GET /health`` (the serving model, 503 before the first) and ``GET /metrics`` (Prometheus)."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import Model, Runtime
from serving.api.schemas import ErrorOut, HealthOut, ModelRef

router = APIRouter()


@router.get("/health", response_model=HealthOut, responses={503: {"model": ErrorOut}})
def health(loaded: Model) -> HealthOut:
    return HealthOut(status="ok", model=ModelRef.of(loaded), checksum=loaded.checksum, loaded_at=loaded.loaded_at)


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(runtime: Runtime) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
