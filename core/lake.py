"""Lake layout: every stage's partition path in one place (root = ``Settings.lake``).

```
landing/events/dt=YYYY-MM-DD/*.jsonl   raw drops (loaders, simulator, scoring API event log)
landing/items/*.jsonl                  catalogue drops
landing/exposures/dt=YYYY-MM-DD/*.jsonl  what the scoring API showed (one record per response)
bronze/events/dt=YYYY-MM-DD/           typed Parquet (ingest)
silver/events/dt=YYYY-MM-DD/           clean Parquet (clean)
silver/items/                          clean catalogue (clean)
silver/interactions_daily/dt=YYYY-MM-DD/  per-day (user, item) partial aggregates (features' cache)
gold/<run_date>/{interactions,users,items,sequences,split=train,split=valid,split=test}
reports/<run_date>/<stage>.json        row counts and drop reasons per stage
```
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path


class Lake:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def landing_events(self, day: dt.date | None = None) -> Path:
        base = self.root / "landing" / "events"
        return base if day is None else base / f"dt={day.isoformat()}"

    def landing_exposures(self, day: dt.date | None = None) -> Path:
        base = self.root / "landing" / "exposures"
        return base if day is None else base / f"dt={day.isoformat()}"

    def landing_items(self) -> Path:
        return self.root / "landing" / "items"

    def bronze_events(self, day: dt.date | None = None) -> Path:
        base = self.root / "bronze" / "events"
        return base if day is None else base / f"dt={day.isoformat()}"

    def silver_events(self, day: dt.date | None = None) -> Path:
        base = self.root / "silver" / "events"
        return base if day is None else base / f"dt={day.isoformat()}"

    def silver_items(self) -> Path:
        return self.root / "silver" / "items"

    def daily_interactions(self, day: dt.date | None = None) -> Path:
        """Per landing day, the (user, item) partial aggregates features builds from that silver day and reuses."""
        base = self.root / "silver" / "interactions_daily"
        return base if day is None else base / f"dt={day.isoformat()}"

    def gold(self, run_date: dt.date, table: str | None = None) -> Path:
        base = self.root / "gold" / run_date.isoformat()
        return base if table is None else base / table

    def report(self, run_date: dt.date, stage: str) -> Path:
        return self.root / "reports" / run_date.isoformat() / f"{stage}.json"

    @staticmethod
    def partition_days(base: Path) -> list[dt.date]:
        """Days present as ``dt=YYYY-MM-DD`` folders under ``base``, sorted."""
        if not base.exists():
            return []
        days = []
        for child in base.iterdir():
            if child.is_dir() and child.name.startswith("dt="):
                try:
                    days.append(dt.date.fromisoformat(child.name[3:]))
                except ValueError:
                    continue
        return sorted(days)


def staging_path(target: Path) -> Path:
    """A sibling temp path for an atomic write of ``target`` (same filesystem, so rename is atomic)."""
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"


def commit_path(staged: Path, target: Path) -> None:
    """Replace ``target`` by ``staged``: rename the old one aside, rename the new one in, delete the old.

    A reader never sees a half-written partition; a crash leaves either the old or the new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if target.exists():
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
    os.replace(staged, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink(missing_ok=True)
