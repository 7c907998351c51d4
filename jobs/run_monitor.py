"""A console a person can read while ``make pipeline`` runs: one line per task, from Airflow's own records.

The DAG run itself (``airflow dags test``) writes its engine chatter (Airflow, Spark, Great
Expectations) to a log file; this module watches the run's task instances in Airflow's metadata
database and the stage reports the tasks write, and prints one line per finished task (task, state,
elapsed, rows in/out or the task's headline figure). On a terminal the running task also gets a live
status line, with a progress bar for training epochs (``core.reports.write_progress``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from core.reports import read_progress, read_reports

FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def headline(task: str, report: dict[str, Any] | None) -> str:
    """The one figure a person wants from a task's report."""
    if not report:
        return ""
    if task == "land":
        if report.get("format") == "landing":
            w = report.get("window", {})
            return f"landing zone: {w.get('days_in', 0)} day(s) in the window"
        return f"{_n(report.get('n_events', 0))} events landed"
    if task in ("ingest", "clean"):
        text = f"rows {_n(report.get('rows_in', 0))} -> {_n(report.get('rows_out', 0))}"
        dropped = sum((report.get("dropped") or {}).values()) or report.get("rejected", 0)
        if dropped:
            text += f" ({_n(dropped)} {'dropped' if task == 'clean' else 'rejected'})"
        if report.get("skipped_days"):
            text += f", {len(report['skipped_days'])} unchanged day(s) skipped"
        return text
    if task.startswith("validate_"):
        rows = {name: t.get("rows") for name, t in (report.get("tables") or {}).items()}
        checked = sum(r for r in rows.values() if isinstance(r, int))
        return f"{'passed' if report.get('success') else 'FAILED'}, {_n(checked)} rows checked"
    if task == "features":
        rows = report.get("rows", {})
        return f"{_n(rows.get('interactions', 0))} interactions, {_n(rows.get('users', 0))} users, {_n(rows.get('items', 0))} items"
    if task == "split":
        rows = report.get("rows", {})
        return "train {} / valid {} / test {}".format(*(_n(rows.get(s, 0)) for s in ("train", "valid", "test")))
    if task.startswith("train_"):
        metrics = report.get("metrics") or {}
        ndcg = metrics.get("ndcg@10")
        return f"ndcg@10={ndcg:.4f}" if isinstance(ndcg, int | float) else ""
    if task == "promote":
        return f"winner={report.get('winner')} promoted={report.get('promoted')}"
    return ""


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = min(width, round(width * done / total)) if total > 0 else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


@dataclass
class TaskView:
    task_id: str
    state: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    tries: int = 0

    def elapsed(self, now: dt.datetime) -> float:
        if self.start is None:
            return 0.0
        return ((self.end or now) - self.start).total_seconds()


def _ts(raw: Any) -> dt.datetime | None:
    if raw in (None, ""):
        return None
    stamp = dt.datetime.fromisoformat(str(raw))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


@dataclass
class RunMonitor:
    """Follows the newest run of ``dag_id`` created after :meth:`mark` in a SQLite metadata DB."""

    db_path: Path
    dag_id: str
    lake: str
    run_date: dt.date
    out: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool = False
    after_id: int = 0
    run_id: str | None = None
    tasks: dict[str, TaskView] = field(default_factory=dict)
    printed: set[str] = field(default_factory=set)
    lines: int = 0
    skipped: list[str] = field(default_factory=list)
    _status_shown: bool = False

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0) as conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.Error:  # locked or mid-migration: try again on the next poll
            return []

    def mark(self) -> None:
        """Remember the newest run now, so that only a run started afterwards is followed."""
        rows = self._query("SELECT coalesce(max(id), 0) FROM dag_run WHERE dag_id = ?", (self.dag_id,))
        self.after_id = int(rows[0][0]) if rows else 0

    def poll(self) -> None:
        if self.run_id is None:
            rows = self._query(
                "SELECT run_id FROM dag_run WHERE dag_id = ? AND id > ? ORDER BY id DESC LIMIT 1",
                (self.dag_id, self.after_id),
            )
            if not rows:
                return
            self.run_id = str(rows[0][0])
        rows = self._query(
            "SELECT task_id, state, start_date, end_date, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY priority_weight DESC, task_id",
            (self.dag_id, self.run_id),
        )
        for task_id, state, start, end, tries in rows:
            view = self.tasks.setdefault(task_id, TaskView(task_id))
            view.state, view.start, view.end, view.tries = state, _ts(start), _ts(end), int(tries or 0)
        self._render()

    def executed(self) -> int:
        """Tasks that ran (succeeded or failed); a run where this is 0 did nothing."""
        return sum(1 for v in self.tasks.values() if v.state in ("success", "failed"))

    def states(self) -> dict[str, str | None]:
        return {task: view.state for task, view in self.tasks.items()}

    def _render(self) -> None:
        now = dt.datetime.now(dt.UTC)
        reports: dict[str, dict[str, Any]] | None = None
        finished = sorted(
            (v for v in self.tasks.values() if v.state in FINISHED and v.task_id not in self.printed),
            key=lambda v: (v.end or now, v.task_id),
        )
        for view in finished:
            if view.state == "skipped":
                self.printed.add(view.task_id)  # e.g. a model not selected for this run: one line at the end
                self.skipped.append(view.task_id)
                continue
            if reports is None:
                reports = read_reports(self.lake, self.run_date)
            retry = f" (try {view.tries})" if view.tries > 1 else ""
            figure = headline(view.task_id, reports.get(view.task_id)) if view.state == "success" else ""
            self._line(f"  {view.task_id:<18} {view.state:<15} {view.elapsed(now):6.1f}s  {figure}{retry}".rstrip())
            self.printed.add(view.task_id)
        if self.live:
            running = [v for v in self.tasks.values() if v.state in ("running", "queued", "up_for_retry")]
            if running:
                self._status(running[0], now)

    def _status(self, view: TaskView, now: dt.datetime) -> None:
        text = f"  {view.task_id:<18} {view.state:<15} {view.elapsed(now):6.1f}s"
        if view.task_id.startswith("train_"):
            progress = read_progress(self.lake, self.run_date, view.task_id)
            if progress and progress.get("epochs"):
                done, total = int(progress.get("epoch", 0)), int(progress["epochs"])
                text += f"  {progress_bar(done, total)} epoch {done}/{total}"
                shown = {k: v for k, v in (progress.get("metrics") or {}).items() if k in ("loss", "val_ndcg@10")}
                text += "".join(f" {k}={v:.4f}" for k, v in shown.items() if isinstance(v, int | float))
        self.out.write("\r" + text[:119].ljust(119))
        self.out.flush()
        self._status_shown = True

    def _line(self, text: str) -> None:
        if self._status_shown:
            self.out.write("\r" + " " * 119 + "\r")
            self._status_shown = False
        self.out.write(text + "\n")
        self.out.flush()
        self.lines += 1

    def finish(self) -> None:
        self.poll()
        if self.skipped:
            self._line(f"  skipped: {', '.join(sorted(self.skipped))}")
        if self._status_shown:
            self.out.write("\r" + " " * 119 + "\r")
            self.out.flush()
            self._status_shown = False


def follow(monitor: RunMonitor, alive: Callable[[], bool], interval: float = 0.5) -> None:
    """Poll ``monitor`` while ``alive()``; a final poll after the run ends."""
    while alive():
        monitor.poll()
        time.sleep(interval)
    monitor.finish()
