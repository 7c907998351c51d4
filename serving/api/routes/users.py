"""``DELETE /v1/users/{user_id}`` (the ``admin`` scope): erase a user (``serving.erasure``).

202: the user is gone from the live state (recent, purchased, remembered experiment requests) at once,
everything the API acknowledged is in the landing zone, an erasure request is filed for the lake-side
job and the audit log says who asked (the key's id) and when, with the user as a salted hash. 503 with
``Retry-After`` while the state store is down (nothing done), or without ``RECSYS_ERASURE_SALT``.
"""

import datetime as dt
import logging
from typing import Any

from fastapi import APIRouter, Request

from serving.api.deps import Administers, Runtime, UserIdPath, check_id_lengths, valid_id
from serving.api.errors import CLIENT_ERRORS, ApiError, unavailable
from serving.api.schemas import ErasureOut
from serving.erasure import ErasureNotConfigured, user_hash
from serving.state import StateUnavailable

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Administers])


@router.delete("/v1/users/{user_id}", status_code=202, response_model=ErasureOut, responses=CLIENT_ERRORS)
def erase_user(user_id: UserIdPath, runtime: Runtime, request: Request) -> Any:
    config = runtime.config
    check_id_lengths(config, ("path", "user_id", user_id))
    user = valid_id("user_id", user_id, config)
    erasure = runtime.erasure
    try:
        salt = erasure.check()
    except ErasureNotConfigured as exc:
        raise ApiError(503, str(exc)) from None
    key = getattr(request.state, "api_key", None)
    requested_by = f"api-key:{key.key_id}" if key is not None else "api:auth-disabled"
    try:
        removed = runtime.user_state.forget_user(user)
    except StateUnavailable as exc:
        raise unavailable(
            f"state: the real-time state store is unavailable ({exc}); nothing was erased, retry",
            config.retry_after_seconds,
        ) from None
    flushed = {"events": runtime.landing.flush()}
    if runtime.exposures is not None:
        flushed["exposures"] = runtime.exposures.flush()
    behind = {name: w.pending for name, w in (("events", runtime.landing), ("exposures", runtime.exposures)) if w}
    if any(behind.values()):
        raise unavailable(
            f"landing: {behind} records could not be written to the lake yet; the user was removed from the live "
            "state, but no erasure request was filed (it would miss them): retry",
            config.retry_after_seconds,
        )
    now = dt.datetime.now(dt.UTC)
    try:
        request_id, path = erasure.file_request(user, requested_by, now)
        hashed = user_hash(user, salt)
        erasure.audit(
            {
                "event": "erasure_requested",
                "request_id": request_id,
                "user_hash": hashed,
                "requested_by": requested_by,
                "requested_at": now.isoformat(),
                "state_removed": removed,
                "landing_flushed": flushed,
            }
        )
    except OSError as exc:
        raise unavailable(
            f"erasure: the request could not be written ({exc}); retry", config.retry_after_seconds
        ) from None
    runtime.metrics.users_erased.inc()
    log.info("erasure %s requested by %s (user %s…)", request_id, requested_by, hashed[:12])
    lake = erasure.lake.root
    return ErasureOut(
        request_id=request_id,
        user_hash=hashed,
        state=removed,
        landing_flushed=flushed,
        erasure_request=path.relative_to(lake).as_posix(),
        audit=erasure.audit_path.relative_to(lake).as_posix(),
    )
