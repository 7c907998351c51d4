"""Retries land once: ``Idempotency-Key`` on ``POST /v1/events`` and the ``event_id``s already accepted.

Both live in the state store's key/value space (``StateStore.claim``/``put``: Redis with a TTL, shared
by every worker; in memory a bounded map), for ``[serving] idempotency_ttl_seconds``:

* ``i:<key id>:<Idempotency-Key>`` → ``p<epoch>:<body sha256>`` while the first request runs, then
  ``d:<body sha256>:<the 202 body>``. A retry with the same key and body gets the stored answer
  (header ``Idempotent-Replayed: true``) and lands nothing; the same key with another body is a 422;
  a retry while the first is still running a 409 (retry later). A pending mark older than
  ``STALE_SECONDS`` belongs to a request that died before its events were logged: it is taken over.
* ``e:<event_id>`` → the accepted event's payload fingerprint (``d:`` done, ``p<epoch>:`` pending). An
  event whose ``event_id`` was accepted before with the same payload is a duplicate (acknowledged,
  counted in ``duplicates``, not landed again); with a different payload it is rejected (field
  ``event_id``) and counted — never silently first-wins.

The write-ahead log keeps each entry's key and answer: replaying it after a crash marks them done
again (:meth:`Idempotency.remember`), so a client retrying a batch whose answer it never received gets
that answer instead of a second landing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.state import StateStore
from serving.wal import Entry

log = logging.getLogger(__name__)

#: A pending mark older than this was left by a request that died before logging its events.
STALE_SECONDS = 30.0
MAX_KEY_LENGTH = 200
#: Fields of a landing record that are the client's payload (``ts`` only when the client sent it).
PAYLOAD_FIELDS = ("user_id", "item_id", "event_type", "session_id", "price", "quantity", "request_id", "position")


class IdempotencyConflict(Exception):
    """The key is in use: by a request still running (409) or with another body (422)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class Claim:
    """What :meth:`Idempotency.begin` found: ``replay`` is the stored answer of a finished request."""

    name: str | None
    fingerprint: str
    replay: dict[str, Any] | None = None


def fingerprint(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def event_fingerprint(record: Mapping[str, Any], ts_given: bool) -> str:
    """The payload an ``event_id`` stands for: the client's fields (``ts`` only when it sent one)."""
    payload = {k: record[k] for k in PAYLOAD_FIELDS if k in record}
    if ts_given:
        payload["ts"] = record["ts"]
    return fingerprint(payload)[:32]


def check_key(value: str) -> str:
    """An ``Idempotency-Key`` as accepted: 1..200 visible ASCII characters."""
    if not value or len(value) > MAX_KEY_LENGTH or not all(33 <= ord(c) < 127 for c in value):
        raise ValueError(f"must be 1..{MAX_KEY_LENGTH} visible ASCII characters (e.g. a UUID)")
    return value


class Idempotency:
    """Idempotency keys and accepted event ids in the state store (see the module docstring)."""

    def __init__(self, state: StateStore, ttl_seconds: int, clock: Any = time.time) -> None:
        self.state = state
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def _pending(self, fp: str) -> str:
        return f"p{self.clock():.3f}:{fp}"

    def _stale(self, value: str) -> bool:
        try:
            return self.clock() - float(value[1:].split(":", 1)[0]) > STALE_SECONDS
        except ValueError:
            return True

    # ---- Idempotency-Key ------------------------------------------------------------------------
    def begin(self, scope: str, key: str | None, body: Any) -> Claim:
        """Reserve ``key`` for this request (``scope``: the API key's id); raise :class:`IdempotencyConflict`."""
        fp = fingerprint(body)
        if key is None:
            return Claim(None, fp)
        name = f"i:{scope}:{key}"
        (held,) = self.state.claim({name: self._pending(fp)}, self.ttl_seconds)
        if held is None:
            return Claim(name, fp)
        kind, _, rest = held.partition(":")
        held_fp, _, stored = rest.partition(":")
        if held_fp != fp:
            raise IdempotencyConflict(
                422, "Idempotency-Key: already used with a different body; use a new key for a new batch"
            )
        if kind == "d":
            return Claim(name, fp, json.loads(stored))
        if not self._stale(held):
            raise IdempotencyConflict(
                409, "Idempotency-Key: a request with this key is still being processed; retry in a moment"
            )
        self.state.put({name: self._pending(fp)}, self.ttl_seconds)  # its owner died before logging anything
        return Claim(name, fp)

    def done_value(self, claim: Claim, response: Mapping[str, Any]) -> str:
        return f"d:{claim.fingerprint}:{json.dumps(response, separators=(',', ':'))}"

    def complete(self, claim: Claim, response: Mapping[str, Any]) -> None:
        if claim.name is not None:
            self.state.put({claim.name: self.done_value(claim, response)}, self.ttl_seconds)

    def abort(self, claim: Claim) -> None:
        if claim.name is not None:
            try:
                self.state.release([claim.name])
            except Exception as exc:  # it expires as stale anyway
                log.debug("releasing idempotency key failed: %s", exc)

    # ---- event ids ------------------------------------------------------------------------------
    def claim_events(
        self, items: Sequence[tuple[int, dict[str, Any], str]]
    ) -> tuple[list[tuple[int, dict[str, Any], str]], list[int], list[tuple[int, str]]]:
        """Split accepted ``(index, record, payload fingerprint)`` into new ones (claimed now), duplicates
        (indices) and conflicts (index, message), by ``event_id`` (records without one are new)."""
        fresh: list[tuple[int, dict[str, Any], str]] = []
        duplicates: list[int] = []
        conflicts: list[tuple[int, str]] = []
        seen: dict[str, str] = {}
        to_claim: dict[str, tuple[int, dict[str, Any], str]] = {}
        for item in items:
            index, record, fp = item
            event_id = record.get("event_id")
            if event_id is None:
                fresh.append(item)
                continue
            if event_id in seen:  # twice in this batch
                if seen[event_id] == fp:
                    duplicates.append(index)
                else:
                    conflicts.append((index, _conflict(event_id)))
                continue
            seen[event_id] = fp
            to_claim[event_id] = item
        if to_claim:
            names = {f"e:{event_id}": self._pending(item[2]) for event_id, item in to_claim.items()}
            held_values = self.state.claim(names, self.ttl_seconds)
            takeover: dict[str, str] = {}
            for (event_id, item), held in zip(to_claim.items(), held_values, strict=True):
                index, _, fp = item
                if held is None:
                    fresh.append(item)
                    continue
                kind, _, held_fp = held.partition(":")
                if held_fp != fp:
                    conflicts.append((index, _conflict(event_id)))
                elif kind == "d" or not self._stale(held):
                    duplicates.append(index)
                else:  # claimed by a request that died before logging it
                    takeover[f"e:{event_id}"] = self._pending(fp)
                    fresh.append(item)
            if takeover:
                self.state.put(takeover, self.ttl_seconds)
        fresh.sort(key=lambda item: item[0])
        return fresh, sorted(duplicates), sorted(conflicts)

    def events_done(self, items: Sequence[tuple[int, dict[str, Any], str]]) -> None:
        done = {f"e:{record['event_id']}": f"d:{fp}" for _, record, fp in items if record.get("event_id")}
        if done:
            self.state.put(done, self.ttl_seconds)

    def release_events(self, items: Sequence[tuple[int, dict[str, Any], str]]) -> None:
        names = [f"e:{record['event_id']}" for _, record, _ in items if record.get("event_id")]
        if names:
            try:
                self.state.release(names)
            except Exception as exc:
                log.debug("releasing event ids failed: %s", exc)

    # ---- replay -------------------------------------------------------------------------------
    def marks(
        self, claim: Claim, response: Mapping[str, Any], items: Sequence[tuple[int, dict[str, Any], str]]
    ) -> dict[str, str]:
        """The state-store values that say this request was accepted: logged with its records (WAL)."""
        out = {f"e:{record['event_id']}": f"d:{fp}" for _, record, fp in items if record.get("event_id")}
        if claim.name is not None:
            out[claim.name] = self.done_value(claim, response)
        return out

    def remember(self, entries: Sequence[Entry]) -> None:
        """Set the marks of logged entries (WAL replay, and each segment before it is deleted)."""
        done: dict[str, str] = {}
        for entry in entries:
            done.update(entry.marks or {})
        if done:
            self.state.put(done, self.ttl_seconds)


def _conflict(event_id: str) -> str:
    return (
        f"event_id {event_id!r} was already accepted with a different payload; "
        "send a new event_id for a new event (or the same payload to retry)"
    )
