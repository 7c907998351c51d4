"""Online experiments from the command line, and the promotion of an experiment's winner.

```
python -m training.experiment start --name N --control MODEL:VERSION --treatment MODEL:VERSION [--treatment ...]
                                    [--shares 0.5,0.5] [--salt S] [--type ab|interleaving]
python -m training.experiment status
python -m training.experiment stop [--reason TEXT]
```

``start`` writes ``experiment.json`` beside ``champion.json`` in the serving registry
(``core.registry.ServingRegistry.write_experiment``: every arm pinned to its published version's
checksum, the document checksummed); every API replica picks it up on its next poll. It refuses a
treatment that did not pass the offline gates: the treatment must be a published registry version
whose manifest metrics beat popularity's on the promotion metric (``[promotion] metric``; the
guardrail of ``training.promote.decide``). Popularity's value is the one recorded in the treatment's
manifest at promotion (``offline_gate``), else that of a popularity version published for the same run
date. ``stop`` ends the experiment (the champion serves everyone again; the document stays, marked
``stopped``).

:func:`promote_winner` is the seam for concluding an experiment (the experiment report calls it
with the winning variant): it moves ``champion.json`` and then the MLflow alias ``champion`` to the
winner's version — the same order and retries as the daily promotion — and marks the experiment concluded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.config import Config, PromotionConfig, load_config
from core.experiments import (
    AB,
    CONCLUDED,
    EXPERIMENT_TYPES,
    RUNNING,
    STOPPED,
    ExperimentError,
    new_document,
    parse_model_ref,
)
from core.registry import RegistryError, ServingRegistry, publish_candidate
from core.settings import Settings, get_settings
from training.promote import POPULARITY, decide, with_retries

#: Manifest key where promotion records the offline gate a version passed.
OFFLINE_GATE = "offline_gate"


class ExperimentRefused(RuntimeError):
    """The experiment cannot be started, stopped or concluded; the message says exactly why."""


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---- the offline gate ---------------------------------------------------------------------------
def popularity_baseline(
    registry: ServingRegistry, manifest: Mapping[str, Any], metric: str
) -> tuple[float | None, str]:
    """Popularity's ``metric`` on the data ``manifest``'s version was evaluated on, and where it comes from.

    First the value promotion recorded in the manifest (``offline_gate``); else the metrics of the
    newest popularity version published for the same run date (and data window).
    """
    gate = manifest.get(OFFLINE_GATE) or {}
    if gate.get("metric") == metric and _finite(gate.get("popularity")) is not None:
        return _finite(gate.get("popularity")), f"recorded at promotion on {manifest.get('run_date')}"
    run_date, window = manifest.get("run_date"), manifest.get("data_window")
    if run_date is None:
        return None, "the manifest has no run_date to find popularity's result by"
    for version in reversed(registry.versions(POPULARITY)):
        other = registry.manifest(POPULARITY, version)
        if other.get("run_date") == run_date and other.get("data_window") == window:
            value = _finite((other.get("metrics") or {}).get(metric))
            if value is not None:
                return value, f"{POPULARITY}/{version}, published for run date {run_date}"
    return None, f"no popularity version published for run date {run_date}"


def offline_gate(registry: ServingRegistry, model_name: str, version: str, rules: PromotionConfig) -> str | None:
    """``None`` when ``model_name``/``version`` passed the offline gates, else exactly why not.

    Passing = a complete published version with a finite ``rules.metric`` in its manifest that beats
    popularity's (``training.promote.decide``'s guardrail; popularity itself, or
    ``must_beat_popularity = false``, needs only the finite metric).
    """
    ref = f"{model_name}/{version}"
    try:
        manifest = registry.complete_manifest(model_name, version, "using it as a treatment")
    except RegistryError as exc:
        return f"treatment {ref} is not a published registry version: {exc}"
    metric = rules.metric
    metrics = manifest.get("metrics") or {}
    value = _finite(metrics.get(metric))
    if value is None:
        return (
            f"treatment {ref} was not evaluated offline on the promotion metric: its manifest has no finite "
            f"{metric!r} (it has {sorted(metrics)}); train and evaluate it through the pipeline"
        )
    baseline, source = popularity_baseline(registry, manifest, metric)
    if baseline is None and rules.must_beat_popularity and model_name != POPULARITY:
        return (
            f"treatment {ref} cannot be checked against popularity on {metric}: {source}; publish it through the "
            "daily promotion (which records the baseline) or publish popularity for that run date"
        )
    winner, _, _ = decide({model_name: value}, baseline, None, 0.0, rules.must_beat_popularity)
    if winner is None:
        return (
            f"treatment {ref} did not pass the offline gate: {metric} {value:.6f} does not beat popularity's "
            f"{baseline:.6f} ({source}); [promotion] must_beat_popularity refuses it"
        )
    return None


# ---- start / stop / status ----------------------------------------------------------------------
def start_experiment(
    name: str,
    control: tuple[str, str],
    treatments: Sequence[tuple[str, str]],
    shares: Sequence[float] | None = None,
    salt: str | None = None,
    kind: str = AB,
    settings: Settings | None = None,
    cfg: Config | None = None,
    registry: ServingRegistry | None = None,
    origin: str | None = None,
    started_at: str | None = None,
) -> dict[str, Any]:
    """Write a running experiment to the serving registry; returns the document written.

    ``started_at`` (ISO-8601 UTC) is when the experiment's clock starts: now by default; a simulation that
    replays past days (``bench.online_ab``) starts it at its first simulated day, so that the report's
    pre-period (CUPED) ends where the simulated experiment begins.

    Refused (``ExperimentRefused``, saying why) while another experiment runs, when a treatment did
    not pass the offline gates (:func:`offline_gate`), or when the document is invalid.
    """
    registry = registry or ServingRegistry.from_settings(settings)
    rules = (cfg or load_config()).promotion
    try:
        current = registry.experiment()
    except RegistryError as exc:
        raise ExperimentRefused(f"the registry's experiment.json is unreadable ({exc}); stop or fix it first") from None
    if current is not None and current["status"] == RUNNING:
        raise ExperimentRefused(
            f"experiment {current['name']!r} is running; stop it first (python -m training.experiment stop)"
        )
    try:
        doc = new_document(
            name, control, treatments, shares, salt, kind, started_at=started_at or _utcnow(), origin=origin
        )
    except ExperimentError as exc:
        raise ExperimentRefused(str(exc)) from None
    reasons = [why for model, version in treatments if (why := offline_gate(registry, model, version, rules))]
    if reasons:
        raise ExperimentRefused("; ".join(reasons))
    try:
        return registry.write_experiment(doc)
    except RegistryError as exc:
        raise ExperimentRefused(str(exc)) from None


def stop_experiment(
    reason: str | None = None, settings: Settings | None = None, registry: ServingRegistry | None = None
) -> dict[str, Any]:
    """Mark the running experiment ``stopped`` (the champion serves everyone again); returns the document."""
    registry = registry or ServingRegistry.from_settings(settings)
    doc = registry.experiment()
    if doc is None or doc["status"] != RUNNING:
        state = "no experiment.json" if doc is None else f"experiment {doc['name']!r} is already {doc['status']}"
        raise ExperimentRefused(f"nothing to stop: {state}")
    return registry.write_experiment({**doc, "status": STOPPED, "ended_at": _utcnow(), "reason": reason})


def promote_winner(
    variant: str,
    reason: str | None = None,
    settings: Settings | None = None,
    registry: ServingRegistry | None = None,
    cfg: Config | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Conclude the experiment in favour of ``variant``: move the MLflow alias ``champion`` and
    ``champion.json`` together to its version, then mark the experiment ``concluded``.

    The arm must name its MLflow registered version (``mlflow_model_version`` in its manifest, as the
    pipeline publishes it). ``champion.json`` moves first (``[promotion] publish_attempts`` tries with
    backoff, ``training.promote.with_retries``); when it cannot be written nothing else moved and the
    error is raised. Then the alias moves (same retries); if it cannot, ``champion.json`` is put back on
    the version it named, so the two never disagree. Returns what changed.
    """
    from training import tracking

    settings = settings or get_settings()
    registry = registry or ServingRegistry.from_settings(settings)
    doc = registry.experiment()
    if doc is None:
        raise ExperimentRefused("no experiment.json in the serving registry: nothing to conclude")
    if doc["status"] == CONCLUDED:
        raise ExperimentRefused(f"experiment {doc['name']!r} is already concluded (winner {doc['winner']!r})")
    arms = {arm["variant"]: arm for arm in doc["arms"]}
    if variant not in arms:
        raise ExperimentRefused(f"variant {variant!r} is not an arm of {doc['name']!r}: {sorted(arms)}")
    arm = arms[variant]
    manifest = registry.complete_manifest(arm["model_name"], arm["version"], "promoting it")
    if manifest["checksum"] != arm["checksum"]:
        raise ExperimentRefused(
            f"{arm['model_name']}/{arm['version']} changed since the experiment started (checksum "
            f"{manifest['checksum']}, experiment {arm['checksum']}); not promoted"
        )
    mlflow_version = manifest.get("mlflow_model_version")
    if not mlflow_version:
        raise ExperimentRefused(
            f"{arm['model_name']}/{arm['version']} names no MLflow registered version (mlflow_model_version); "
            "the MLflow alias cannot move with champion.json"
        )
    rules = (cfg or load_config()).promotion

    def retried(action: Any, what: str) -> Any:
        return with_retries(action, what, rules.publish_attempts, rules.publish_backoff_seconds, sleep)

    tracking.configure(settings)
    previous = tracking.champion_version(settings)
    before = registry.champion()
    ref = f"{arm['model_name']}/{arm['version']}"
    pointer = retried(
        lambda: registry.set_champion(arm["model_name"], arm["version"]), f"pointing champion.json at {ref}"
    )
    try:
        retried(
            lambda: tracking.set_champion(settings, str(mlflow_version)),
            f"moving the MLflow alias to v{mlflow_version}",
        )
    except BaseException:
        if before is not None:
            registry.set_champion(before["model_name"], before["version"], force=True, reason="alias move failed")
        raise
    concluded = registry.write_experiment(
        {**doc, "status": CONCLUDED, "winner": variant, "ended_at": _utcnow(), "reason": reason}
    )
    return {
        "experiment": doc["name"],
        "winner": variant,
        "model_name": arm["model_name"],
        "version": arm["version"],
        "mlflow_model_version": str(mlflow_version),
        "previous_mlflow_champion": None if previous is None else str(previous.version),
        "champion": pointer,
        "document": concluded,
    }


# ---- canary (the daily promotion's) -------------------------------------------------------------
def start_canary(
    candidate: Mapping[str, Any],
    share: float,
    popularity: float | None,
    run_date: str,
    settings: Settings | None = None,
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Publish a promotion winner (not as champion) with its offline gate recorded, and start it as the
    treatment at ``share`` of the traffic against the serving champion. Returns the experiment document.

    Refused (``ExperimentRefused``) when the serving registry has no champion or an experiment runs.
    """
    cfg = cfg or load_config()
    settings = settings or get_settings()
    registry = ServingRegistry.from_settings(settings)
    champion = registry.champion()
    if champion is None:
        raise ExperimentRefused("the serving registry has no champion to run a canary against")
    metric = cfg.promotion.metric
    gate = {
        "metric": metric,
        "value": _finite((candidate.get("metrics") or {}).get(metric)),
        "popularity": popularity,
        "run_date": run_date,
    }
    manifest = publish_candidate(candidate, settings, {OFFLINE_GATE: gate}, registry)
    name = f"canary-{run_date}-{manifest['model_name']}-v{manifest['version']}"
    return start_experiment(
        name,
        (str(champion["model_name"]), str(champion["version"])),
        [(manifest["model_name"], manifest["version"])],
        shares=[1.0 - share, share],
        cfg=cfg,
        registry=registry,
        origin=f"promotion {run_date}",
    )


# ---- CLI ----------------------------------------------------------------------------------------
def _shares(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shares {text!r}: comma-separated numbers, e.g. 0.9,0.1") from None


def _model_ref(text: str) -> tuple[str, str]:
    try:
        return parse_model_ref(text)
    except ExperimentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.experiment", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start an experiment (refuses treatments that failed the offline gates)")
    start.add_argument("--name", required=True)
    start.add_argument("--control", required=True, type=_model_ref, metavar="MODEL:VERSION")
    start.add_argument("--treatment", required=True, action="append", type=_model_ref, metavar="MODEL:VERSION")
    start.add_argument("--shares", type=_shares, default=None, help="control first; default equal shares")
    start.add_argument("--salt", default=None, help="default: random (a new experiment reshuffles users)")
    start.add_argument("--type", choices=EXPERIMENT_TYPES, default=AB, dest="kind")
    sub.add_parser("status", help="print the experiment document")
    stop = sub.add_parser("stop", help="stop the running experiment (the champion serves everyone)")
    stop.add_argument("--reason", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 0, or 2 with the reason on stderr when refused."""
    args = parser().parse_args(argv)
    try:
        if args.command == "start":
            doc: dict[str, Any] | None = start_experiment(
                args.name, args.control, args.treatment, args.shares, args.salt, args.kind
            )
        elif args.command == "stop":
            doc = stop_experiment(args.reason)
        else:
            doc = ServingRegistry.from_settings(get_settings()).experiment()
    except (ExperimentRefused, RegistryError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
