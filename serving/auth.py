"""API keys: every route but ``/health`` needs one, with the scope the route asks for.

A key is ``mk_<id>_<secret>`` (id: who it belongs to, 1-32 of ``a-z 0-9 -``; secret: 32 random bytes,
URL-safe base64). The server keeps only ``sha256(salt ‖ secret)`` with a per-key random salt: with a
256-bit secret a fast hash is as safe as a slow one, and it costs about a microsecond per request.
Comparison is constant-time (``hmac.compare_digest``). Scopes: ``events:write`` (``POST /v1/events``),
``recs:read`` (recommendations, similar items), ``admin`` (everything, incl. ``DELETE /v1/users/{id}``
and ``/metrics``).

Where the hashes come from (``ServingSettings``): the file ``RECSYS_API_KEYS_FILE`` (default
``<home>/serving/api-keys.json``), plus ``RECSYS_API_KEYS`` (the same JSON inline); the file is
re-read when it changes. Format::

    {"keys": [{"id": "shop", "salt": "<hex>", "sha256": "<hex>", "scopes": ["events:write", "recs:read"],
               "created_at": "..."}]}

``python -m serving.keys create --id shop --scopes events:write,recs:read`` makes one, stores its hash
and prints the key once. No key ships with the project and none is configured by default: without
keys every protected route answers 401 saying how to create one. ``RECSYS_AUTH_DISABLED=true`` opens
every route (off by default; logged as a warning at start and on ``/health``).

A request presents its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The key never
reaches a log; the key id does (audit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("events:write", "recs:read", "admin")
ADMIN = "admin"
PREFIX = "mk"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
#: How often the keys file's mtime is checked for a change.
RELOAD_CHECK_SECONDS = 2.0


class KeyFileError(ValueError):
    """A keys file or key record that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: its id, salt, hash and scopes (never the key itself)."""

    key_id: str
    salt: str
    sha256: str
    scopes: frozenset[str]
    created_at: str | None = None

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "salt": self.salt,
            "sha256": self.sha256,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
        }


def hash_secret(secret: str, salt: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    found = frozenset(s.strip() for s in scopes if s.strip())
    unknown = sorted(found - set(SCOPES))
    if unknown or not found:
        raise KeyFileError(f"scopes {sorted(found)}: each one of {list(SCOPES)}, at least one")
    return found


def new_key(key_id: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
    """A new key: ``(the key, to show once; its stored record)``."""
    if not _ID_RE.match(key_id):
        raise KeyFileError(f"key id {key_id!r}: 1-32 of a-z, 0-9 and '-', starting with a letter or digit")
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return f"{PREFIX}_{key_id}_{secret}", ApiKey(key_id, salt, hash_secret(secret, salt), check_scopes(scopes), created)


def split_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a key in the ``mk_<id>_<secret>`` form, else ``None``."""
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    return key_id, secret


def parse_keys(raw: Any, where: str) -> dict[str, ApiKey]:
    """Key records from the JSON document ``raw`` (``{"keys": [...]}``); refuses anything malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
        raise KeyFileError(f'{where}: expected {{"keys": [{{"id", "salt", "sha256", "scopes"}}, ...]}}')
    out: dict[str, ApiKey] = {}
    for n, item in enumerate(raw["keys"]):
        try:
            key = ApiKey(
                str(item["id"]),
                str(item["salt"]),
                str(item["sha256"]),
                check_scopes(item["scopes"]),
                item.get("created_at"),
            )
            bytes.fromhex(key.salt)
            if len(key.sha256) != 64:
                raise ValueError("sha256 must be 64 hex characters")
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"{where}: keys[{n}] is not a usable key record ({type(exc).__name__}: {exc})") from None
        if not _ID_RE.match(key.key_id):
            raise KeyFileError(f"{where}: keys[{n}].id {key.key_id!r} is not a valid key id")
        out[key.key_id] = key
    return out


class KeyRing:
    """The keys the API accepts: from a file (re-read when it changes) and/or inline JSON."""

    def __init__(self, keys: Iterable[ApiKey] = (), path: str | Path | None = None, disabled: bool = False) -> None:
        self._inline = {key.key_id: key for key in keys}
        self.path = Path(path) if path else None
        self.disabled = disabled
        self._from_file: dict[str, ApiKey] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._load_file()

    @classmethod
    def from_settings(cls, keys_file: str | Path | None, inline: str | None, disabled: bool) -> KeyRing:
        keys = parse_keys(json.loads(inline), "RECSYS_API_KEYS").values() if inline else ()
        ring = cls(keys, keys_file, disabled)
        if disabled:
            log.warning("AUTHENTICATION IS DISABLED (RECSYS_AUTH_DISABLED): every route of this API is open to anyone")
        elif not ring.keys:
            log.warning(
                "no API keys configured (%s, RECSYS_API_KEYS): every route but /health answers 401; "
                "create one with python -m serving.keys create --id NAME --scopes events:write,recs:read",
                keys_file,
            )
        return ring

    @property
    def keys(self) -> dict[str, ApiKey]:
        self._maybe_reload()
        return {**self._from_file, **self._inline}

    def _load_file(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._from_file, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        self._from_file = parse_keys(json.loads(self.path.read_text()), str(self.path))
        self._mtime = mtime

    def _maybe_reload(self) -> None:
        if self.path is None or time.monotonic() - self._checked < RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                self._load_file()
            except (OSError, ValueError) as exc:  # keep the keys we have; say why
                log.error("API keys file %s could not be re-read (%s); keeping the previous keys", self.path, exc)

    def verify(self, presented: str) -> ApiKey | None:
        """The key record ``presented`` matches (constant-time compare), else ``None``."""
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        key = self.keys.get(key_id)
        if key is None:
            hmac.compare_digest(hash_secret(secret, "00" * 16), "0" * 64)  # same work for an unknown id
            return None
        return key if hmac.compare_digest(hash_secret(secret, key.salt), key.sha256) else None


def write_keys(path: Path, keys: Sequence[ApiKey]) -> None:
    """Write a keys file (0600, atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": [key.to_json() for key in keys]}, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_keys_file(path: Path) -> list[ApiKey]:
    return list(parse_keys(json.loads(path.read_text()), str(path)).values()) if path.exists() else []


def add_key(path: Path, key_id: str, scopes: Iterable[str]) -> str:
    """Create a key, store its hash in ``path`` (replacing a key of the same id); returns the key (show it once)."""
    key, record = new_key(key_id, scopes)
    keys = [k for k in read_keys_file(path) if k.key_id != key_id]
    write_keys(path, [*keys, record])
    return key
