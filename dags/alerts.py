"""Failure alerts of Mercato's DAGs: ``alert_on_failure`` is the ``on_failure_callback`` of every task and run.

It POSTs one JSON object to ``[alerting] webhook_url`` (``config/recsys.toml``; the environment variable
``RECSYS_ALERT_WEBHOOK_URL`` wins, so a secret URL stays out of git; empty = no alert)::

    {"text": "Mercato recsys_daily: task validate_raw failed (run date 2026-03-10): ValidationFailed: ...",
     "kind": "task" | "run", "dag_id", "task_id", "run_id", "run_date", "try_number",
     "exception": <the exception text, or for a run Airflow's reason: task_failure, timed_out>,
     "log_url": <the task's log in the Airflow UI>, "log_path": <the log file under base_log_folder>}

``text`` makes it readable as is by Slack/Teams/Mattermost incoming webhooks. The request gives up after
``[alerting] timeout_seconds`` whatever the webhook does (accepts and never answers, trickles, refuses):
an alert never hangs or fails the task it reports on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import urllib.request
from typing import Any

from core.config import load_config

#: Environment variable whose value, when set, replaces ``[alerting] webhook_url`` (keeps a secret URL out of git).
WEBHOOK_ENV = "RECSYS_ALERT_WEBHOOK_URL"
#: The longest exception text an alert carries.
ALERT_TEXT_LIMIT = 4000

log = logging.getLogger(__name__)


def post_alert(url: str, payload: dict[str, Any], timeout: float) -> bool:
    """POST ``payload`` as JSON to ``url``; give up after ``timeout`` seconds whatever the server does.

    The request runs in a daemon thread that the caller waits for at most ``timeout`` seconds, so a
    webhook that accepts the connection and never answers (or trickles bytes) cannot hold the task;
    a refused or failed request is logged. Never raises; True when the webhook answered 2xx in time.
    """
    outcome: dict[str, Any] = {}

    def send() -> None:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "mercato-alert"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                outcome["status"] = response.status
        except Exception as exc:  # the alert must never fail the callback
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    sender = threading.Thread(target=send, name="mercato-alert", daemon=True)
    sender.start()
    sender.join(timeout)
    if sender.is_alive():
        log.warning("alert webhook gave no answer within %.1fs; alert dropped", timeout)
        return False
    if "error" in outcome:
        log.warning("alert webhook failed: %s", outcome["error"])
        return False
    if not 200 <= outcome.get("status", 0) < 300:
        log.warning("alert webhook answered %s", outcome.get("status"))
        return False
    return True


def _context_run_date(context: Any) -> str | None:
    params = context.get("params") or {}
    if params.get("run_date"):
        return str(params["run_date"])
    anchor = context.get("logical_date") or context.get("data_interval_end")
    return (anchor - dt.timedelta(days=1)).date().isoformat() if anchor else None


def _log_location(ti: Any, dag_id: str, run_id: str | None) -> tuple[str | None, str | None]:
    """The task's log in the UI (``ti.log_url``) and on disk (Airflow's log filename template)."""
    from airflow.configuration import conf

    folder = conf.get("logging", "base_log_folder", fallback="")
    if ti is None:
        return None, os.path.join(folder, f"dag_id={dag_id}", f"run_id={run_id}") if folder else None
    try:
        url = ti.log_url
    except Exception:
        url = None
    try:
        import jinja2

        template = conf.get("logging", "log_filename_template")
        path = os.path.join(folder, jinja2.Template(template).render(ti=ti, try_number=ti.try_number))
    except Exception:
        path = os.path.join(folder, f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={ti.task_id}") if folder else None
    return url, path


def alert_payload(context: Any) -> dict[str, Any]:
    """What an alert says: kind (``task`` | ``run``), DAG, task (for a run: the task it failed at, if any),
    run, run date, exception (for a run: Airflow's reason, e.g. ``task_failure``, ``timed_out``), log URL and path."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_obj = context.get("dag")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(dag_obj, "dag_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or context.get("run_id")
    task_id = getattr(ti, "task_id", None)
    exception = context.get("exception")
    kind = "task" if exception is not None or "reason" not in context else "run"
    error = str(exception) if exception is not None else str(context.get("reason") or "the run failed")
    if exception is not None and type(exception).__name__ not in error:
        error = f"{type(exception).__name__}: {error}"
    log_url, log_path = _log_location(ti, dag_id, run_id)
    run_date = _context_run_date(context)
    if kind == "task":
        what = f"task {task_id} failed"
    else:
        what = "run failed" + (f" at task {task_id}" if task_id else "")
    headline = error.strip().splitlines()[0] if error.strip() else "failed"
    return {
        "text": f"Mercato {dag_id}: {what} (run date {run_date}): {headline}",
        "kind": kind,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "run_date": run_date,
        "try_number": getattr(ti, "try_number", None),
        "exception": error[:ALERT_TEXT_LIMIT],
        "log_url": log_url,
        "log_path": log_path,
    }


def alert_on_failure(context: Any) -> None:
    """``on_failure_callback`` of every task and of the run: send :func:`alert_payload` to the webhook, if any."""
    alerting = load_config().alerting
    url = os.environ.get(WEBHOOK_ENV) or alerting.webhook_url
    if not url:
        return
    try:
        payload = alert_payload(context)
    except Exception as exc:  # an alert about a failure must not itself fail
        payload = {"text": f"Mercato: a failure, and its alert could not be built ({exc})"}
    post_alert(url, payload, alerting.timeout_seconds)
