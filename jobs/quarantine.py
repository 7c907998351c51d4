"""Set a bad landing drop aside so that the next run passes: moved, kept, audited, restorable.

``python -m jobs.quarantine`` (``make quarantine``) takes the landing files named by the raw gate's
failed days (``bad_files`` of each ``<reports>/gates/raw/dt=YYYY-MM-DD.json`` whose status is
``failed``; ``--day`` picks one), else by the last failed raw gate (``bad_files`` in
``validation_raw.json``; ``--run-date`` picks that run's), or the files given with ``--file``, and moves
each to ``<lake>/quarantine/<id>/<its path under the lake>``. Nothing is deleted: ``QUARANTINE.json``
in that folder records the files (size, sha256), why, who and when, and every action is appended to
``<lake>/quarantine/audit.jsonl``. Ingest sees the landing day's files change, so the next run
re-ingests that day without them, and the raw gate, which keeps a failed day failed until its
bronze partition changes, judges it again. ``--list`` shows what is set aside, ``--restore ID`` puts
a drop back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from core.lake import Lake
from core.settings import get_settings

MANIFEST = "QUARANTINE.json"
AUDIT = "audit.jsonl"
#: Where the raw gate keeps each day's outcome (``expectations.state``; read here as plain JSON files).
GATE_STATE = Path("gates") / "raw"


class QuarantineError(RuntimeError):
    """Nothing to quarantine, or a file outside the landing zone."""


def quarantine_root(lake: Lake) -> Path:
    return lake.root / "quarantine"


def last_failed_raw_gate(reports_dir: Path, run_date: dt.date | None = None) -> Path | None:
    """``validation_raw.json`` of ``run_date``, else the most recently written failed one."""
    if run_date is not None:
        path = reports_dir / run_date.isoformat() / "validation_raw.json"
        return path if path.is_file() else None
    failed = []
    for path in reports_dir.glob("*/validation_raw.json"):
        try:
            if not json.loads(path.read_text()).get("success", True):
                failed.append(path)
        except (OSError, ValueError):
            continue
    return max(failed, key=lambda p: p.stat().st_mtime) if failed else None


def failed_gate_days(reports_dir: Path, day: dt.date | None = None) -> dict[str, dict[str, int]]:
    """``{day: bad_files}`` of every day whose last raw-gate outcome is a failure (or just ``day``)."""
    folder = reports_dir / GATE_STATE
    pattern = f"dt={day.isoformat()}.json" if day is not None else "dt=*.json"
    out: dict[str, dict[str, int]] = {}
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("status") == "failed":
            out[str(record.get("day", path.stem[3:]))] = dict(record.get("bad_files") or {})
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _audit(lake: Lake, entry: dict[str, Any]) -> None:
    root = quarantine_root(lake)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / AUDIT, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _landing_relative(lake: Lake, file: str | Path) -> Path:
    """``file`` (absolute, or relative to the lake or to its landing zone) as a path relative to the lake root."""
    path = Path(file)
    candidates = [path] if path.is_absolute() else [lake.root / path, lake.root / "landing" / path]
    for candidate in candidates:
        resolved = candidate.resolve()
        landing = (lake.root / "landing").resolve()
        if resolved.is_relative_to(landing) and resolved.is_file():
            return resolved.relative_to(lake.root.resolve())
    raise QuarantineError(f"{file}: not a file in the landing zone {lake.root / 'landing'}")


def quarantine(
    lake_root: str | os.PathLike[str],
    files: list[str],
    reason: str,
    source_report: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Move ``files`` out of the landing zone into a new quarantine folder; return its manifest."""
    lake = Lake(lake_root)
    if not files:
        raise QuarantineError("no file to quarantine: name one with --file, or run after a failed raw gate")
    relative = sorted({_landing_relative(lake, f) for f in files})
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    drop_id = f"q-{stamp}"
    folder = quarantine_root(lake) / drop_id
    entries = []
    for rel in relative:
        source = lake.root / rel
        entries.append({"path": rel.as_posix(), "bytes": source.stat().st_size, "sha256": _sha256(source)})
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    manifest = {
        "id": drop_id,
        "files": entries,
        "reason": reason,
        "source_report": source_report,
        "by": getpass.getuser(),
        "at": (now or dt.datetime.now(dt.UTC)).isoformat(),
        "restored": False,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    _audit(
        lake,
        {
            "action": "quarantine",
            **{k: manifest[k] for k in ("id", "reason", "by", "at", "source_report")},
            "files": [e["path"] for e in entries],
        },
    )
    return manifest


def restore(lake_root: str | os.PathLike[str], drop_id: str, reason: str = "") -> dict[str, Any]:
    """Put a quarantined drop back into the landing zone (refused if a file of the same name is there)."""
    lake = Lake(lake_root)
    folder = quarantine_root(lake) / drop_id
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise QuarantineError(f"no quarantined drop {drop_id!r} under {quarantine_root(lake)}; see --list")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("restored"):
        raise QuarantineError(f"{drop_id} was already restored on {manifest.get('restored_at')}")
    clashes = [e["path"] for e in manifest["files"] if (lake.root / e["path"]).exists()]
    if clashes:
        raise QuarantineError(f"{drop_id}: {clashes} exist in the landing zone again; move them first")
    for entry in manifest["files"]:
        target = lake.root / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / entry["path"], target)
    manifest.update(
        {"restored": True, "restored_at": dt.datetime.now(dt.UTC).isoformat(), "restored_by": getpass.getuser()}
    )
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    _audit(
        lake,
        {
            "action": "restore",
            "id": drop_id,
            "reason": reason,
            "by": manifest["restored_by"],
            "at": manifest["restored_at"],
            "files": [e["path"] for e in manifest["files"]],
        },
    )
    return manifest


def list_drops(lake_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    root = quarantine_root(Lake(lake_root))
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{MANIFEST}"))] if root.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.quarantine", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-date",
        type=dt.date.fromisoformat,
        default=None,
        help="take the files named by this day's failed raw gate (default: the latest failed one)",
    )
    parser.add_argument(
        "--day",
        type=dt.date.fromisoformat,
        default=None,
        help="take the files named by this landing day's failed raw gate (default: every failed day)",
    )
    parser.add_argument("--file", action="append", default=[], help="a landing file to set aside (repeatable)")
    parser.add_argument("--reason", default="", help="why (kept in the audit log)")
    parser.add_argument("--list", action="store_true", help="list quarantined drops")
    parser.add_argument("--restore", metavar="ID", help="put a quarantined drop back into the landing zone")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.list:
            for drop in list_drops(settings.lake):
                state = "restored" if drop.get("restored") else "set aside"
                print(f"{drop['id']}  {state:<9}  {len(drop['files'])} file(s)  {drop['at']}  {drop['reason']}")
            return 0
        if args.restore:
            manifest = restore(settings.lake, args.restore, args.reason)
            print(f"restored {drop_summary(manifest)}; the next run ingests them again")
            return 0
        files, source = list(args.file), None
        failed = failed_gate_days(Path(settings.reports), args.day) if not files and args.run_date is None else {}
        if failed and any(failed.values()):
            files = sorted({f for bad in failed.values() for f in bad})
            source = f"raw gate state of {', '.join(d for d, bad in failed.items() if bad)}"
            files = [f for f in files if (Path(settings.lake) / f).exists()]
            if not files:
                raise QuarantineError(
                    f"the files the {source} names are no longer in the landing zone (already set aside?); "
                    "the next run re-ingests those days and judges them again"
                )
        elif args.day is not None and not files:
            raise QuarantineError(f"{args.day} has no failed raw gate naming landing files; name them with --file")
        if not files:
            report = last_failed_raw_gate(Path(settings.reports), args.run_date)
            if report is None:
                raise QuarantineError(f"no failed raw gate report under {settings.reports}; name files with --file")
            summary = json.loads(report.read_text())
            if summary.get("success", True):
                raise QuarantineError(f"{report}: the raw gate passed; nothing to quarantine")
            files, source = list(summary.get("bad_files") or {}), str(report)
            if not files:
                raise QuarantineError(f"{report} names no landing file; name them with --file")
        reason = args.reason or (f"failed raw gate ({source})" if source else "set aside by hand")
        manifest = quarantine(settings.lake, files, reason, source)
    except QuarantineError as exc:
        print(f"quarantine: {exc}", file=sys.stderr)
        return 2
    print(f"quarantined {drop_summary(manifest)} into {quarantine_root(Lake(settings.lake)) / manifest['id']}")
    print(
        "the next run re-ingests those landing days without them; undo with "
        f"python -m jobs.quarantine --restore {manifest['id']}"
    )
    return 0


def drop_summary(manifest: dict[str, Any]) -> str:
    return f"{manifest['id']}: " + ", ".join(e["path"] for e in manifest["files"])


if __name__ == "__main__":
    sys.exit(main())
