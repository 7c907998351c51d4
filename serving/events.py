"""Events in: per-event validation against the landing contract and the landing-zone writer.

Flush policy of ``LandingWriter``: accepted records are buffered in memory and written as one JSONL
file per landing day (``landing/<dataset>/dt=<UTC day of the flush>/<source>-<stamp>-<id>.jsonl``)
when the buffer reaches ``flush_events`` records (inline, by the request that filled it; or, with
``flush_inline=False``, by the background thread, woken at once) or when ``flush_seconds`` have passed
since the first buffered record (background thread), whichever comes first, and on ``close``
(graceful shutdown flushes everything accepted). Each file is written under a hidden temp name
(``core.lake.staging_path``, ignored by ingest), fsynced and renamed into place, so ingest never
reads half a file. A failed write keeps the records buffered for the next flush and is counted in
``write_errors``. With ``max_pending`` set, records beyond that many waiting are dropped and counted
in ``dropped`` (the exposure log: it must never grow without bound; events are never dropped).

The API runs two writers of this one class: accepted events (``dataset="events"``) and the exposure
log (``dataset="exposures"``, ``flush_inline=False``: no request ever waits for a write), so both
take the same durable path.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.contract import EVENT_TYPES
from core.lake import Lake, staging_path

log = logging.getLogger(__name__)
#: Encodes a flushed batch in one call, about ten times faster than ``json.dumps`` per record (the writer
#: thread holds the GIL while it encodes, so this is CPU the request threads get back).
_JSON = msgspec.json.Encoder()

EventType = Literal["view", "click", "add_to_cart", "purchase"]
assert set(EventType.__args__) == set(EVENT_TYPES), "EventType must follow core.contract.EVENT_TYPES"  # type: ignore[attr-defined]


def check_id(value: str, max_length: int) -> str:
    """An id as the API accepts it: 1..max_length characters, no control/format characters, NFC."""
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise ValueError("must not be empty or blank")
    if len(value) > max_length:
        raise ValueError(f"is {len(value)} characters long; the limit is {max_length}")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise ValueError(f"contains the control or unassigned character U+{ord(bad):04X}; remove it")
    return value


class EventIn(BaseModel):
    """One event as the shop sends it (the landing contract of docs/ARCHITECTURE.md)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    user_id: str
    item_id: str
    event_type: EventType
    ts: dt.datetime | None = Field(default=None, description="ISO-8601; default: now. Naive times are UTC.")
    session_id: str | None = None
    event_id: str | None = None
    price: float | None = Field(default=None, ge=0)
    quantity: int | None = Field(default=None, ge=1)
    request_id: str | None = Field(default=None, description="The recommendation response this event follows.")
    position: int | None = Field(default=None, ge=1, description="1-based position of the item in that response.")

    @field_validator("price")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


@dataclass(frozen=True)
class EventError:
    index: int
    field: str
    message: str


def _field_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "event"


def validate_event(
    raw: Any, max_id_length: int, now: dt.datetime
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """One raw event → (landing record, []) or (None, [(field, message), ...])."""
    if not isinstance(raw, dict):
        return None, [("event", f"must be a JSON object, got {type(raw).__name__}")]
    try:
        ev = EventIn.model_validate(raw)
    except ValidationError as exc:
        return None, [(_field_of(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]
    errors: list[tuple[str, str]] = []
    ids: dict[str, str | None] = {}
    for name in ("user_id", "item_id", "session_id", "event_id", "request_id"):
        value = getattr(ev, name)
        if value is None:
            ids[name] = None
            continue
        try:
            ids[name] = check_id(value, max_id_length)
        except ValueError as exc:
            errors.append((name, str(exc)))
    if errors:
        return None, errors
    ts = ev.ts or now
    ts = ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)
    record: dict[str, Any] = {
        "user_id": ids["user_id"],
        "item_id": ids["item_id"],
        "event_type": ev.event_type,
        "ts": ts.isoformat().replace("+00:00", "Z"),
    }
    for name in ("event_id", "session_id"):
        if ids[name] is not None:
            record[name] = ids[name]
    if ev.price is not None:
        record["price"] = float(ev.price)
    if ev.quantity is not None:
        record["quantity"] = int(ev.quantity)
    if ids["request_id"] is not None:
        record["request_id"] = ids["request_id"]
    if ev.position is not None:
        record["position"] = int(ev.position)
    return record, []


def validate_batch(
    raw_events: list[Any], max_id_length: int, now: dt.datetime | None = None
) -> tuple[list[dict[str, Any]], list[EventError]]:
    """Accepted landing records (in order) and one error per bad field, each naming the event's index."""
    now = now or dt.datetime.now(dt.UTC)
    accepted: list[dict[str, Any]] = []
    errors: list[EventError] = []
    for index, raw in enumerate(raw_events):
        record, problems = validate_event(raw, max_id_length, now)
        if record is None:
            errors.extend(EventError(index, f, m) for f, m in problems)
        else:
            accepted.append(record)
    return accepted, errors


class LandingWriter:
    """Micro-batches accepted events into the lake's landing zone (policy in the module docstring)."""

    def __init__(
        self,
        lake_root: str | os.PathLike[str],
        flush_events: int,
        flush_seconds: float,
        source: str,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        dataset: str = "events",
        flush_inline: bool = True,
        max_pending: int | None = None,
    ) -> None:
        self.lake = Lake(lake_root)
        folders = {"events": self.lake.landing_events, "exposures": self.lake.landing_exposures}
        if dataset not in folders:
            raise ValueError(f"dataset={dataset!r}: the landing writer writes one of {sorted(folders)}")
        self._folder = folders[dataset]
        self.dataset = dataset
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        self.source = source
        self.clock = clock
        self.flush_inline = flush_inline
        self.max_pending = max_pending
        self.written = 0
        self.files = 0
        self.write_errors = 0
        self.dropped = 0
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Buffer records; once the buffer reaches ``flush_events``, flush inline (or wake the writer thread).

        With ``max_pending``, records that do not fit are dropped and counted in ``dropped``.
        """
        if not records:
            return
        dropped = 0
        with self._lock:
            if self.max_pending is not None:
                room = max(self.max_pending - len(self._buffer), 0)
                if room < len(records):
                    dropped = len(records) - room
                    self.dropped += dropped
                    records = records[:room]
            was_empty = not self._buffer
            self._buffer.extend(records)
            full = len(self._buffer) >= self.flush_events
        if dropped and self.dropped == dropped:
            log.warning(
                "landing %s: %d records waiting (max_pending); dropping and counting the rest until a flush succeeds",
                self.dataset,
                self.max_pending,
            )
        if full and self.flush_inline:
            self.flush()
        elif full:
            self._urgent.set()
            self._wake.set()
        elif was_empty and records:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered now; returns the number of events written."""
        with self._write_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except OSError as exc:
                self.write_errors += 1
                with self._lock:
                    self._buffer[:0] = batch
                log.warning(
                    "landing write of %d %s failed (%s); kept buffered for the next flush",
                    len(batch),
                    self.dataset,
                    exc,
                )
                return 0
            self.written += len(batch)
            return len(batch)

    def _write(self, batch: list[dict[str, Any]]) -> Path:
        now = self.clock()
        folder = self._folder(now.date())
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.source}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.jsonl"
        tmp = staging_path(target)
        try:
            with open(tmp, "wb") as fh:
                fh.write(_JSON.encode_lines(batch))  # UTF-8 JSON, one object per line
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self.files += 1
        return target

    # ---- background timer -----------------------------------------------------------------
    def start(self) -> None:
        """Flush every ``flush_seconds`` after the first buffered event, in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._urgent.clear()
        self._thread = threading.Thread(target=self._run, name=f"landing-{self.dataset}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._urgent.wait(self.flush_seconds)  # cut short by a full buffer (flush_inline=False) or close
            if self._stop.is_set():
                return
            self._urgent.clear()
            try:
                self.flush()
            except Exception:  # the timer must outlive one bad flush
                log.exception("landing writer: unexpected error while flushing")
            if self.pending:
                self._wake.set()

    def close(self, timeout: float = 10.0) -> int:
        """Stop the timer and flush everything still buffered (graceful shutdown)."""
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return self.flush()
