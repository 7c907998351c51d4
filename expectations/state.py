"""Each day's raw-gate outcome, kept so that a day that failed stays failed until it is fixed.

One small JSON per landing day, ``<reports>/gates/raw/dt=YYYY-MM-DD.json``::

    {"day", "status": "passed" | "failed" | "accepted", "bronze": <fingerprint of the bronze partition
     judged, null when it had none>, "run_date", "checked_at", "summary": <validation_raw.json of that
     run>, "failures": ["<table>: <column> <expectation>", ...], "bad_files": {<landing path>: rows},
     "events": n, "distribution": {"events", "event_types": {type: n}, "top_items": {item: n}}}

The raw gate checks a day again whenever its last outcome is not a pass (or an acceptance) of the
bronze partition as it is now: a failed day, a day whose bronze changed (re-ingested, e.g. after
``python -m jobs.quarantine`` set its bad landing files aside), a day never judged. A day that is
right although a check says otherwise (a real sales spike, a day with no data that will never
come) is accepted by hand, for the partition as it is, with a reason (``python -m expectations.state
--accept YYYY-MM-DD --reason ...``); every acceptance is appended to ``gates/raw/audit.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PASSED = "passed"
FAILED = "failed"
ACCEPTED = "accepted"
STATUSES = (PASSED, FAILED, ACCEPTED)
AUDIT = "audit.jsonl"


def state_dir(report_dir: str | os.PathLike[str], stage: str = "raw") -> Path:
    """``<reports>/gates/<stage>``: where a stage keeps one outcome file per day."""
    return Path(report_dir) / "gates" / stage


def state_path(report_dir: str | os.PathLike[str], day: dt.date, stage: str = "raw") -> Path:
    return state_dir(report_dir, stage) / f"dt={day.isoformat()}.json"


def partition_fingerprint(partition: Path) -> list[list[Any]] | None:
    """``[[file name, size], ...]`` of a partition's data files (Spark names each write's files anew), or None."""
    if not partition.is_dir():
        return None
    return sorted(
        [p.name, p.stat().st_size] for p in partition.iterdir() if p.is_file() and not p.name.startswith((".", "_"))
    )


def read_state(report_dir: str | os.PathLike[str], day: dt.date, stage: str = "raw") -> dict[str, Any] | None:
    try:
        record = json.loads(state_path(report_dir, day, stage).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_state(report_dir: str | os.PathLike[str], record: dict[str, Any], stage: str = "raw") -> Path:
    """Write one day's outcome atomically (``record["day"]`` names the day)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"gate state status must be one of {STATUSES}, got {record.get('status')!r}")
    path = state_path(report_dir, dt.date.fromisoformat(record["day"]), stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def is_settled(record: dict[str, Any] | None, fingerprint: list[list[Any]] | None) -> bool:
    """Whether a day needs no check: it passed (or was accepted) with the bronze partition it has now."""
    return record is not None and record.get("status") in (PASSED, ACCEPTED) and record.get("bronze") == fingerprint


def days_to_check(
    report_dir: str | os.PathLike[str],
    bronze_base: Path,
    window: Iterable[dt.date],
    run_date: dt.date | None = None,
    stage: str = "raw",
) -> list[dt.date]:
    """Days of ``window`` the gate must judge: any day with a bronze partition or an outcome on record that
    is not settled, plus ``run_date`` (when given and in the window) unless settled: a run day without
    data is judged too, and fails."""
    out = []
    for day in sorted(set(window)):
        fingerprint = partition_fingerprint(bronze_base / f"dt={day.isoformat()}")
        record = read_state(report_dir, day, stage)
        known = fingerprint is not None or record is not None or day == run_date
        if known and not is_settled(record, fingerprint):
            out.append(day)
    return out


def failed_days(report_dir: str | os.PathLike[str], stage: str = "raw") -> dict[str, dict[str, Any]]:
    """Every day whose last outcome is a failure, keyed by ISO day."""
    folder = state_dir(report_dir, stage)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("dt=*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("status") == FAILED:
            out[str(record.get("day", path.stem[3:]))] = record
    return out


def accept_day(
    report_dir: str | os.PathLike[str],
    bronze_base: Path,
    day: dt.date,
    reason: str,
    by: str | None = None,
    stage: str = "raw",
) -> dict[str, Any]:
    """Record ``day`` as accepted for its bronze partition as it is now (a change makes it judged again)."""
    if not reason.strip():
        raise ValueError("an acceptance needs a reason (--reason): it is kept in the audit log")
    previous = read_state(report_dir, day, stage) or {}
    now = dt.datetime.now(dt.UTC).isoformat()
    record = {
        **{k: v for k, v in previous.items() if k in ("events", "distribution", "failures", "bad_files", "summary")},
        "day": day.isoformat(),
        "status": ACCEPTED,
        "bronze": partition_fingerprint(bronze_base / f"dt={day.isoformat()}"),
        "accepted_at": now,
        "accepted_by": by or getpass.getuser(),
        "reason": reason,
        "previous_status": previous.get("status"),
    }
    write_state(report_dir, record, stage)
    audit = state_dir(report_dir, stage) / AUDIT
    with open(audit, "a", encoding="utf-8") as fh:
        entry = {"action": "accept", "day": record["day"], "by": record["accepted_by"], "at": now, "reason": reason}
        entry["previous_status"] = record["previous_status"]
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return record


def main(argv: list[str] | None = None) -> int:
    """CLI: list the raw gate's failed days, or accept one by hand."""
    from core.lake import Lake
    from core.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m expectations.state", description=__doc__.splitlines()[0])
    parser.add_argument("--accept", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="accept this day as it is")
    parser.add_argument("--reason", default="", help="why the day is right although a check failed (audited)")
    parser.add_argument("--report-dir", default=None, help="default: RECSYS_REPORTS_DIR / <home>/reports")
    parser.add_argument("--lake", default=None, help="default: RECSYS_LAKE_URI / <home>/lake")
    args = parser.parse_args(argv)
    settings = get_settings()
    report_dir = args.report_dir or settings.reports
    if args.accept:
        try:
            record = accept_day(report_dir, Lake(args.lake or settings.lake).bronze_events(), args.accept, args.reason)
        except ValueError as exc:
            print(f"gate state: {exc}", file=sys.stderr)
            return 2
        print(
            f"{record['day']}: accepted (was {record['previous_status'] or 'never judged'}); audited in "
            f"{state_dir(report_dir) / AUDIT}"
        )
        return 0
    failed = failed_days(report_dir)
    for day, record in failed.items():
        files = ", ".join(record.get("bad_files") or {}) or "no landing file named"
        print(f"{day}  failed on run {record.get('run_date')}: {'; '.join(record.get('failures', []))}  [{files}]")
    if not failed:
        print("no day of the raw gate stands failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
