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


def read_reports(lake_root: str | os.PathLike[str], run_date: dt.date) -> dict[str, dict[str, Any]]:
    """All stage reports of one run date, keyed by stage name."""
    folder = Lake(lake_root).report(run_date, "x").parent
    if not folder.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
