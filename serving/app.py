"""FastAPI scoring API: ``/health`` and ``/v1/recommendations/{user_id}``.

``create_app`` builds everything (settings, registry, model store) and starts nothing: the first
poll and the polling thread start with the app's lifespan, so importing this module is free.
Client errors come back as JSON ``{"error": ...}``; unexpected ones as a 500 without a stack trace.
(No ``from __future__ import annotations``: FastAPI must resolve route annotations that use locals.)
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.settings import Settings
from models.registry import ServingRegistry
from serving.settings import ServingConfig, serving_settings
from serving.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)


class ItemOut(BaseModel):
    item_id: str
    score: float


class ModelRef(BaseModel):
    name: str
    version: str


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[ItemOut]
    model: ModelRef
    fallback: bool


class HealthOut(BaseModel):
    status: str
    model: ModelRef
    checksum: str
    loaded_at: str


class ErrorOut(BaseModel):
    error: str


class ApiError(Exception):
    """A client-facing error with its HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI, max_k: int) -> None:
    """JSON errors for every failure; validation messages name the field (and ``k``'s range)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.message})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        for err in exc.errors():
            field = _field_name(err.get("loc", ()))
            hint = f" (allowed: integer 1..{max_k})" if field == "k" else ""
            messages.append(f"{field}: {err.get('msg', 'invalid')}{hint}")
        return JSONResponse(status_code=422, content={"error": "; ".join(messages)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": f"internal error ({type(exc).__name__})"})


def build_store(settings: Settings | None = None, cfg: dict[str, Any] | None = None) -> ModelStore:
    """The model store for these settings: registry from ``Settings.registry``, cache under home."""
    srv = serving_settings(settings)
    return ModelStore(ServingRegistry.from_settings(srv), srv.cache_dir, ServingConfig.from_config(cfg).poll_seconds)


def create_app(
    settings: Settings | None = None,
    cfg: dict[str, Any] | None = None,
    store: ModelStore | None = None,
    poll: bool = True,
) -> FastAPI:
    """The scoring API. ``store`` may be given (tests, embedding); ``poll=False`` skips the poll thread."""
    serving_cfg = ServingConfig.from_config(cfg)
    model_store = store or build_store(settings, cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        model_store.refresh()
        if poll:
            model_store.start()
        try:
            yield
        finally:
            model_store.stop()

    app = FastAPI(title="Mercato scoring API", version="1", lifespan=lifespan)
    app.state.store = model_store
    app.state.serving_config = serving_cfg
    install_error_handlers(app, serving_cfg.max_k)

    def require_model() -> LoadedModel:
        loaded = model_store.current
        if loaded is None:
            reason = model_store.status.last_error or f"no champion.json in {model_store.registry.uri} yet"
            raise ApiError(503, f"no model loaded yet: {reason}")
        return loaded

    @app.get("/health", response_model=HealthOut, responses={503: {"model": ErrorOut}})
    def health() -> HealthOut:
        loaded = require_model()
        return HealthOut(
            status="ok",
            model=ModelRef(name=loaded.name, version=loaded.version),
            checksum=loaded.checksum,
            loaded_at=loaded.loaded_at,
        )

    @app.get(
        "/v1/recommendations/{user_id}",
        response_model=RecommendationsOut,
        responses={422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    )
    def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        k: Annotated[int, Query(description=f"number of items, 1..{serving_cfg.max_k}")] = 10,
    ) -> RecommendationsOut:
        if not 1 <= k <= serving_cfg.max_k:
            raise ApiError(422, f"k: must be between 1 and {serving_cfg.max_k} (got {k})")
        loaded = require_model()
        ranking = loaded.scorer.recommend(user_id, k)
        return RecommendationsOut(
            user_id=user_id,
            items=[ItemOut(item_id=it.item_id, score=it.score) for it in ranking.items],
            model=ModelRef(name=loaded.name, version=loaded.version),
            fallback=ranking.fallback,
        )

    return app
