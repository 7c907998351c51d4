"""Prometheus metrics of one API instance (its own registry, so several apps can live in one process).

Counted on the request path: latency per route template, micro-batch sizes, fallback answers, events accepted and
rejected (by the field that failed), state errors, recommendation requests per experiment and variant
(``none`` outside any experiment), and events attributed to an experiment request (per experiment,
variant and event type: a ``click`` there is an attributed click). Read at scrape time from the live
objects: the serving model (``mercato_model_info``), swaps and refused swaps, the running experiment
(``mercato_experiment_info``) and its refusals, state size, landing and exposure-log counters.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

#: Latency buckets in seconds: the API answers in milliseconds, so resolve 0.5 ms .. 2.5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
log = logging.getLogger(__name__)


#: How a value of several workers' snapshots adds up (``RECSYS_WORKERS`` > 1): counters and queue
#: depths are summed, the rest take the largest (state size is shared; age and degraded: the worst).
SUMMED = frozenset(
    {
        "swaps",
        "refused",
        "polls",
        "poll_errors",
        "landing_written",
        "landing_pending",
        "landing_errors",
        "landing_recovered",
        "wal_commits",
        "wal_entries",
        "score_queue",
        "experiment_swaps",
        "experiment_refused",
        "exposures_written",
        "exposures_pending",
        "exposures_dropped",
        "exposures_errors",
    }
)


def combine(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot from every worker's: counters and queue depths summed, the others' largest value,
    ``models`` the distinct serving models, ``degraded`` the union of components."""
    if len(snapshots) == 1:
        only = dict(snapshots[0])
        only["models"] = [only["model"]] if only.get("model") else []
        return only
    out: dict[str, Any] = {"workers": len(snapshots)}
    models: list[dict[str, Any]] = []
    degraded: dict[str, int] = {}
    for snap in snapshots:
        if snap.get("model") and snap["model"] not in models:
            models.append(snap["model"])
        for component, value in (snap.get("degraded") or {}).items():
            degraded[component] = max(degraded.get(component, 0), int(value))
        for key, value in snap.items():
            if key in ("model", "degraded", "experiment") or value is None or isinstance(value, dict | list | str):
                continue
            out[key] = out.get(key, 0) + value if key in SUMMED else max(out.get(key, value), value)
        if "experiment" in snap and (snap["experiment"] or "experiment" not in out):
            out["experiment"] = snap["experiment"]
    out["models"] = models
    out["model"] = models[0] if models else None
    out["degraded"] = degraded
    return out


class _LiveCollector(Collector):
    """Scrape-time values from the live objects (of every worker: ``snapshots`` returns one per worker)."""

    def __init__(self, snapshots: Callable[[], list[dict[str, Any]]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Any]:
        snap = combine(self.snapshots())
        info = InfoMetricFamily("mercato_model", "The model being served (absent before the first load).")
        for model in snap.get("models", []):
            info.add_metric([], {k: str(v) for k, v in model.items()})
        yield info
        yield GaugeMetricFamily(
            "mercato_model_loaded", "1 when a model is serving.", value=1 if snap.get("model") else 0
        )
        if snap.get("model_age_seconds") is not None:
            yield GaugeMetricFamily(
                "mercato_model_age_seconds",
                "Seconds since the serving model was published to the registry (the oldest across workers).",
                value=snap["model_age_seconds"],
            )
        if snap.get("model_data_age_seconds") is not None:
            yield GaugeMetricFamily(
                "mercato_model_data_age_seconds",
                "Seconds since the end of the serving model's training data window.",
                value=snap["model_data_age_seconds"],
            )
        yield CounterMetricFamily("mercato_model_swaps", "Models swapped in.", value=snap.get("swaps", 0))
        yield CounterMetricFamily(
            "mercato_model_refused_swaps", "Champions refused (bad checksum, unloadable).", value=snap.get("refused", 0)
        )
        yield CounterMetricFamily("mercato_registry_polls", "Champion pointer polls.", value=snap.get("polls", 0))
        yield CounterMetricFamily(
            "mercato_registry_poll_errors",
            "Champion polls that could not reach the registry (retried with backoff).",
            value=snap.get("poll_errors", 0),
        )
        degraded = GaugeMetricFamily(
            "mercato_degraded",
            "1 while a component fails and the API answers without it (state, landing, registry).",
            labels=["component"],
        )
        for component, value in sorted((snap.get("degraded") or {}).items()):
            degraded.add_metric([component], value)
        yield degraded
        yield GaugeMetricFamily(
            "mercato_score_queue_depth",
            "Recommendation requests waiting for the micro-batcher.",
            value=snap.get("score_queue", 0),
        )
        size = snap.get("state_users")
        if size is not None:
            yield GaugeMetricFamily("mercato_state_users", "Users held in the real-time state.", value=size)
        yield CounterMetricFamily(
            "mercato_landing_events_written",
            "Events written to the landing zone.",
            value=snap.get("landing_written", 0),
        )
        yield GaugeMetricFamily(
            "mercato_landing_events_pending",
            "Accepted events not yet in the landing zone (in the write-ahead log).",
            value=snap.get("landing_pending", 0),
        )
        yield CounterMetricFamily(
            "mercato_landing_write_errors", "Failed landing flushes (events kept).", value=snap.get("landing_errors", 0)
        )
        yield CounterMetricFamily(
            "mercato_landing_events_recovered",
            "Events replayed from the write-ahead log into the landing zone after a crash.",
            value=snap.get("landing_recovered", 0),
        )
        if "wal_commits" in snap:
            yield CounterMetricFamily(
                "mercato_wal_commits", "Write-ahead log syncs (group commits).", value=snap["wal_commits"]
            )
            yield CounterMetricFamily(
                "mercato_wal_entries", "Write-ahead log appends (one per accepted batch).", value=snap["wal_entries"]
            )
        if "experiment" in snap:
            running = InfoMetricFamily("mercato_experiment", "The running experiment (absent when none runs).")
            experiment = snap["experiment"]
            if experiment:
                arms = ",".join(f"{arm['variant']}={arm['model']}@{arm['share']:g}" for arm in experiment["arms"])
                running.add_metric(
                    [],
                    {
                        "name": experiment["name"],
                        "type": experiment["type"],
                        "checksum": experiment["checksum"],
                        "arms": arms,
                    },
                )
            yield running
            yield CounterMetricFamily(
                "mercato_experiment_swaps", "Experiments swapped in.", value=snap.get("experiment_swaps", 0)
            )
            yield CounterMetricFamily(
                "mercato_experiment_refused",
                "Experiment documents refused (bad checksum, an arm that will not load).",
                value=snap.get("experiment_refused", 0),
            )
        if "exposures_written" in snap:
            yield CounterMetricFamily(
                "mercato_exposures_written",
                "Exposure records written to the landing zone.",
                value=snap["exposures_written"],
            )
            yield GaugeMetricFamily(
                "mercato_exposures_pending", "Exposure records not yet flushed.", value=snap.get("exposures_pending", 0)
            )
            yield CounterMetricFamily(
                "mercato_exposures_dropped",
                "Exposure records dropped because exposure_max_pending were waiting.",
                value=snap.get("exposures_dropped", 0),
            )
            yield CounterMetricFamily(
                "mercato_exposure_write_errors",
                "Failed exposure flushes (records kept).",
                value=snap.get("exposures_errors", 0),
            )


class ApiMetrics:
    """Counters and histograms updated by the routes, plus the scrape-time collector.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (``python -m serving`` sets it when ``RECSYS_WORKERS`` > 1,
    before prometheus_client is imported), counters and histograms are shared through that folder
    (prometheus_client's multiprocess mode) and every worker writes its live snapshot there once a
    second: whichever worker answers ``/metrics`` reports all of them (:meth:`exposition`).
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "mercato_request_seconds",
            "Request latency by route template, method and status class.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "mercato_fallback", "Answers served from the popularity fallback.", ["route"], registry=self.registry
        )
        self.events_accepted = Counter("mercato_events_accepted", "Events accepted.", registry=self.registry)
        self.events_rejected = Counter(
            "mercato_events_rejected", "Events rejected, by the field that failed.", ["reason"], registry=self.registry
        )
        self.batches_rejected = Counter(
            "mercato_event_batches_rejected", "Whole batches refused, by reason.", ["reason"], registry=self.registry
        )
        self.state_errors = Counter(
            "mercato_state_errors", "Real-time state reads/writes that failed.", ["op"], registry=self.registry
        )
        self.batch_size = Histogram(
            "mercato_score_batch_size",
            "Recommendation requests scored together by the micro-batcher.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.experiment_requests = Counter(
            "mercato_experiment_requests",
            "Recommendation requests answered, by experiment and variant ('none' outside any experiment) and route.",
            ["experiment", "variant", "route"],
            registry=self.registry,
        )
        self.attributed_events = Counter(
            "mercato_attributed_events",
            "Events carrying the request_id of an experiment request, by experiment, variant (interleaving: the "
            "clicked position's team) and event type.",
            ["experiment", "variant", "event_type"],
            registry=self.registry,
        )
        self.unattributed_events = Counter(
            "mercato_unattributed_events",
            "Events carrying a request_id this API does not remember (no experiment, expired, or unknown).",
            ["event_type"],
            registry=self.registry,
        )
        self.model_errors = Counter(
            "mercato_model_errors",
            "Batches whose model raised while scoring (answered from the popularity fallback instead).",
            ["model"],
            registry=self.registry,
        )
        self.shed = Counter(
            "mercato_shed",
            "Recommendation requests refused with 503 by load shedding (queue_full, deadline).",
            ["reason"],
            registry=self.registry,
        )
        self.event_duplicates = Counter(
            "mercato_event_duplicates",
            "Events whose event_id was accepted before with the same payload (acknowledged, not landed again).",
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "mercato_idempotent_replays",
            "POST /v1/events retried with an Idempotency-Key already answered (the stored answer was replayed).",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "mercato_auth_failures",
            "Requests refused by authentication (401) or scope (403).",
            ["status"],
            registry=self.registry,
        )
        self.users_erased = Counter(
            "mercato_users_erased", "DELETE /v1/users/{id} requests carried out.", registry=self.registry
        )
        self.registry.register(_LiveCollector(self.snapshots))
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- several workers ----------------------------------------------------------------------
    def snapshots(self) -> list[dict[str, Any]]:
        """This worker's live snapshot, plus (multiprocess) every other live worker's latest one."""
        mine = self.snapshot()
        if self.multiproc_dir is None:
            return [mine]
        out = [mine]
        for path in Path(self.multiproc_dir).glob("live-*.json"):
            pid = int(path.stem.removeprefix("live-"))
            if pid == os.getpid() or not _alive(pid):
                continue
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def start(self, every_seconds: float = 1.0) -> None:
        """Multiprocess mode: write this worker's snapshot to the shared folder every ``every_seconds``."""
        if self.multiproc_dir is None or (self._sampler is not None and self._sampler.is_alive()):
            return
        self._stop.clear()
        self._sampler = threading.Thread(
            target=self._sample, args=(every_seconds,), name="metrics-sampler", daemon=True
        )
        self._sampler.start()

    def _sample(self, every: float) -> None:
        path = Path(self.multiproc_dir or ".") / f"live-{os.getpid()}.json"
        while True:
            try:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(json.dumps(self.snapshot(), default=str))
                os.replace(tmp, path)
            except Exception as exc:  # a scrape without this worker's live values, never a dead thread
                log.debug("metrics snapshot not written: %s", exc)
            if self._stop.wait(every):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
            self._sampler = None
        if self.multiproc_dir is not None:
            (Path(self.multiproc_dir) / f"live-{os.getpid()}.json").unlink(missing_ok=True)

    def exposition(self) -> bytes:
        """The ``/metrics`` body: this app's registry, or (multiprocess) every worker's metrics combined."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiproc_dir)
        combined.register(_LiveCollector(self.snapshots))
        return generate_latest(combined)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
