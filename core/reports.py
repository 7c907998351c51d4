"""Per-run stage reports (row counts, drop reasons, metrics, decisions) as JSON in the lake."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from core.lake import Lake


def write_report(lake_root: str | os.PathLike[str], run_date: dt.date, stage: str, report: dict[str, Any]) -> Path:
    """Write ``report`` as ``reports/<run_date>/<stage>.json`` (atomically) and return the path."""
    path = Lake(lake_root).report(run_date, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def _progress_path(lake_root: str | os.PathLike[str], run_date: dt.date, stage: str) -> Path:
    return Lake(lake_root).report(run_date, stage).parent / "progress" / f"{stage}.json"


def write_progress(lake_root: str | os.PathLike[str], run_date: dt.date, stage: str, progress: dict[str, Any]) -> None:
    """Where a long task stands (e.g. ``{"epoch": 3, "epochs": 8, "metrics": {...}}``), for the live console."""
    path = _progress_path(lake_root, run_date, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(progress, default=str))
    os.replace(tmp, path)


def read_progress(lake_root: str | os.PathLike[str], run_date: dt.date, stage: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_progress_path(lake_root, run_date, stage).read_text()))
    except (OSError, ValueError):
        return None


def read_reports(
    lake_root: str | os.PathLike[str], run_date: dt.date, since: float | None = None
) -> dict[str, dict[str, Any]]:
    """All stage reports of one run date, keyed by stage name (only those written after ``since``, a
    ``time.time()`` stamp, when given: the reports of one run, not an earlier run of the same date)."""
    folder = Lake(lake_root).report(run_date, "x").parent
    if not folder.exists():
        return {}
    return {
        p.stem: json.loads(p.read_text())
        for p in sorted(folder.glob("*.json"))
        if since is None or p.stat().st_mtime >= since
    }
