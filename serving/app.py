"""FastAPI scoring API.

Routes: ``GET /health``; ``POST /v1/events`` (validate, update the real-time user state, append to
the landing zone in micro-batches; 202); ``GET /v1/recommendations/{user_id}`` (model + live state);
``POST /v1/recommendations`` (anonymous session from its recent items); ``GET
/v1/items/{item_id}/similar`` (cosine of the model's item vectors); ``GET /metrics`` (Prometheus).

``create_app`` builds everything (settings, registry, model store, state, landing writer) and starts
nothing: the first poll, the polling thread and the landing timer start with the app's lifespan, and
its shutdown flushes every accepted event. Every client error is a 4xx JSON ``{"error": ...}`` that
names the field; unexpected ones a 500 without a stack trace.
(No ``from __future__ import annotations``: FastAPI must resolve route annotations that use locals.)
"""

import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Config, load_config
from core.registry import ServingRegistry
from core.settings import Settings
from serving.batcher import MicroBatcher
from serving.events import LandingWriter, check_id, validate_batch
from serving.metrics import ApiMetrics
from serving.scorer import Ranking, RankOptions, RecRequest, ScoredItem
from serving.settings import serving_settings
from serving.state import EMPTY, LiveEvent, StateStore, UserState, collapse_repeats, open_state
from serving.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)

ExcludePolicy = Literal["purchased", "seen", "none"]


class ItemOut(BaseModel):
    item_id: str
    score: float
    reason: str | None = None


class ModelRef(BaseModel):
    name: str
    version: str


class RecommendationsOut(BaseModel):
    user_id: str | None
    items: list[ItemOut]
    model: ModelRef
    fallback: bool
    live_items: int = Field(description="Recent items from the live state / session used for this answer.")


class SimilarOut(BaseModel):
    item_id: str
    items: list[ItemOut]
    model: ModelRef


class SessionIn(BaseModel):
    """An anonymous session: what it viewed (oldest first) and bought, plus the ranking options."""

    model_config = ConfigDict(extra="forbid")

    recent_items: list[str] = Field(default_factory=list)
    purchased_items: list[str] = Field(default_factory=list)
    k: int = 10
    exclude: ExcludePolicy | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    diversity: float | None = None


class EventsIn(BaseModel):
    """A batch of events in the landing contract (user_id, item_id, event_type, ts, session_id, price, quantity, event_id)."""

    events: list[Any]


class EventErrorOut(BaseModel):
    index: int
    field: str
    message: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    errors: list[EventErrorOut]


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


@dataclass(frozen=True)
class RecJob:
    """One recommendation request for the micro-batcher; a user's (``user_id`` set) reads the live state first."""

    loaded: LoadedModel
    request: RecRequest


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or ("body" if "body" in loc else "request")


def install_error_handlers(app: FastAPI, max_k: int) -> None:
    """JSON errors for every failure; validation messages name the field (and ``k``'s range)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.message})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                messages.append("body: malformed JSON; send a JSON object")
                continue
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


class MetricsMiddleware:
    """Times every request by route template and refuses bodies over ``max_body_bytes`` (413).

    The limit holds for a declared ``Content-Length`` (refused before reading) and for a body sent
    without one (``Transfer-Encoding: chunked``), which is read up to the limit and refused as soon as
    it goes over: no route ever sees more than ``max_body_bytes``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse(
            status_code=413,
            content={
                "error": f"body: {size} bytes exceeds the {self.max_body_bytes}-byte limit; send less per request"
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._too_large(length.decode(errors="replace"))(scope, receive, send_status)
                return
            if length is None and b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                body = await self._read_capped(receive)
                if body is None:
                    await self._too_large(f"more than {self.max_body_bytes}")(scope, receive, send_status)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route, scope.get("method", ""), f"{status // 100}xx").observe(
                time.perf_counter() - start
            )

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """The whole streamed body, or None as soon as it passes ``max_body_bytes``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away: the route sees an empty body
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def build_store(settings: Settings | None = None, cfg: Config | None = None) -> ModelStore:
    """The model store for these settings: registry from ``Settings.registry``, cache under home."""
    srv = serving_settings(settings)
    scfg = (cfg or load_config()).serving
    return ModelStore(
        ServingRegistry.from_settings(srv),
        srv.cache_dir,
        scfg.poll_seconds,
        scorer_options={"index_kind": scfg.index, "index_exact_max_items": scfg.index_exact_max_items},
    )


def create_app(
    settings: Settings | None = None,
    cfg: Config | None = None,
    store: ModelStore | None = None,
    poll: bool = True,
    state: StateStore | None = None,
    landing: LandingWriter | None = None,
) -> FastAPI:
    """The scoring API. ``store``/``state``/``landing`` may be given (tests, embedding); ``poll=False`` skips the poll thread."""
    srv = serving_settings(settings)
    scfg = (cfg or load_config()).serving
    model_store = store or build_store(srv, cfg)
    user_state = state or open_state(srv.state_uri, scfg.state_max_users, scfg.state_max_recent, scfg.state_ttl_seconds)
    writer = landing or LandingWriter(
        srv.lake, scfg.landing_flush_events, scfg.landing_flush_seconds, scfg.landing_source
    )

    def snapshot() -> dict[str, Any]:
        info = model_store.describe()
        try:
            users: int | None = user_state.size()
        except Exception:
            users = None
        cur = model_store.current
        return {
            "model": None if cur is None else {"name": cur.name, "version": cur.version, "checksum": cur.checksum},
            "swaps": info["swaps"],
            "refused": info["refused"],
            "polls": info["polls"],
            "state_users": users,
            "landing_written": writer.written,
            "landing_pending": writer.pending,
            "landing_errors": writer.write_errors,
        }

    metrics = ApiMetrics(snapshot)

    def read_states(user_ids: Sequence[str]) -> list[UserState]:
        if not user_ids:
            return []
        try:
            return user_state.get_many(user_ids)
        except Exception as exc:
            metrics.state_errors.labels("read").inc(len(user_ids))
            log.debug("state read for %d users failed (%s); answering without live state", len(user_ids), exc)
            return [EMPTY] * len(user_ids)

    def score_batch(jobs: list[RecJob]) -> list[tuple[Ranking, int]]:
        """Runs on the batcher's thread: live states in one read, then one ``recommend_many`` per model."""
        states = iter(read_states([j.request.user_id for j in jobs if j.request.user_id is not None]))
        requests = []
        for job in jobs:
            req = job.request
            if req.user_id is not None:
                live = next(states)
                req = replace(req, recent_items=collapse_repeats(live.recent), purchased=live.purchased)
            requests.append(req)
        out: dict[int, tuple[Ranking, int]] = {}
        by_model: dict[int, list[int]] = {}
        for n, job in enumerate(jobs):  # a swap between two requests of one batch: each keeps its model
            by_model.setdefault(id(job.loaded), []).append(n)
        for rows in by_model.values():
            rankings = jobs[rows[0]].loaded.scorer.recommend_many([requests[n] for n in rows])
            for n, ranking in zip(rows, rankings, strict=True):
                out[n] = (ranking, len(requests[n].recent_items))
        return [out[n] for n in range(len(jobs))]

    batcher: MicroBatcher[RecJob, tuple[Ranking, int]] = MicroBatcher(
        score_batch, max_batch=scfg.score_max_batch, name="mercato-scorer", on_batch=metrics.batch_size.observe
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        model_store.refresh()
        if poll:
            model_store.start()
        writer.start()
        batcher.start()
        try:
            yield
        finally:
            batcher.close()
            model_store.stop()
            flushed = writer.close()
            log.info("shutdown: flushed %d events to the landing zone (%d in total)", flushed, writer.written)
            user_state.close()

    app = FastAPI(title="Mercato scoring API", version="1", lifespan=lifespan)
    app.state.store = model_store
    app.state.user_state = user_state
    app.state.landing = writer
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.serving_config = scfg
    app.add_middleware(MetricsMiddleware, metrics=metrics, max_body_bytes=scfg.max_body_bytes)
    install_error_handlers(app, scfg.max_k)
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    }

    def require_model() -> LoadedModel:
        loaded = model_store.current
        if loaded is None:
            reason = model_store.status.last_error or f"no champion.json in {model_store.registry.uri} yet"
            raise ApiError(503, f"no model loaded yet: {reason}")
        return loaded

    def valid_id(field: str, value: str) -> str:
        try:
            return check_id(value, scfg.max_id_length)
        except ValueError as exc:
            raise ApiError(422, f"{field}: {exc}") from None

    def check_k(k: int) -> int:
        if not 1 <= k <= scfg.max_k:
            raise ApiError(422, f"k: must be between 1 and {scfg.max_k} (got {k})")
        return k

    def rank_options(
        exclude: str | None,
        category: str | None,
        min_price: float | None,
        max_price: float | None,
        diversity: float | None,
    ) -> RankOptions:
        for name, price in (("min_price", min_price), ("max_price", max_price)):
            if price is not None and not (math.isfinite(price) and price >= 0):
                raise ApiError(422, f"{name}: must be a finite number >= 0 (got {price})")
        if min_price is not None and max_price is not None and min_price > max_price:
            raise ApiError(422, f"min_price: {min_price} is above max_price {max_price}")
        if diversity is not None and not (math.isfinite(diversity) and 0.0 <= diversity <= 1.0):
            raise ApiError(422, f"diversity: must be within 0..1 (got {diversity})")
        return RankOptions(
            exclude=exclude or scfg.exclude,
            category=None if category is None else valid_id("category", category),
            min_price=min_price,
            max_price=max_price,
            diversity=scfg.diversity if diversity is None else diversity,
            diversity_pool=scfg.diversity_pool,
        )

    def answer(route: str, loaded: LoadedModel, user_id: str | None, ranking: Ranking, live: int) -> RecommendationsOut:
        if ranking.fallback:
            metrics.fallbacks.labels(route).inc()
        return RecommendationsOut(
            user_id=user_id,
            items=[_item(it) for it in ranking.items],
            model=ModelRef(name=loaded.name, version=loaded.version),
            fallback=ranking.fallback,
            live_items=live,
        )

    @app.get("/health", response_model=HealthOut, responses={503: {"model": ErrorOut}})
    def health() -> HealthOut:
        loaded = require_model()
        return HealthOut(
            status="ok",
            model=ModelRef(name=loaded.name, version=loaded.version),
            checksum=loaded.checksum,
            loaded_at=loaded.loaded_at,
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/events", status_code=202, response_model=EventsOut, responses=errors)
    def post_events(batch: EventsIn) -> EventsOut:
        if len(batch.events) > scfg.max_events_per_batch:
            metrics.batches_rejected.labels("too_large").inc()
            raise ApiError(
                413,
                f"events: batch of {len(batch.events)} events exceeds max_events_per_batch={scfg.max_events_per_batch}; split it",
            )
        accepted, problems = validate_batch(batch.events, scfg.max_id_length)
        ordered = sorted(accepted, key=lambda r: dt.datetime.fromisoformat(r["ts"]))
        try:
            user_state.record([LiveEvent(r["user_id"], r["item_id"], r["event_type"]) for r in ordered])
        except Exception as exc:
            metrics.state_errors.labels("write").inc()
            metrics.batches_rejected.labels("state_unavailable").inc()
            log.warning("state write of %d events failed: %s", len(ordered), exc)
            raise ApiError(
                503, f"state: the real-time state store is unavailable ({type(exc).__name__}); retry"
            ) from None
        writer.add(accepted)
        rejected_idx = {p.index for p in problems}
        metrics.events_accepted.inc(len(accepted))
        for p in problems:
            metrics.events_rejected.labels(p.field.split(".")[0]).inc()
        return EventsOut(
            accepted=len(accepted),
            rejected=len(rejected_idx),
            errors=[EventErrorOut(index=p.index, field=p.field, message=p.message) for p in problems],
        )

    @app.get("/v1/recommendations/{user_id}", response_model=RecommendationsOut, responses=errors)
    async def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=scfg.max_id_length)],
        k: Annotated[int, Query(description=f"number of items, 1..{scfg.max_k}")] = 10,
        exclude: Annotated[ExcludePolicy | None, Query(description="purchased | seen | none")] = None,
        category: Annotated[str | None, Query(max_length=scfg.max_id_length)] = None,
        min_price: Annotated[float | None, Query(ge=0)] = None,
        max_price: Annotated[float | None, Query(ge=0)] = None,
        diversity: Annotated[float | None, Query(ge=0, le=1, description="MMR weight over categories")] = None,
    ) -> RecommendationsOut:
        check_k(k)
        uid = valid_id("user_id", user_id)
        options = rank_options(exclude, category, min_price, max_price, diversity)
        loaded = require_model()
        ranking, live = await batcher.submit(RecJob(loaded, RecRequest(uid, k, options=options)))
        return answer("/v1/recommendations/{user_id}", loaded, uid, ranking, live)

    @app.post("/v1/recommendations", response_model=RecommendationsOut, responses=errors)
    async def session_recommendations(session: Annotated[SessionIn, Body()]) -> RecommendationsOut:
        check_k(session.k)
        for name, ids in (("recent_items", session.recent_items), ("purchased_items", session.purchased_items)):
            if len(ids) > scfg.state_max_recent:
                raise ApiError(422, f"{name}: {len(ids)} items; at most state_max_recent={scfg.state_max_recent}")
        recent = collapse_repeats(valid_id(f"recent_items.{n}", i) for n, i in enumerate(session.recent_items))
        purchased = frozenset(valid_id(f"purchased_items.{n}", i) for n, i in enumerate(session.purchased_items))
        options = rank_options(
            session.exclude, session.category, session.min_price, session.max_price, session.diversity
        )
        loaded = require_model()
        request = RecRequest(None, session.k, recent, purchased, options)
        ranking, live = await batcher.submit(RecJob(loaded, request))
        return answer("/v1/recommendations", loaded, None, ranking, live)

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarOut, responses={404: {"model": ErrorOut}, **errors})
    def similar_items(
        item_id: Annotated[str, Path(min_length=1, max_length=scfg.max_id_length)],
        k: Annotated[int, Query(description=f"number of items, 1..{scfg.max_k}")] = 10,
        category: Annotated[str | None, Query(max_length=scfg.max_id_length)] = None,
        min_price: Annotated[float | None, Query(ge=0)] = None,
        max_price: Annotated[float | None, Query(ge=0)] = None,
    ) -> SimilarOut:
        check_k(k)
        iid = valid_id("item_id", item_id)
        options = rank_options("none", category, min_price, max_price, 0.0)
        loaded = require_model()
        found = loaded.scorer.similar(iid, k, options)
        if found is None:
            raise ApiError(404, f"item_id: {iid!r} is not in the catalogue of {loaded.name}/{loaded.version}")
        return SimilarOut(
            item_id=iid, items=[_item(it) for it in found], model=ModelRef(name=loaded.name, version=loaded.version)
        )

    return app


def _item(it: ScoredItem) -> ItemOut:
    return ItemOut(item_id=it.item_id, score=it.score, reason=it.reason)
