"""ASGI middleware: request latency by route template, and the request body size limit (413)."""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import ApiMetrics


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
