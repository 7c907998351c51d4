"""Every failure as JSON ``{"error": ...}``: client errors name the field (and the fix), others a bare 500.

Overload and unavailable dependencies are 503 with ``Retry-After`` (``[serving] retry_after_seconds``):
load shedding (``serving.batcher.Overloaded``), a state store that is down (``StateUnavailable``), a
landing zone that is behind (``LandingFull``) or a write-ahead log that cannot be written (``WalError``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.schemas import ErrorOut
from serving.batcher import Overloaded

log = logging.getLogger(__name__)

#: OpenAPI ``responses`` of the routes that take input and need a model.
CLIENT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    413: {"model": ErrorOut},
    422: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


class ApiError(Exception):
    """A client-facing error with its HTTP status (and headers, e.g. ``Retry-After``)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc if part not in ("query", "path", "body", "header")]
    return ".".join(parts) or ("body" if "body" in loc else "request")


def unavailable(message: str, retry_after: int) -> ApiError:
    """A 503 that tells the client when to retry."""
    return ApiError(503, message, {"Retry-After": str(retry_after)})


def install_error_handlers(app: FastAPI, max_k: int, retry_after: int = 1) -> None:
    """JSON errors for every failure; validation messages name the field (and ``k``'s range)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.message}, headers=exc.headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"error": f"overloaded: {exc}; retry after {retry_after}s"},
            headers={"Retry-After": str(retry_after)},
        )

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
