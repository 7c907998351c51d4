"""The API's write-ahead log: what it acknowledged is on disk before it says so.

One :class:`WriteAheadLog` per API process, under ``RECSYS_WAL_DIR`` (default ``<home>/serving/wal``)::

    <wal dir>/slot-<n>/LOCK                      flock held by the live process that owns the slot
    <wal dir>/slot-<n>/<stream>/<id>.seg         JSON lines, one per append: {"records": [...], "marks": {...}}
    <wal dir>/slot-<n>/<stream>/<id>.seg.target  the landing file a sealed segment goes to (written before it)

Streams are the landing datasets (``events``, ``exposures``); both share one committer thread.
:meth:`WalStream.append` queues an entry and (``wait=True``) blocks until it is written and
``fdatasync``-ed: whatever is queued while one sync runs is written and synced together (group
commit), so concurrent requests share each sync. A failed write is cut back off the file and raised
to every appender of that round; nothing half-written stays.

A segment is the unit of landing: :meth:`WalStream.rotate` seals the active segment, and the landing
writer turns each sealed segment into exactly one landing file (named in ``.target`` first, so a
crash between the landing file's rename and the segment's removal is recognised on replay instead of
landing it twice), then deletes the segment.

Several worker processes share the WAL dir: each takes the first free slot (a non-blocking
``flock``; the kernel releases it when the process dies, ``kill -9`` included). On :meth:`open`, a
process also adopts the segments of every other slot it can lock (a dead process's) by renaming
them into its own slot: its landing writers land them before the API answers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
TARGET_SUFFIX = ".target"
LOCK_FILE = "LOCK"
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


class WalError(OSError):
    """The log could not be written (disk full, I/O error): nothing of that append was acknowledged."""


@dataclass(frozen=True)
class Entry:
    """One append: its records and the marks that say they were accepted (``serving.idempotency``:
    the ``Idempotency-Key`` and its answer, the event ids), set again in the state store on replay."""

    records: list[dict[str, Any]]
    marks: dict[str, str] | None = None


def encode_entry(entry: Entry) -> bytes:
    body: dict[str, Any] = {"records": entry.records}
    if entry.marks:
        body["marks"] = entry.marks
    return _ENCODER.encode(body) + b"\n"


def read_segment(path: Path) -> list[Entry]:
    """The complete entries of a segment; a torn last line (a crash mid-write, never acknowledged) is skipped."""
    entries = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                log.warning("wal: %s ends with a torn entry (%d bytes, never acknowledged); skipped", path, len(line))
                break
            try:
                body = _DECODER.decode(line)
            except msgspec.DecodeError:
                log.warning("wal: unreadable entry in %s skipped", path)
                continue
            entries.append(Entry(list(body.get("records") or []), body.get("marks") or None))
    return entries


def _new_segment_name() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Pending:
    stream: WalStream
    data: bytes
    n_records: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    written: bool = False
    cancelled: bool = False


class WalStream:
    """One dataset's segments in the process's slot (see the module docstring)."""

    def __init__(self, wal: WriteAheadLog, name: str) -> None:
        self.wal = wal
        self.name = name
        self.dir = wal.slot_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._active: Path | None = None
        self._size = 0
        self.active_records = 0
        self.sealed_records: dict[Path, int] = {}
        for path in self.sealed():
            self.sealed_records[path] = sum(len(e.records) for e in read_segment(path))

    @property
    def pending(self) -> int:
        """Records in the log not landed yet (active and sealed segments, and appends queued)."""
        return self.active_records + sum(self.sealed_records.values()) + self.wal.queued_records(self)

    def append(self, entry: Entry, wait: bool = True, timeout: float | None = None) -> None:
        """Log ``entry``; with ``wait``, return once it is synced (raise :class:`WalError` if it was not written).

        A wait that times out withdraws the entry if it was not written yet (then raises ``TimeoutError``).
        """
        self.wal.submit(self, encode_entry(entry), len(entry.records), wait, timeout)

    def sealed(self) -> list[Path]:
        """Segments not being written, oldest first."""
        return sorted(p for p in self.dir.glob(f"*{SEGMENT_SUFFIX}") if p != self._active)

    def rotate(self) -> list[Path]:
        """Seal the active segment (if it holds anything); every sealed segment, oldest first."""
        with self.wal.io_lock:
            if self._fd is not None and self._active is not None and self.active_records:
                os.fdatasync(self._fd)
                os.close(self._fd)
                self.sealed_records[self._active] = self.active_records
                self._fd, self._active, self._size, self.active_records = None, None, 0, 0
        return self.sealed()

    def landed(self, path: Path) -> None:
        """``path`` is in the landing zone: delete the segment and its target note."""
        path.unlink(missing_ok=True)
        path.with_name(path.name + TARGET_SUFFIX).unlink(missing_ok=True)
        self.sealed_records.pop(path, None)

    # ---- the committer's side (called under ``wal.io_lock``) ---------------------------------
    def _open_active(self) -> int:
        if self._fd is None:
            self._active = self.dir / _new_segment_name()
            self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = 0
            fsync_dir(self.dir)
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open_active()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self._size += len(data)

    def _truncate(self, size: int) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                log.exception("wal: could not cut a failed write off %s", self._active)
            self._size = size

    def _sync(self) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._active = None


class WriteAheadLog:
    """The process's WAL: a slot, its streams, one committer thread (group commit)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.slot_dir = Path()
        self.io_lock = threading.Lock()
        self.commits = 0
        self.entries = 0
        self.errors = 0
        self.adopted = 0
        self._streams: dict[str, WalStream] = {}
        self._queue: list[_Pending] = []
        self._cv = threading.Condition()
        self._lock_fh: Any = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # ---- slots ----------------------------------------------------------------------------------
    def open(self) -> WriteAheadLog:
        """Take a free slot and adopt the segments of every other free slot (dead processes'); idempotent."""
        if self._lock_fh is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            slot = self.root / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            fh = _try_lock(slot / LOCK_FILE)
            if fh is not None:
                self._lock_fh, self.slot_dir = fh, slot
                break
            n += 1
        for other in sorted(self.root.glob("slot-*")):
            if other == self.slot_dir or not other.is_dir():
                continue
            fh = _try_lock(other / LOCK_FILE)
            if fh is None:
                continue  # a live process's
            try:
                self.adopted += _adopt(other, self.slot_dir)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
        if self.adopted:
            log.warning("wal: adopted %d segment(s) of stopped processes into %s", self.adopted, self.slot_dir)
        return self

    def stream(self, name: str) -> WalStream:
        """The stream for ``name`` (created on first use); :meth:`open` first."""
        if self._lock_fh is None:
            self.open()
        if name not in self._streams:
            self._streams[name] = WalStream(self, name)
        return self._streams[name]

    # ---- group commit ---------------------------------------------------------------------------
    def submit(self, stream: WalStream, data: bytes, n_records: int, wait: bool, timeout: float | None) -> None:
        pending = _Pending(stream, data, n_records)
        with self._cv:
            if self._closing:
                raise WalError("the write-ahead log is closed")
            self._queue.append(pending)
            self._cv.notify()
        self._ensure_thread()
        if not wait:
            return
        if not pending.done.wait(timeout):
            with self._cv:
                if pending in self._queue:
                    self._queue.remove(pending)
                    pending.cancelled = True
            if pending.cancelled:
                raise TimeoutError("the write-ahead log did not sync in time; nothing was logged")
            pending.done.wait()
        if pending.error is not None:
            raise WalError(f"write-ahead log: {pending.error}") from pending.error

    def queued_records(self, stream: WalStream) -> int:
        with self._cv:
            return sum(p.n_records for p in self._queue if p.stream is stream)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._cv:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="wal-commit", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        with self.io_lock:
            starts: dict[int, tuple[WalStream, int]] = {}
            error: BaseException | None = None
            try:
                for pending in batch:
                    stream = pending.stream
                    starts.setdefault(id(stream), (stream, stream._size))
                    stream._write(pending.data)
                for stream, _ in starts.values():
                    stream._sync()
            except OSError as exc:
                error = exc
                self.errors += 1
                for stream, size in starts.values():
                    stream._truncate(size)
                log.warning("wal: a write of %d entries failed (%s); none acknowledged", len(batch), exc)
            if error is None:
                for pending in batch:
                    pending.stream.active_records += pending.n_records
                self.commits += 1
                self.entries += len(batch)
        for pending in batch:
            pending.error = error
            pending.written = error is None
            pending.done.set()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the committer, close the segments and release the slot."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.io_lock:
            for stream in self._streams.values():
                stream._close()
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None


def _try_lock(path: Path) -> Any:
    fh = open(path, "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _adopt(other: Path, mine: Path) -> int:
    """Move every segment (and target note) of the free slot ``other`` into ``mine``; how many segments."""
    moved = 0
    for stream_dir in sorted(p for p in other.iterdir() if p.is_dir()):
        dest = mine / stream_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for path in sorted(stream_dir.iterdir()):
            if path.name.endswith(SEGMENT_SUFFIX) or path.name.endswith(SEGMENT_SUFFIX + TARGET_SUFFIX):
                os.replace(path, dest / path.name)
                moved += path.name.endswith(SEGMENT_SUFFIX)
        fsync_dir(dest)
    return moved
