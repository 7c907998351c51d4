"""Events in: per-event validation against the landing contract and the landing-zone writer.

Acceptance (``LandingWriter.add``): with a write-ahead log (``serving.wal``, the API's default,
``[serving] durable_events``) accepted records are appended to it and synced before ``add`` returns
(group commit across concurrent requests), so an acknowledged event survives ``kill -9``; without
one they wait in a memory buffer. Either way at most ``max_pending`` records wait for the landing
zone: beyond that ``add`` refuses (``LandingFull``: the events route answers 503 with Retry-After)
or, for the exposure log, drops and counts (``dropped``).

Flush policy: accepted records are written as one JSONL file per flush
(``landing/<dataset>/dt=<UTC day of the flush>/<source>-<stamp>-<id>.jsonl``) when ``flush_events``
are waiting (inline, by the request that filled it; or, with ``flush_inline=False``, by the
background thread, woken at once) or when ``flush_seconds`` have passed since the first (background
thread), whichever comes first, and on ``close`` (graceful shutdown). Each file is written under a
hidden temp name (``core.lake.staging_path``, ignored by ingest), fsynced and renamed into place, so
ingest never reads half a file. With the WAL each landing file is one sealed WAL segment, landed
exactly once (``serving.wal``); on start, segments left by a crash are landed before the API
answers. A failed write (disk full) keeps everything for the next flush and counts ``write_errors``.

The API runs two writers of this one class: accepted events (``dataset="events"``) and the exposure
log (``dataset="exposures"``, ``flush_inline=False``, appended to the WAL without waiting for its
sync: no recommendation waits for a disk), so both take the same durable path.
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
from serving.idempotency import event_fingerprint
from serving.wal import TARGET_SUFFIX, Entry, WalStream, fsync_dir, read_segment

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
    try:
        ts = ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None, [("ts", f"{ts.isoformat()} is out of range once converted to UTC; send a UTC timestamp")]
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


#: An accepted event: its index in the batch, its landing record, its payload fingerprint (``event_id`` checks).
Checked = tuple[int, dict[str, Any], str]


def check_batch(
    raw_events: list[Any], max_id_length: int, now: dt.datetime | None = None
) -> tuple[list[Checked], list[EventError]]:
    """Accepted events (in order, with index and payload fingerprint) and one error per bad field, each
    naming the event's index. One bad event never fails its batch: an unexpected error is its rejection."""
    now = now or dt.datetime.now(dt.UTC)
    accepted: list[Checked] = []
    errors: list[EventError] = []
    for index, raw in enumerate(raw_events):
        try:
            record, problems = validate_event(raw, max_id_length, now)
            fp = "" if record is None else event_fingerprint(record, ts_given=raw.get("ts") is not None)
        except Exception as exc:
            log.warning("event %d: unexpected validation error %s", index, type(exc).__name__)
            record, problems = None, [("event", f"could not be read ({type(exc).__name__}); check its fields")]
        if record is None:
            errors.extend(EventError(index, f, m) for f, m in problems)
        else:
            accepted.append((index, record, fp))
    return accepted, errors


def validate_batch(
    raw_events: list[Any], max_id_length: int, now: dt.datetime | None = None
) -> tuple[list[dict[str, Any]], list[EventError]]:
    """Accepted landing records (in order) and one error per bad field, each naming the event's index."""
    accepted, errors = check_batch(raw_events, max_id_length, now)
    return [record for _, record, _ in accepted], errors


class LandingFull(RuntimeError):
    """``max_pending`` accepted records are waiting for the landing zone: refuse more (503, retry later)."""


class LandingWriter:
    """Micro-batches accepted records into the lake's landing zone (policy in the module docstring)."""

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
        when_full: Literal["refuse", "drop"] | None = None,
        wal: WalStream | None = None,
        on_logged: Callable[[list[Entry]], None] | None = None,
    ) -> None:
        self.lake = Lake(lake_root)
        folders = {"events": self.lake.landing_events, "exposures": self.lake.landing_exposures}
        if dataset not in folders:
            raise ValueError(f"dataset={dataset!r}: the landing writer writes one of {sorted(folders)}")
        when_full = when_full or ("drop" if dataset == "exposures" else "refuse")
        if when_full not in ("refuse", "drop"):
            raise ValueError(f"when_full={when_full!r}: refuse or drop")
        self._folder = folders[dataset]
        self.dataset = dataset
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        self.source = source
        self.clock = clock
        self.flush_inline = flush_inline
        self.max_pending = max_pending
        self.when_full = when_full
        self.wal = wal
        self.on_logged = on_logged
        self.written = 0
        self.files = 0
        self.write_errors = 0
        self.dropped = 0
        self.refused = 0
        self.recovered = 0
        self.last_error: str | None = None
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered_once = False
        self._marked: set[Path] = set()

    @property
    def durable(self) -> bool:
        """Whether accepted records are in the write-ahead log before ``add`` returns."""
        return self.wal is not None

    @property
    def pending(self) -> int:
        """Accepted records not in the landing zone yet."""
        return self.wal.pending if self.wal is not None else len(self._buffer)

    def add(self, records: list[dict[str, Any]], marks: dict[str, str] | None = None, wait: bool = True) -> None:
        """Accept records: into the write-ahead log (synced before returning when ``wait``), else the memory buffer.

        With ``max_pending`` and that many records waiting: ``when_full="refuse"`` (events' default) raises
        :class:`LandingFull` (nothing accepted), ``"drop"`` keeps what fits and counts the rest in
        ``dropped`` (exposures' default). A WAL that cannot be written raises ``serving.wal.WalError`` (nothing accepted).
        ``marks`` (``serving.idempotency``: the request's ``Idempotency-Key`` and answer, its event ids)
        are logged with the records: replaying the log after a crash sets them again.
        """
        if not records:
            return
        dropped = 0
        if self.max_pending is not None and records:
            room = max(self.max_pending - self.pending, 0)
            if room < len(records):
                if self.when_full == "refuse":
                    self.refused += len(records)
                    raise LandingFull(
                        f"{self.pending} {self.dataset} are waiting for the landing zone "
                        f"(max {self.max_pending}; last error: {self.last_error})"
                    )
                dropped = len(records) - room
                self.dropped += dropped
                records = records[:room]
        if dropped and self.dropped == dropped:
            log.warning(
                "landing %s: %d records waiting (max_pending); dropping and counting the rest until a flush succeeds",
                self.dataset,
                self.max_pending,
            )
        if self.wal is not None:
            self.wal.append(Entry(records, marks), wait=wait)
            full = self.wal.active_records >= self.flush_events
            was_empty = False
        else:
            with self._lock:
                was_empty = not self._buffer
                self._buffer.extend(records)
                full = len(self._buffer) >= self.flush_events
        if full and self.flush_inline:
            self.flush()
        elif full:
            self._urgent.set()
        if records and (was_empty or self.pending):  # the timer flushes (or retries a failed flush) later
            self._wake.set()

    def flush(self) -> int:
        """Write everything accepted so far to the landing zone; returns the number of records written."""
        with self._write_lock:
            if self.wal is not None:
                return self._flush_wal()
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                self._write(batch, self._new_target())
            except OSError as exc:
                self._failed(exc, len(batch))
                with self._lock:
                    self._buffer[:0] = batch
                return 0
            self.written += len(batch)
            self.last_error = None
            return len(batch)

    def _flush_wal(self) -> int:
        """Seal the active segment and land every sealed one, oldest first, each as one file exactly once."""
        assert self.wal is not None
        written = 0
        for segment in self.wal.rotate():
            try:
                written += self._land_segment(segment)
            except OSError as exc:
                self._failed(exc, self.wal.sealed_records.get(segment, 0))
                break
        if written:
            self.last_error = None
        return written

    def _land_segment(self, segment: Path) -> int:
        assert self.wal is not None
        entries = read_segment(segment)
        records = [record for entry in entries for record in entry.records]
        if segment not in self._marked:
            self._marks(entries)
        if not records:
            self.wal.landed(segment)
            return 0
        note = segment.with_name(segment.name + TARGET_SUFFIX)
        target = Path(note.read_text()) if note.exists() else None
        if target is not None and target.exists():  # landed before a crash took the segment's removal
            self.wal.landed(segment)
            return 0
        if target is None:
            target = self._new_target()
            _write_synced(note, str(target).encode())
        self._write(records, target)
        self.wal.landed(segment)
        self._marked.discard(segment)
        self.written += len(records)
        return len(records)

    def _marks(self, entries: list[Entry]) -> None:
        """Hand logged entries' marks to ``on_logged`` (before their segment goes); a failure is only logged."""
        if self.on_logged is None or not any(entry.marks for entry in entries):
            return
        try:
            self.on_logged(entries)
        except Exception as exc:
            log.warning(
                "landing %s: could not set the marks of %d logged entries (%s)", self.dataset, len(entries), exc
            )

    def _failed(self, exc: OSError, n: int) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("landing write of %d %s failed (%s); kept for the next flush", n, self.dataset, exc)

    def _new_target(self) -> Path:
        now = self.clock()
        return (
            self._folder(now.date()) / f"{self.source}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.jsonl"
        )

    def _write(self, batch: list[dict[str, Any]], target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = staging_path(target)
        try:
            _write_synced(tmp, _JSON.encode_lines(batch))  # UTF-8 JSON, one object per line
            os.replace(tmp, target)
            if self.wal is not None:
                fsync_dir(target.parent)  # the rename is durable before the segment goes
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self.files += 1
        return target

    # ---- recovery and the background timer ---------------------------------------------------
    def recover(self) -> int:
        """Land what the write-ahead log holds from before this process (a crash, a stopped worker); once.

        Every entry's marks are handed to ``on_logged`` first (idempotency keys and event ids are set again).
        Returns the records landed now (0 while the lake cannot be written: the timer retries).
        """
        if self.wal is None or self._recovered_once:
            return 0
        self._recovered_once = True
        segments = self.wal.sealed()
        if not segments:
            return 0
        self._marks([entry for segment in segments for entry in read_segment(segment)])
        self._marked.update(segments)
        landed = self.flush()
        self.recovered += landed
        log.warning(
            "landing %s: replayed %d record(s) from %d write-ahead segment(s) into the landing zone",
            self.dataset,
            landed,
            len(segments),
        )
        return landed

    def start(self) -> None:
        """Replay the write-ahead log, then flush every ``flush_seconds`` after the first record, in a daemon thread."""
        self.recover()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._urgent.clear()
        self._thread = threading.Thread(target=self._run, name=f"landing-{self.dataset}", daemon=True)
        self._thread.start()
        if self.pending:
            self._wake.set()

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
        """Stop the timer and flush everything accepted (graceful shutdown)."""
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return self.flush()


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``path`` whole and fsync it."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
