"""What the routes depend on: the runtime, the serving model, and each ranking route's checked input.

``Runtime`` and ``Model`` read ``request.app.state.runtime``. ``require_scope`` (``ReadsRecommendations``,
``WritesEvents``, ``Administers``) authenticates the API key and checks its scope; routers list it in
their ``dependencies`` so it runs before anything else (401/403 before any 422). The ranking parameters are declared once
here (``UserIdPath``, ``KQuery``, ``ExcludeQuery``, ...). Each ranking route takes its input from one
dependency that checks all of it (``UserRecommendation``, ``SessionRecommendation``, ``SimilarItems``)
rather than from one dependency per parameter, because FastAPI calls a dependency as soon as its own
parameters parse: a separate ``K`` would answer "k: must be between ..." before another parameter's
type error, and ``Model`` 503 before any 422. In one dependency the order of errors stays: every
malformed parameter (FastAPI's validation, one message), then k's range, the ids, the filters, and
last 503 while no model is loaded.

Bounds that come from ``[serving]`` (k's range, id length) are checked per request against
``runtime.config``; an id over ``max_id_length`` gets the message FastAPI gives a too-long string.
"""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter, ValidationError

from core.config import EXCLUDE_POLICIES, ServingConfig
from serving.api.errors import ApiError
from serving.api.schemas import ExcludePolicy, SessionIn
from serving.auth import ADMIN, ApiKey
from serving.events import check_id
from serving.runtime import RecJob, ServingRuntime
from serving.scorer import RankOptions, RecRequest
from serving.state import collapse_repeats
from serving.store import LoadedModel


async def get_runtime(request: Request) -> ServingRuntime:
    return request.app.state.runtime


Runtime = Annotated[ServingRuntime, Depends(get_runtime)]

_BEARER = "bearer "
_HOW = "send an API key as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>')"


def presented_key(request: Request) -> str | None:
    """The API key a request carries (``Authorization: Bearer``, else ``X-API-Key``)."""
    header = request.headers.get("authorization")
    if header and header[: len(_BEARER)].lower() == _BEARER:
        return header[len(_BEARER) :].strip() or None
    return request.headers.get("x-api-key") or None


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey | None]]:
    """A dependency that lets the request through only with a valid key that has ``scope`` (401 / 403 as JSON).

    The key found is kept on ``request.state.api_key`` (its id is what audits record). With
    ``RECSYS_AUTH_DISABLED`` (never the default) every request passes.
    """

    async def authenticate(request: Request) -> ApiKey | None:
        runtime: ServingRuntime = request.app.state.runtime
        keys = runtime.keys
        if keys.disabled:
            request.state.api_key = None
            return None
        presented = presented_key(request)
        challenge = {"WWW-Authenticate": "Bearer"}
        hint = "" if keys.keys else " (this API has no keys yet: python -m serving.keys create ...)"
        if presented is None:
            runtime.metrics.auth_failures.labels("401").inc()
            raise ApiError(401, f"authentication: this route needs an API key; {_HOW}{hint}", challenge)
        key = keys.verify(presented)
        if key is None:
            runtime.metrics.auth_failures.labels("401").inc()
            raise ApiError(
                401, f"authentication: the API key is not valid (unknown, revoked or mistyped){hint}", challenge
            )
        if not key.allows(scope):
            runtime.metrics.auth_failures.labels("403").inc()
            raise ApiError(
                403,
                f"authorization: key {key.key_id!r} lacks the scope {scope!r} this route needs "
                f"(it has {', '.join(sorted(key.scopes))})",
            )
        request.state.api_key = key
        return key

    return authenticate


ReadsRecommendations = Depends(require_scope("recs:read"))
WritesEvents = Depends(require_scope("events:write"))
Administers = Depends(require_scope(ADMIN))


def require_model(runtime: Runtime) -> LoadedModel:
    """The serving model, read once for the request (a swap never changes it midway); 503 before the first."""
    store = runtime.store
    loaded = store.current
    if loaded is None:
        reason = store.status.last_error or f"no champion.json in {store.registry.uri} yet"
        raise ApiError(503, f"no model loaded yet: {reason}")
    return loaded


Model = Annotated[LoadedModel, Depends(require_model)]

_ID_BOUND = "at most [serving] max_id_length characters"
UserIdPath = Annotated[str, Path(min_length=1, description=_ID_BOUND)]
ItemIdPath = Annotated[str, Path(min_length=1, description=_ID_BOUND)]
KQuery = Annotated[int, Query(description="number of items, 1..[serving] max_k")]
ExcludeQuery = Annotated[ExcludePolicy | None, Query(description=" | ".join(EXCLUDE_POLICIES))]
CategoryQuery = Annotated[str | None, Query(description=_ID_BOUND)]
SessionIdQuery = Annotated[
    str | None, Query(description=f"the shop's session id (logged with the exposure); {_ID_BOUND}")
]
UserIdQuery = Annotated[
    str | None, Query(description=f"who is looking (logged with the exposure, the experiment unit); {_ID_BOUND}")
]
MinPriceQuery = Annotated[float | None, Query(ge=0)]
MaxPriceQuery = Annotated[float | None, Query(ge=0)]
DiversityQuery = Annotated[float | None, Query(ge=0, le=1, description="MMR weight over categories")]


@lru_cache(maxsize=4)
def _bounded_string(max_length: int) -> TypeAdapter[str]:
    return TypeAdapter(Annotated[str, StringConstraints(max_length=max_length)])


def check_id_lengths(config: ServingConfig, *params: tuple[str, str, str | None]) -> None:
    """422 naming every ``(location, name, value)`` longer than ``max_id_length``, worded as FastAPI words it."""
    errors: list[dict[str, Any]] = []
    for location, name, value in params:
        if value is None:
            continue
        try:
            _bounded_string(config.max_id_length).validate_python(value)
        except ValidationError as exc:
            errors.extend({**error, "loc": (location, name)} for error in exc.errors())
    if errors:
        raise RequestValidationError(errors)


def check_k(k: int, config: ServingConfig) -> int:
    if not 1 <= k <= config.max_k:
        raise ApiError(422, f"k: must be between 1 and {config.max_k} (got {k})")
    return k


def valid_id(field: str, value: str, config: ServingConfig) -> str:
    """``value`` as ``serving.events.check_id`` normalises it; 422 naming ``field`` if it is not a usable id."""
    try:
        return check_id(value, config.max_id_length)
    except ValueError as exc:
        raise ApiError(422, f"{field}: {exc}") from None


def rank_options(
    config: ServingConfig,
    exclude: str | None,
    category: str | None,
    min_price: float | None,
    max_price: float | None,
    diversity: float | None,
) -> RankOptions:
    """A request's ranking options, checked, with ``[serving]``'s defaults for what it leaves out."""
    for name, price in (("min_price", min_price), ("max_price", max_price)):
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ApiError(422, f"{name}: must be a finite number >= 0 (got {price})")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ApiError(422, f"min_price: {min_price} is above max_price {max_price}")
    if diversity is not None and not (math.isfinite(diversity) and 0.0 <= diversity <= 1.0):
        raise ApiError(422, f"diversity: must be within 0..1 (got {diversity})")
    return RankOptions(
        exclude=exclude or config.exclude,
        category=None if category is None else valid_id("category", category, config),
        min_price=min_price,
        max_price=max_price,
        diversity=config.diversity if diversity is None else diversity,
        diversity_pool=config.diversity_pool,
    )


def _checked_path_ranking(
    runtime: ServingRuntime,
    id_name: str,
    id_value: str,
    k: int,
    exclude: str | None,
    category: str | None,
    min_price: float | None,
    max_price: float | None,
    diversity: float | None,
    query_ids: tuple[tuple[str, str | None], ...] = (),
) -> tuple[LoadedModel, str, RankOptions, tuple[str | None, ...]]:
    """A GET ranking route's checks in their order: id lengths, ``k``, the path id, the query ids
    (``query_ids``: name, value), the filters, the model."""
    config = runtime.config
    lengths = [("query", name, value) for name, value in query_ids]
    check_id_lengths(config, ("path", id_name, id_value), *lengths, ("query", "category", category))
    check_k(k, config)
    valid = valid_id(id_name, id_value, config)
    extra = tuple(None if value is None else valid_id(name, value, config) for name, value in query_ids)
    options = rank_options(config, exclude, category, min_price, max_price, diversity)
    return require_model(runtime), valid, options, extra


async def user_recommendation(
    runtime: Runtime,
    user_id: UserIdPath,
    k: KQuery = 10,
    exclude: ExcludeQuery = None,
    category: CategoryQuery = None,
    min_price: MinPriceQuery = None,
    max_price: MaxPriceQuery = None,
    diversity: DiversityQuery = None,
    session_id: SessionIdQuery = None,
) -> RecJob:
    """``GET /v1/recommendations/{user_id}``'s job: the user (live state is read when it is scored)."""
    loaded, user, options, (session,) = _checked_path_ranking(
        runtime,
        "user_id",
        user_id,
        k,
        exclude,
        category,
        min_price,
        max_price,
        diversity,
        (("session_id", session_id),),
    )
    return RecJob(loaded, RecRequest(user, k, options=options), session_id=session)


async def session_recommendation(runtime: Runtime, session: Annotated[SessionIn, Body()]) -> RecJob:
    """``POST /v1/recommendations``'s job: an anonymous session with its own recent and purchased items."""
    config = runtime.config
    check_k(session.k, config)
    for name, ids in (("recent_items", session.recent_items), ("purchased_items", session.purchased_items)):
        if len(ids) > config.state_max_recent:
            raise ApiError(422, f"{name}: {len(ids)} items; at most state_max_recent={config.state_max_recent}")
    recent = collapse_repeats(
        valid_id(f"recent_items.{n}", item, config) for n, item in enumerate(session.recent_items)
    )
    purchased = frozenset(
        valid_id(f"purchased_items.{n}", item, config) for n, item in enumerate(session.purchased_items)
    )
    check_id_lengths(config, ("body", "session_id", session.session_id))
    session_id = None if session.session_id is None else valid_id("session_id", session.session_id, config)
    options = rank_options(
        config, session.exclude, session.category, session.min_price, session.max_price, session.diversity
    )
    return RecJob(
        require_model(runtime), RecRequest(None, session.k, recent, purchased, options), session_id=session_id
    )


@dataclass(frozen=True)
class SimilarQuery:
    """``GET /v1/items/{item_id}/similar``, checked: the model, the item, ``k`` and the filters."""

    loaded: LoadedModel
    item_id: str
    k: int
    options: RankOptions
    user_id: str | None = None
    session_id: str | None = None

    def job(self) -> RecJob:
        """The query as a job for ``ServingRuntime.assign`` / ``similar`` (the user is not scored, only logged)."""
        return RecJob(self.loaded, RecRequest(self.user_id, self.k, options=self.options), session_id=self.session_id)


async def similar_items(
    runtime: Runtime,
    item_id: ItemIdPath,
    k: KQuery = 10,
    category: CategoryQuery = None,
    min_price: MinPriceQuery = None,
    max_price: MaxPriceQuery = None,
    user_id: UserIdQuery = None,
    session_id: SessionIdQuery = None,
) -> SimilarQuery:
    """``GET /v1/items/{item_id}/similar``'s query: nothing excluded but the item itself, no diversity."""
    loaded, item, options, (user, session) = _checked_path_ranking(
        runtime,
        "item_id",
        item_id,
        k,
        "none",
        category,
        min_price,
        max_price,
        0.0,
        (("user_id", user_id), ("session_id", session_id)),
    )
    return SimilarQuery(loaded, item, k, options, user, session)


UserRecommendation = Annotated[RecJob, Depends(user_recommendation)]
SessionRecommendation = Annotated[RecJob, Depends(session_recommendation)]
SimilarItems = Annotated[SimilarQuery, Depends(similar_items)]
