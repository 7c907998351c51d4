"""The write-ahead log and the landing writer on top of it: group commit, torn tails, replay exactly once,
slots of dead processes adopted, a failed write cut off and never acknowledged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving.events import LandingFull, LandingWriter
from serving.wal import SEGMENT_SUFFIX, TARGET_SUFFIX, Entry, WalError, WriteAheadLog, read_segment


def landed(lake: Path, dataset: str = "events") -> list[dict]:
    return [json.loads(line) for f in sorted((lake / "landing" / dataset).rglob("*.jsonl")) for line in f.open()]


def writer(tmp_path: Path, wal: WriteAheadLog, flush_events: int = 1000, **kwargs) -> LandingWriter:
    return LandingWriter(tmp_path / "lake", flush_events, 3600.0, "api", wal=wal.stream("events"), **kwargs)


def test_concurrent_appends_share_syncs_and_all_land_once(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal").open()
    landing = writer(tmp_path, wal)
    barrier = threading.Barrier(16)

    def client(n: int) -> None:
        barrier.wait()
        for m in range(10):
            landing.add([{"event_id": f"{n}-{m}-{k}"} for k in range(5)])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wal.entries == 160 and wal.commits < wal.entries, "group commit: several appends per sync"
    assert landing.pending == 800
    assert landing.flush() == 800 and landing.pending == 0
    ids = [r["event_id"] for r in landed(tmp_path / "lake")]
    assert len(ids) == len(set(ids)) == 800
    assert not list((wal.slot_dir / "events").glob(f"*{SEGMENT_SUFFIX}")), "landed segments are deleted"
    wal.close()


def test_a_crash_is_replayed_into_the_landing_zone_exactly_once(tmp_path: Path) -> None:
    """A child process appends and is killed with SIGKILL; a new process replays what it acknowledged."""
    script = f"""
import os, sys
sys.path.insert(0, {str(Path.cwd())!r})
from serving.wal import WriteAheadLog, Entry
wal = WriteAheadLog({str(tmp_path / "wal")!r}).open()
stream = wal.stream("events")
for n in range(30):
    stream.append(Entry([{{"event_id": f"e{{n}}"}}], {{"e:e" + str(n): "d:x"}}))
    if n == 19:
        stream.rotate()  # a sealed segment and an active one
print("acked", flush=True)
os.kill(os.getpid(), 9)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "acked" and out.returncode == -9
    marks: list[dict] = []
    wal = WriteAheadLog(tmp_path / "wal").open()
    assert wal.adopted == 0, "slot-0 was free again: the new process took it"
    landing = writer(tmp_path, wal, on_logged=lambda entries: marks.extend(e.marks or {} for e in entries))
    assert landing.recover() == 30 and landing.recovered == 30
    assert sorted(r["event_id"] for r in landed(tmp_path / "lake")) == sorted(f"e{n}" for n in range(30))
    assert len(marks) == 30, "the marks (idempotency keys, event ids) are set again on replay"
    assert landing.recover() == 0, "once"
    wal.close()
    wal2 = WriteAheadLog(tmp_path / "wal").open()
    assert writer(tmp_path, wal2).recover() == 0 and len(landed(tmp_path / "lake")) == 30
    wal2.close()


def test_a_torn_tail_is_skipped(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal").open()
    stream = wal.stream("events")
    stream.append(Entry([{"n": 1}]))
    [segment] = stream.rotate()
    with open(segment, "ab") as fh:
        fh.write(b'{"records": [{"n": 2}')  # a write that never completed (never acknowledged)
    assert [e.records for e in read_segment(segment)] == [[{"n": 1}]]
    wal.close()


def test_a_landing_file_renamed_before_the_crash_is_not_landed_again(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal").open()
    landing = writer(tmp_path, wal)
    landing.add([{"n": 1}, {"n": 2}])
    [segment] = wal.stream("events").rotate()
    target = tmp_path / "lake" / "landing" / "events" / "dt=2024-01-01" / "api-x.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text('{"n": 1}\n{"n": 2}\n')  # the landing file went in ...
    segment.with_name(segment.name + TARGET_SUFFIX).write_text(str(target))  # ... named first
    assert landing.flush() == 0 and len(landed(tmp_path / "lake")) == 2, "recognised, not landed twice"
    assert not segment.exists()
    wal.close()


def test_a_dead_workers_slot_is_adopted_by_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "wal"
    first = WriteAheadLog(root).open()
    second = WriteAheadLog(root).open()
    assert (first.slot_dir.name, second.slot_dir.name) == ("slot-0", "slot-1"), "a live slot is never shared"
    second.stream("events").append(Entry([{"n": 1}]))
    second.close()  # slot-1 free, its segment left behind (as after a crash)
    third = WriteAheadLog(root).open()
    assert third.slot_dir.name == "slot-1" and third.adopted == 0
    third.close()
    fourth = WriteAheadLog(root).open()  # slot-1 again; adopts nothing new. slot-0 is held by `first`.
    landing = writer(tmp_path, fourth)
    assert landing.recover() == 1
    fourth.close()
    first.close()


def test_a_failed_write_is_cut_off_and_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog(tmp_path / "wal").open()
    stream = wal.stream("events")
    stream.append(Entry([{"n": 1}]))
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data)[:5])  # half an entry reaches the file ...
            raise OSError(28, "No space left on device")  # ... then the disk is full
        return real_write(fd, data)

    monkeypatch.setattr("serving.wal.os.write", failing_write)
    with pytest.raises(WalError, match="No space left"):
        stream.append(Entry([{"n": 2}]))
    monkeypatch.undo()
    stream.append(Entry([{"n": 3}]))
    [segment] = stream.rotate()
    assert [e.records for e in read_segment(segment)] == [[{"n": 1}], [{"n": 3}]], "nothing half-written stays"
    assert wal.errors == 1
    wal.close()


def test_landing_is_bounded_refuse_for_events_drop_for_exposures(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal").open()
    events = writer(tmp_path, wal, max_pending=5)
    events.add([{"n": n} for n in range(4)])
    with pytest.raises(LandingFull, match="5"):
        events.add([{"n": n} for n in range(2)])
    assert events.pending == 4 and events.refused == 2
    exposures = LandingWriter(
        tmp_path / "lake", 1000, 3600.0, "api", dataset="exposures", max_pending=3, wal=wal.stream("exposures")
    )
    exposures.add([{"n": n} for n in range(5)], wait=True)
    assert exposures.pending == 3 and exposures.dropped == 2
    wal.close()
