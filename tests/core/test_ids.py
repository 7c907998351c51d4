"""Request ids: ULIDs that sort in the order they were drawn, are unique, and carry their time."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest

from core.ids import (
    CROCKFORD,
    UlidGenerator,
    encode_ulid,
    iso_millis,
    new_request_id,
    new_request_id_and_time,
    ulid_millis,
    ulid_time,
)

ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def test_encoding_is_26_crockford_characters_and_round_trips_the_time() -> None:
    assert encode_ulid(0, 0) == "0" * 26
    assert encode_ulid((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25
    millis = 1_714_557_600_123
    ulid = encode_ulid(millis, 12345)
    assert ULID_RE.match(ulid) and set(ulid) <= set(CROCKFORD)
    assert ulid_millis(ulid) == millis
    assert ulid_time(ulid) == dt.datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=dt.UTC)
    assert iso_millis(millis) == "2024-05-01T10:00:00.123Z"
    for bad in ("", "0" * 25, "I" + "0" * 25, "8" + "0" * 25, "u" * 26):
        with pytest.raises(ValueError, match="not a ULID"):
            ulid_millis(bad)


def test_ids_are_unique_and_sort_in_the_order_they_were_drawn() -> None:
    ids = [new_request_id() for _ in range(20_000)]  # thousands per millisecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "monotonic within a millisecond"
    assert all(ULID_RE.match(i) for i in ids[:100])
    now = dt.datetime.now(dt.UTC)
    assert abs((ulid_time(ids[-1]) - now).total_seconds()) < 5


def test_the_id_and_its_timestamp_are_the_same_instant() -> None:
    ulid, ts = new_request_id_and_time()
    assert ts.endswith("Z") and dt.datetime.fromisoformat(ts) == ulid_time(ulid)


def test_unique_across_threads_and_generators() -> None:
    """Threads share one monotonic generator; separate generators (workers) differ by their random bits."""
    found: list[list[str]] = [[] for _ in range(4)]

    def draw(slot: int) -> None:
        found[slot] = [new_request_id() for _ in range(5_000)]

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for chunk in found for i in chunk]
    assert len(set(every)) == len(every)
    assert all(chunk == sorted(chunk) for chunk in found)
    other = [UlidGenerator().new()[0] for _ in range(1000)]
    assert not set(other) & set(every)


def test_a_clock_that_steps_back_keeps_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([5_000_000_000, 4_000_000_000, 4_000_000_000, 6_000_000_000])
    monkeypatch.setattr("core.ids.time.time_ns", lambda: next(clock))
    gen = UlidGenerator()
    ids = [gen.new()[0] for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [ulid_millis(i) for i in ids] == [5000, 5000, 5000, 6000]
