"""Request ids: ULIDs (26 characters of Crockford base32, time-ordered, unique).

A ULID is 48 bits of Unix milliseconds followed by 80 random bits, written as 26 characters of
Crockford's base32 (``0-9A-Z`` without ``I L O U``), so the lexicographic order of the strings is the
order of their milliseconds. Within one process the generator is *monotonic*: two ids of the same
millisecond differ by an increment of the random part, so every id sorts after the one before it
even when thousands are drawn per millisecond. Across processes (API workers, replicas) ids order by
millisecond and stay unique by their 80 random bits. See https://github.com/ulid/spec.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_DECODE = {c: n for n, c in enumerate(CROCKFORD)}


def encode_ulid(millis: int, randomness: int) -> str:
    """The 26-character string of a (48-bit milliseconds, 80-bit randomness) pair."""
    if not 0 <= millis < 1 << 48 or not 0 <= randomness <= _RANDOM_MAX:
        raise ValueError(f"ULID parts out of range: millis={millis}, randomness={randomness}")
    value = (millis << _RANDOM_BITS) | randomness
    chars = []
    for _ in range(ULID_LENGTH):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid_millis(ulid: str) -> int:
    """The Unix milliseconds a ULID carries (its first 10 characters); ``ValueError`` if it is not one."""
    if len(ulid) != ULID_LENGTH or any(c not in _DECODE for c in ulid) or ulid[0] > "7":
        raise ValueError(f"{ulid!r} is not a ULID (26 characters of Crockford base32)")
    value = 0
    for c in ulid[:10]:
        value = (value << 5) | _DECODE[c]
    return value


def ulid_time(ulid: str) -> dt.datetime:
    """The UTC time (millisecond precision) a ULID was drawn at."""
    return _utc(ulid_millis(ulid))


def _utc(millis: int) -> dt.datetime:
    seconds, rest = divmod(millis, 1000)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC) + dt.timedelta(milliseconds=rest)


class UlidGenerator:
    """Monotonic ULIDs for one process (thread-safe): later calls never sort before earlier ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._millis = -1
        self._random = 0

    def new(self) -> tuple[str, int]:
        """A new ULID and the milliseconds it carries."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._millis:
                self._millis, self._random = now, secrets.randbits(_RANDOM_BITS)
            elif self._random < _RANDOM_MAX:
                self._random += 1  # same (or a rewound) millisecond: keep the order by counting up
            else:
                self._millis, self._random = self._millis + 1, secrets.randbits(_RANDOM_BITS)
            millis, randomness = self._millis, self._random
        return encode_ulid(millis, randomness), millis


_GENERATOR = UlidGenerator()


def new_request_id() -> str:
    """A new request id (ULID) from this process's monotonic generator."""
    return _GENERATOR.new()[0]


def new_request_id_and_time() -> tuple[str, str]:
    """A new request id and the same instant as ISO-8601 UTC with ``Z`` (milliseconds)."""
    ulid, millis = _GENERATOR.new()
    return ulid, iso_millis(millis)


def iso_millis(millis: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of Unix milliseconds."""
    return _utc(millis).isoformat(timespec="milliseconds").replace("+00:00", "Z")
