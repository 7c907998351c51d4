"""``DELETE /v1/users/{id}``, the API's side of the right to erasure.

What :meth:`Erasure.erase` does, in this order (each step only if the one before succeeded):

1. removes the user from the live state at once: recent items, purchased items and the remembered
   experiment requests (``StateStore.forget_user``; memory and Redis alike);
2. flushes both landing writers, so that every event and exposure of the user the API acknowledged
   is in the landing zone before the lake-side job looks;
3. files an erasure request for the lake-side job (``jobs/erasure.py``, whose contract this follows):
   ``<lake>/erasure/requests/<request_id>.json`` = ``{"request_id", "user_id", "requested_at",
   "requested_by"}``, written whole and renamed into place;
4. appends one line to the append-only audit log ``<lake>/erasure/api-audit.jsonl`` (fsynced): the
   request id, who asked (the API key's id, never the key), when, what was removed, and the user as
   ``user_hash`` = HMAC-SHA256 of the normalised id keyed with ``RECSYS_ERASURE_SALT`` (the same hash
   the lake job audits with), never the id in clear.

Without ``RECSYS_ERASURE_SALT`` (16+ characters, a secret outside the lake) nothing is done and the
route answers 503 saying so: the audit could not hide the id.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from core.lake import Lake

MIN_SALT_LENGTH = 16
REQUESTS = ("erasure", "requests")
AUDIT = ("erasure", "api-audit.jsonl")


class ErasureNotConfigured(RuntimeError):
    """No (or too short a) ``RECSYS_ERASURE_SALT``."""


def normalise_id(value: str) -> str:
    """An id as the lake's clean step keeps it (trimmed, NFC): the form the lake job matches and hashes."""
    return unicodedata.normalize("NFC", value.strip())


def user_hash(user_id: str, salt: str) -> str:
    """HMAC-SHA256 of the normalised id keyed with ``salt`` (as ``jobs.erasure.user_hash``)."""
    return hmac.new(salt.encode(), normalise_id(user_id).encode(), hashlib.sha256).hexdigest()


class Erasure:
    """Files erasure requests and audits them (see the module docstring)."""

    def __init__(self, lake_root: str | os.PathLike[str], salt: str | None) -> None:
        self.lake = Lake(lake_root)
        self.salt = salt

    @property
    def requests_dir(self) -> Path:
        return self.lake.root.joinpath(*REQUESTS)

    @property
    def audit_path(self) -> Path:
        return self.lake.root.joinpath(*AUDIT)

    def check(self) -> str:
        if not self.salt or len(self.salt) < MIN_SALT_LENGTH:
            raise ErasureNotConfigured(
                f"erasure is not configured: set RECSYS_ERASURE_SALT to a secret of at least {MIN_SALT_LENGTH} "
                "characters (the same one the lake-side erasure job uses); nothing was done"
            )
        return self.salt

    def file_request(self, user_id: str, requested_by: str, now: dt.datetime) -> tuple[str, Path]:
        """Write the lake job's request file; returns its id and path."""
        request_id = f"api-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        folder = self.requests_dir
        folder.mkdir(parents=True, exist_ok=True)
        body = {
            "request_id": request_id,
            "user_id": user_id,
            "requested_at": now.isoformat(),
            "requested_by": requested_by,
        }
        target = folder / f"{request_id}.json"
        tmp = folder / f".{request_id}.json.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return request_id, target

    def audit(self, entry: dict[str, Any]) -> None:
        """Append one line to the audit log (O_APPEND + flock + fsync: whole lines, several workers)."""
        path = self.audit_path
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
