"""Real-time user state: each user's recent items (newest last, capped) and purchased items.

Two stores behind one interface, chosen by ``RECSYS_STATE_URI``:

* ``memory://?max_users=N`` — a bounded in-process LRU (default size ``[serving] state_max_users``);
  one replica only, lost on restart.
* ``redis://host:port/db?prefix=P`` — shared by every replica (a batch of reads is one pipelined round trip). Per user ``P:u:<id>:recent`` (a list
  trimmed to ``state_max_recent``) and ``P:u:<id>:purchased`` (a sorted set by time, trimmed the same
  way), both expiring ``state_ttl_seconds`` after the user's last event; ``P:users`` (a sorted set of
  last-event times) answers the state size.

Writes are synchronous, so once ``record`` returns the next ``get`` sees it (no stale read).

Both also remember which experiment arm served a request (``remember_requests``: request id → an
opaque string, for the attribution window; ``recall_requests`` reads them back), so an event carrying
a ``request_id`` is attributed whichever worker served the recommendation: in Redis as
``P:r:<request_id>`` with a TTL, in memory in a bounded map (``max_requests``, oldest forgotten first).
Each user's remembered request ids are indexed (``P:u:<id>:requests``) so that :meth:`forget_user`
(``DELETE /v1/users/{id}``) removes them with the user's recent and purchased items.

A small key/value space with a TTL (``claim``/``put``/``release``: Redis ``P:k:<key>``, in memory a
bounded map) holds idempotency keys and the fingerprints of accepted ``event_id``s, so that every
worker sees them.

Redis calls have timeouts (``socket_timeout``/``socket_connect_timeout`` from ``[serving]``) and no
client-side retries; :class:`GuardedState` wraps either store with a circuit breaker: after a failure
every call fails at once with :class:`StateUnavailable` for ``retry_seconds``, then one call probes.
So a Redis that hangs or dies costs a request at most one timeout, never a queue of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

PURCHASE = "purchase"


@dataclass(frozen=True)
class LiveEvent:
    """What the state needs from an accepted event."""

    user_id: str
    item_id: str
    event_type: str


@dataclass(frozen=True)
class UserState:
    recent: tuple[str, ...] = ()
    purchased: frozenset[str] = frozenset()

    @property
    def seen(self) -> frozenset[str]:
        return frozenset(self.recent) | self.purchased


EMPTY = UserState()


def collapse_repeats(items: Iterable[str]) -> tuple[str, ...]:
    """Drop consecutive repeats (a user re-viewing the same item is one step of their sequence)."""
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return tuple(out)


class StateStore(Protocol):
    uri: str

    def record(self, events: Sequence[LiveEvent]) -> None:
        """Apply events, oldest first."""
        ...

    def get(self, user_id: str) -> UserState: ...

    def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        """``get`` for several users in one go (one lock, one Redis round trip)."""
        ...

    def size(self) -> int:
        """Users currently held."""
        ...

    def remember_requests(
        self, entries: Mapping[str, str], ttl_seconds: int, users: Mapping[str, str | None] | None = None
    ) -> None:
        """Keep each ``request_id → value`` for ``ttl_seconds`` (one lock / one round trip), indexed by its
        user (``users``: request id → user id) for :meth:`forget_user`."""
        ...

    def recall_requests(self, request_ids: Sequence[str]) -> list[str | None]:
        """The remembered value of each request id (``None``: unknown or expired)."""
        ...

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Remove everything held about ``user_id`` (recent, purchased, remembered requests); counts removed."""
        ...

    def claim(self, entries: Mapping[str, str], ttl_seconds: int) -> list[str | None]:
        """Set each key that is absent (for ``ttl_seconds``); per key ``None`` when set now, else the value held."""
        ...

    def put(self, entries: Mapping[str, str], ttl_seconds: int) -> None:
        """Set each key (overwriting) for ``ttl_seconds``."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Delete keys of the key/value space."""
        ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...

    def close(self) -> None: ...


class StateUnavailable(ConnectionError):
    """The real-time state store failed (or failed recently and is not retried yet)."""


@dataclass
class _Entry:
    recent: list[str] = field(default_factory=list)
    purchased: dict[str, None] = field(default_factory=dict)
    touched: float = 0.0


class MemoryState:
    """Bounded LRU of user states under one lock; the least recently used (read or written) user goes first."""

    def __init__(self, max_users: int, max_recent: int, ttl_seconds: float, max_requests: int = 200_000) -> None:
        if max_users < 1 or max_recent < 1 or ttl_seconds <= 0 or max_requests < 1:
            raise ValueError(
                "memory state needs max_users >= 1, max_recent >= 1, ttl > 0, max_requests >= 1 "
                f"(got {max_users}, {max_recent}, {ttl_seconds}, {max_requests})"
            )
        self.uri = f"memory://?max_users={max_users}"
        self.max_users = max_users
        self.max_recent = max_recent
        self.ttl_seconds = ttl_seconds
        self.max_requests = max_requests
        self.evicted = 0
        self.requests_forgotten = 0
        self._users: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._requests: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()
        self._requests_lock = threading.Lock()
        self._kv: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._kv_lock = threading.Lock()

    def record(self, events: Sequence[LiveEvent]) -> None:
        now = time.monotonic()
        with self._lock:
            for ev in events:
                entry = self._users.get(ev.user_id)
                if entry is None or now - entry.touched > self.ttl_seconds:
                    entry = _Entry()
                    self._users[ev.user_id] = entry
                self._users.move_to_end(ev.user_id)
                entry.touched = now
                entry.recent.append(ev.item_id)
                if len(entry.recent) > self.max_recent:
                    del entry.recent[: len(entry.recent) - self.max_recent]
                if ev.event_type == PURCHASE:
                    entry.purchased.pop(ev.item_id, None)
                    entry.purchased[ev.item_id] = None
                    while len(entry.purchased) > self.max_recent:
                        entry.purchased.pop(next(iter(entry.purchased)))
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
                self.evicted += 1

    def get(self, user_id: str) -> UserState:
        return self.get_many([user_id])[0]

    def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        now = time.monotonic()
        out = []
        with self._lock:
            for user_id in user_ids:
                entry = self._users.get(user_id)
                if entry is None:
                    out.append(EMPTY)
                elif now - entry.touched > self.ttl_seconds:
                    del self._users[user_id]
                    out.append(EMPTY)
                else:
                    self._users.move_to_end(user_id)
                    out.append(UserState(tuple(entry.recent), frozenset(entry.purchased)))
        return out

    def size(self) -> int:
        return len(self._users)

    def remember_requests(
        self, entries: Mapping[str, str], ttl_seconds: int, users: Mapping[str, str | None] | None = None
    ) -> None:
        expires = time.monotonic() + ttl_seconds
        users = users or {}
        with self._requests_lock:
            for request_id, value in entries.items():
                self._requests[request_id] = (value, expires, users.get(request_id))
                self._requests.move_to_end(request_id)
            while len(self._requests) > self.max_requests:
                self._requests.popitem(last=False)
                self.requests_forgotten += 1

    def recall_requests(self, request_ids: Sequence[str]) -> list[str | None]:
        now = time.monotonic()
        out: list[str | None] = []
        with self._requests_lock:
            for request_id in request_ids:
                found = self._requests.get(request_id)
                if found is not None and found[1] < now:
                    del self._requests[request_id]
                    found = None
                out.append(None if found is None else found[0])
        return out

    def forget_user(self, user_id: str) -> dict[str, int]:
        with self._lock:
            entry = self._users.pop(user_id, None)
        with self._requests_lock:
            mine = [rid for rid, (_, _, user) in self._requests.items() if user == user_id]
            for rid in mine:
                del self._requests[rid]
        return {
            "recent": 0 if entry is None else len(entry.recent),
            "purchased": 0 if entry is None else len(entry.purchased),
            "requests": len(mine),
        }

    def claim(self, entries: Mapping[str, str], ttl_seconds: int) -> list[str | None]:
        now = time.monotonic()
        out: list[str | None] = []
        with self._kv_lock:
            for key, value in entries.items():
                held = self._kv.get(key)
                if held is not None and held[1] >= now:
                    out.append(held[0])
                    continue
                self._kv[key] = (value, now + ttl_seconds)
                self._kv.move_to_end(key)
                out.append(None)
            self._trim_kv()
        return out

    def put(self, entries: Mapping[str, str], ttl_seconds: int) -> None:
        expires = time.monotonic() + ttl_seconds
        with self._kv_lock:
            for key, value in entries.items():
                self._kv[key] = (value, expires)
                self._kv.move_to_end(key)
            self._trim_kv()

    def release(self, keys: Sequence[str]) -> None:
        with self._kv_lock:
            for key in keys:
                self._kv.pop(key, None)

    def _trim_kv(self) -> None:
        while len(self._kv) > self.max_requests:
            self._kv.popitem(last=False)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._users.clear()
        with self._requests_lock:
            self._requests.clear()
        with self._kv_lock:
            self._kv.clear()


class RedisState:
    """User state in Redis, shared by replicas; one pipelined round trip per batch and per read."""

    def __init__(
        self,
        url: str,
        prefix: str,
        max_recent: int,
        ttl_seconds: int,
        timeout_seconds: float = 0.25,
        connect_timeout_seconds: float = 0.25,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.uri = url
        self.prefix = prefix
        self.max_recent = max_recent
        self.ttl_seconds = int(ttl_seconds)
        # No client-side retries: a retry multiplies the wait of a hanging server; the guard decides.
        self.client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=connect_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )

    def _key(self, user_id: str, kind: str) -> str:
        return f"{self.prefix}:u:{user_id}:{kind}"

    def record(self, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        touched: dict[str, None] = {}
        for n, ev in enumerate(events):
            pipe.rpush(self._key(ev.user_id, "recent"), ev.item_id)
            if ev.event_type == PURCHASE:
                pipe.zadd(self._key(ev.user_id, "purchased"), {ev.item_id: now + n * 1e-6})
            touched[ev.user_id] = None
        for user in touched:
            recent, purchased = self._key(user, "recent"), self._key(user, "purchased")
            pipe.ltrim(recent, -self.max_recent, -1)
            pipe.zremrangebyrank(purchased, 0, -self.max_recent - 1)
            pipe.expire(recent, self.ttl_seconds)
            pipe.expire(purchased, self.ttl_seconds)
        pipe.zadd(f"{self.prefix}:users", dict.fromkeys(touched, now))
        pipe.execute()

    def get(self, user_id: str) -> UserState:
        return self.get_many([user_id])[0]

    def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        if not user_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.lrange(self._key(user_id, "recent"), 0, -1)
            pipe.zrange(self._key(user_id, "purchased"), 0, -1)
        got = pipe.execute()
        return [UserState(tuple(got[2 * n]), frozenset(got[2 * n + 1])) for n in range(len(user_ids))]

    def size(self) -> int:
        users = f"{self.prefix}:users"
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(users, "-inf", time.time() - self.ttl_seconds)
        pipe.zcard(users)
        return int(pipe.execute()[1])

    def remember_requests(
        self, entries: Mapping[str, str], ttl_seconds: int, users: Mapping[str, str | None] | None = None
    ) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        by_user: dict[str, list[str]] = {}
        for request_id, value in entries.items():
            pipe.set(f"{self.prefix}:r:{request_id}", value, ex=int(ttl_seconds))
            user = (users or {}).get(request_id)
            if user is not None:
                by_user.setdefault(user, []).append(request_id)
        for user, request_ids in by_user.items():
            pipe.sadd(self._key(user, "requests"), *request_ids)
            pipe.expire(self._key(user, "requests"), int(ttl_seconds))
        pipe.execute()

    def recall_requests(self, request_ids: Sequence[str]) -> list[str | None]:
        if not request_ids:
            return []
        found = self.client.mget([f"{self.prefix}:r:{request_id}" for request_id in request_ids])
        return [None if value is None else str(value) for value in found]

    def forget_user(self, user_id: str) -> dict[str, int]:
        recent, purchased, requests = (self._key(user_id, kind) for kind in ("recent", "purchased", "requests"))
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(recent)
        pipe.zcard(purchased)
        pipe.smembers(requests)
        n_recent, n_purchased, request_ids = pipe.execute()
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(recent, purchased, requests, *(f"{self.prefix}:r:{rid}" for rid in request_ids))
        pipe.zrem(f"{self.prefix}:users", user_id)
        pipe.execute()
        return {"recent": int(n_recent), "purchased": int(n_purchased), "requests": len(request_ids)}

    def claim(self, entries: Mapping[str, str], ttl_seconds: int) -> list[str | None]:
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=True)  # MULTI: each SET NX and its GET see the same value
        for key, value in entries.items():
            pipe.set(f"{self.prefix}:k:{key}", value, nx=True, ex=int(ttl_seconds))
            pipe.get(f"{self.prefix}:k:{key}")
        got = pipe.execute()
        return [None if got[2 * n] else str(got[2 * n + 1]) for n in range(len(entries))]

    def put(self, entries: Mapping[str, str], ttl_seconds: int) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, value in entries.items():
            pipe.set(f"{self.prefix}:k:{key}", value, ex=int(ttl_seconds))
        pipe.execute()

    def release(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.delete(*(f"{self.prefix}:k:{key}" for key in keys))

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()


class GuardedState:
    """A state store behind a circuit breaker (see the module docstring); every failure is a :class:`StateUnavailable`.

    ``down`` (the reason) is set while the breaker is open; :meth:`healthy` probes at most once per
    ``retry_seconds`` without ever waiting longer than one store timeout.
    """

    def __init__(self, inner: StateStore, retry_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self.uri = inner.uri
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.failures = 0
        self.down: str | None = None
        self._retry_at = 0.0
        self._probe = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # attributes of the wrapped store (max_users, client, ...)
        return getattr(self.inner, name)

    def _call(self, method: str, *args: Any) -> Any:
        probing = False
        if self.down is not None:
            if self.clock() < self._retry_at or not self._probe.acquire(blocking=False):
                raise StateUnavailable(f"state store unavailable: {self.down}")
            probing = True
        try:
            result = getattr(self.inner, method)(*args)
        except Exception as exc:
            self.failures += 1
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.down is None:
                log.warning(
                    "state store %s failed (%s); answering without it for %.1fs", self.uri, reason, self.retry_seconds
                )
            self.down = reason
            self._retry_at = self.clock() + self.retry_seconds
            raise StateUnavailable(f"state store unavailable: {reason}") from exc
        finally:
            if probing:
                self._probe.release()
        if self.down is not None:
            log.warning("state store %s is back", self.uri)
            self.down = None
        return result

    def healthy(self) -> bool:
        """Whether the store answers: a cached verdict while the breaker is open, else one ping."""
        try:
            self._call("ping")
        except StateUnavailable:
            return False
        return True

    def record(self, events: Sequence[LiveEvent]) -> None:
        self._call("record", events)

    def get(self, user_id: str) -> UserState:
        return self.get_many([user_id])[0]

    def get_many(self, user_ids: Sequence[str]) -> list[UserState]:
        return self._call("get_many", user_ids)  # type: ignore[no-any-return]

    def size(self) -> int:
        return self._call("size")  # type: ignore[no-any-return]

    def remember_requests(
        self, entries: Mapping[str, str], ttl_seconds: int, users: Mapping[str, str | None] | None = None
    ) -> None:
        self._call("remember_requests", entries, ttl_seconds, users)

    def recall_requests(self, request_ids: Sequence[str]) -> list[str | None]:
        return self._call("recall_requests", request_ids)  # type: ignore[no-any-return]

    def forget_user(self, user_id: str) -> dict[str, int]:
        return self._call("forget_user", user_id)  # type: ignore[no-any-return]

    def claim(self, entries: Mapping[str, str], ttl_seconds: int) -> list[str | None]:
        return self._call("claim", entries, ttl_seconds)  # type: ignore[no-any-return]

    def put(self, entries: Mapping[str, str], ttl_seconds: int) -> None:
        self._call("put", entries, ttl_seconds)

    def release(self, keys: Sequence[str]) -> None:
        self._call("release", keys)

    def ping(self) -> None:
        self._call("ping")

    def close(self) -> None:
        self.inner.close()


def open_state(
    uri: str,
    max_users: int,
    max_recent: int,
    ttl_seconds: int,
    max_requests: int = 200_000,
    timeout_seconds: float = 0.25,
    connect_timeout_seconds: float = 0.25,
) -> StateStore:
    """The state store named by ``uri`` (``RECSYS_STATE_URI``); ``max_users``/``max_requests`` apply to memory only,
    the timeouts to Redis only."""
    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "memory":
        raw = query.get("max_users", str(max_users))
        try:
            users = int(raw)
        except ValueError:
            raise ValueError(f"RECSYS_STATE_URI={uri!r}: max_users must be an integer, got {raw!r}") from None
        return MemoryState(users, max_recent, ttl_seconds, max_requests)
    if parts.scheme in ("redis", "rediss"):
        prefix = query.pop("prefix", "mercato")
        base = parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()
        return RedisState(base, prefix, max_recent, ttl_seconds, timeout_seconds, connect_timeout_seconds)
    raise ValueError(f"RECSYS_STATE_URI={uri!r}: unsupported scheme; use memory://?max_users=N or redis://host:port/db")
