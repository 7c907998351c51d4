"""Prometheus metrics of one API instance (its own registry, so several apps can live in one process).

Counted on the request path: latency per route template, micro-batch sizes, fallback answers, events accepted and
rejected (by the field that failed), state errors, recommendation requests per experiment and variant
(``none`` outside any experiment), and events attributed to an experiment request (per experiment,
variant and event type: a ``click`` there is an attributed click). Read at scrape time from the live
objects: the serving model (``mercato_model_info``), swaps and refused swaps, the running experiment
(``mercato_experiment_info``) and its refusals, state size, landing and exposure-log counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

#: Latency buckets in seconds: the API answers in milliseconds, so resolve 0.5 ms .. 2.5 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _LiveCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        info = InfoMetricFamily("mercato_model", "The model being served (absent before the first load).")
        if snap.get("model"):
            info.add_metric([], {k: str(v) for k, v in snap["model"].items()})
        yield info
        yield GaugeMetricFamily(
            "mercato_model_loaded", "1 when a model is serving.", value=1 if snap.get("model") else 0
        )
        yield CounterMetricFamily("mercato_model_swaps", "Models swapped in.", value=snap.get("swaps", 0))
        yield CounterMetricFamily(
            "mercato_model_refused_swaps", "Champions refused (bad checksum, unloadable).", value=snap.get("refused", 0)
        )
        yield CounterMetricFamily("mercato_registry_polls", "Champion pointer polls.", value=snap.get("polls", 0))
        size = snap.get("state_users")
        if size is not None:
            yield GaugeMetricFamily("mercato_state_users", "Users held in the real-time state.", value=size)
        yield CounterMetricFamily(
            "mercato_landing_events_written",
            "Events written to the landing zone.",
            value=snap.get("landing_written", 0),
        )
        yield GaugeMetricFamily(
            "mercato_landing_events_pending", "Accepted events not yet flushed.", value=snap.get("landing_pending", 0)
        )
        yield CounterMetricFamily(
            "mercato_landing_write_errors", "Failed landing flushes (events kept).", value=snap.get("landing_errors", 0)
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
    """Counters and histograms updated by the routes, plus the scrape-time collector."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
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
        self.registry.register(_LiveCollector(snapshot))
