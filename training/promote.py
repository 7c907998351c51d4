"""Promotion: compare today's candidates with the current champion on the same test split, move the
MLflow alias ``champion`` when a candidate wins, and publish the winner to the serving registry.

Rules (``[promotion]`` in config/recsys.toml): the primary ``metric`` decides; a candidate other than
popularity must beat popularity on it (guardrail, when ``must_beat_popularity``), and must beat the
champion by the relative ``margin``. The champion is re-evaluated on today's split: yesterday's numbers
were measured on other data and are not comparable.

Order (issue 11): the winner is published to the serving registry first (``champion.json``), then the
MLflow alias moves. A publish that fails is retried ``[promotion] publish_attempts`` times with
exponential backoff, then raises :class:`PublishFailed` with ``champion.json`` and the alias as they
were (the Airflow task's own retries run the whole step again). Content errors (``RegistryError``: a
version re-published with other bytes, a lost compare-and-swap) are not retried. A champion trained on
newer data (``data_window.end``) than the winner is never replaced by it (a backfill) unless forced
(``[promotion] force`` or ``force=True``); the decision's reason says so.

Canary (``[promotion] canary_share`` > 0, with a serving champion in place): a winner does not take all
the traffic at once. It is published as a registry version (its offline gate recorded in the manifest)
and started as the treatment of an experiment at ``canary_share`` against the serving champion
(``training.experiment.start_canary``); the MLflow alias and ``champion.json`` stay until the
experiment is concluded (``training.experiment.promote_winner``, which the experiment report calls).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.config import Config, load_config
from core.settings import Settings, get_settings
from evaluation.data import TrainData
from evaluation.evaluate import evaluate
from models.base import Recommender
from models.popularity import PopularityRecommender
from training import tracking

POPULARITY = "popularity"
log = logging.getLogger(__name__)


class PublishFailed(RuntimeError):
    """Publishing (or moving the alias after it) failed after every attempt; nothing else moved."""


def with_retries(
    action: Callable[[], Any],
    what: str,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """``action()``, tried up to ``attempts`` times, waiting ``backoff_seconds · 2^n`` after the n-th failure.

    A ``RegistryError`` (bad content, a lost compare-and-swap, a refused backfill) is raised at once:
    trying again cannot help. The last failure raises :class:`PublishFailed` naming ``what``.
    """
    from core.registry import RegistryError

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except RegistryError:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise PublishFailed(f"{what} failed {attempts} time(s), last: {exc!r}") from exc
            wait = backoff_seconds * 2 ** (attempt - 1)
            log.warning("%s failed (attempt %d/%d): %r; retrying in %.1fs", what, attempt, attempts, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def window_end(window: Mapping[str, Any] | None) -> dt.date | None:
    """The last day of a ``data_window`` ({start, end}: dates or ISO timestamps), or None."""
    end = (window or {}).get("end")
    if not end:
        return None
    try:
        return dt.date.fromisoformat(str(end)[:10])
    except ValueError:
        return None


def newer_champion(candidate: Mapping[str, Any], champion_window: Mapping[str, Any] | None) -> str | None:
    """Why ``candidate`` must not replace a champion trained on ``champion_window`` (newer data), or None."""
    mine, theirs = window_end(candidate.get("data_window")), window_end(champion_window)
    if mine is None or theirs is None or mine >= theirs:
        return None
    return (
        f"refused: {candidate.get('model_name')} v{candidate.get('model_version')} was trained on data up to {mine}, "
        f"older than the champion's ({theirs}); a backfill never replaces a champion trained on newer data "
        "(force it with [promotion] force = true or the DAG param force)"
    )


def _value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    if not metrics:
        return None
    v = metrics.get(metric)
    return float(v) if v is not None and math.isfinite(float(v)) else None


def decide(
    candidates: Mapping[str, float | None],
    metric_of_popularity: float | None,
    champion: float | None,
    margin: float,
    must_beat_popularity: bool = True,
) -> tuple[str | None, bool, str]:
    """Pure decision: ``(winner, promote, reason)`` from each candidate's metric value.

    The winner is the best eligible candidate (ties: first in name order); eligible = popularity
    itself, or beats ``metric_of_popularity`` strictly when ``must_beat_popularity``. It is promoted
    when there is no champion or ``value > champion · (1 + margin)``.
    """
    eligible = {}
    for name, value in sorted(candidates.items()):
        if value is None:
            continue
        beaten = metric_of_popularity is not None and value <= metric_of_popularity
        if must_beat_popularity and name != POPULARITY and beaten:
            continue
        eligible[name] = value
    if not eligible:
        return None, False, "no candidate passed the guardrail (beat popularity) with a finite metric"
    winner = max(eligible, key=lambda n: eligible[n])
    value = eligible[winner]
    if champion is None:
        return winner, True, f"no champion yet; {winner} is the best eligible candidate ({value:.6f})"
    bar = champion * (1.0 + margin) if champion > 0 else 0.0
    if value > bar:
        return winner, True, f"{winner} {value:.6f} beats the champion's {champion:.6f} by more than {margin:.1%}"
    return winner, False, f"{winner} {value:.6f} does not beat the champion's {champion:.6f} by {margin:.1%}"


def _serving_has_champion(settings: Settings) -> bool:
    from core.registry import ServingRegistry

    return ServingRegistry.from_settings(settings).champion() is not None


def compare_and_promote(
    candidates: Sequence[Mapping[str, Any]],
    gold_dir: str | os.PathLike[str],
    run_date: dt.date | str,
    settings: Settings | None = None,
    cfg: Config | None = None,
    promote: bool = True,
    publish: Callable[..., Any] | None = None,
    serving_has_champion: Callable[[], bool] | None = None,
    start_canary: Callable[[Mapping[str, Any], float, float | None], Mapping[str, Any]] | None = None,
    force: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Decide whether one of ``candidates`` (``train_model`` results) becomes champion; act on it.

    ``publish(winner)`` is called, then the alias moves, only when a candidate wins and ``promote`` is set
    (see the module docstring for retries and the backfill rule; ``force`` defaults to ``[promotion]
    force`` and is passed on as ``publish(winner, force=True)``).
    When the serving registry has no champion yet (``serving_has_champion``, default: ask
    ``core.registry``), the MLflow champion — or failing that the winner — is published so that
    serving has a model. In canary mode (``[promotion] canary_share`` > 0) a winner facing a serving
    champion is instead started as an experiment's treatment by ``start_canary(winner, share,
    popularity_baseline)`` (default: ``training.experiment.start_canary``) and nothing else moves; the
    record's ``canary`` says what was started (or why not). Returns a JSON-safe decision record.
    """
    settings = settings or get_settings()
    cfg = cfg if cfg is not None else load_config()
    rules = cfg.promotion
    metric, margin = rules.metric, rules.margin
    ks = tuple(cfg.train.k)
    data = TrainData.from_gold(gold_dir, cfg)
    gold = str(Path(gold_dir))

    usable: dict[str, Mapping[str, Any]] = {}
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    for cand in candidates:
        name = str(cand.get("model_name"))
        if not cand.get("artifact_dir") or not cand.get("model_version"):
            skipped[name] = "missing artifact_dir or model_version"
            continue
        metrics = dict(cand.get("metrics") or {})
        if cand.get("gold_dir") not in (None, gold) or _value(metrics, metric) is None:
            metrics = tracking.json_safe_metrics(evaluate(Recommender.load(cand["artifact_dir"]), data, "test", ks=ks))
        usable[name] = {**cand, "metrics": metrics}
        results[name] = {"model_version": str(cand["model_version"]), "run_id": cand.get("run_id"), "metrics": metrics}

    if POPULARITY in usable:
        baseline = _value(usable[POPULARITY]["metrics"], metric)
    else:
        baseline = _value(evaluate(PopularityRecommender().fit(data), data, "test", ks=ks), metric)

    tracking.configure(settings)
    champion_record: dict[str, Any] | None = None
    champion_candidate: dict[str, Any] | None = None
    version = tracking.champion_version(settings)
    if version is not None:
        tags = version.tags or {}
        champ_dir = tracking.materialize_version(settings, version)
        champ_metrics = tracking.json_safe_metrics(evaluate(Recommender.load(champ_dir), data, "test", ks=ks))
        champion_record = {
            "model_name": tags.get("model_name"),
            "model_version": str(version.version),
            "metrics": champ_metrics,
        }
        champion_candidate = {
            "model_name": tags.get("model_name"),
            "model_version": str(version.version),
            "run_id": version.run_id,
            "metrics": champ_metrics,
            "artifact_dir": str(champ_dir),
            "run_date": tags.get("run_date"),
            "data_window": _run_window(version.run_id),
        }

    winner, wins, reason = decide(
        {n: _value(c["metrics"], metric) for n, c in usable.items()},
        baseline,
        _value(champion_record["metrics"], metric) if champion_record else None,
        margin,
        rules.must_beat_popularity,
    )
    promoted = bool(wins and promote and winner is not None)
    published: Any = None
    canary: dict[str, Any] | None = None
    run_day = run_date.isoformat() if isinstance(run_date, dt.date) else str(run_date)
    forced = rules.force if force is None else bool(force)
    refused: str | None = None
    if promoted and winner is not None and not forced:
        refused = newer_champion(usable[winner], _champion_window(settings, champion_candidate))
        if refused is not None:
            promoted = False
            reason += f"; {refused}"
    if promoted and winner is not None and rules.canary_share > 0:
        has_serving = serving_has_champion() if serving_has_champion else _serving_has_champion(settings)
        if has_serving:
            promoted = False
            canary, note = _start_canary(
                usable[winner], rules.canary_share, baseline, run_day, settings, cfg, start_canary
            )
            reason += note

    def retried(action: Callable[[], Any], what: str) -> Any:
        return with_retries(action, what, rules.publish_attempts, rules.publish_backoff_seconds, sleep)

    if promoted and winner is not None:
        chosen = usable[winner]
        if publish is not None:
            if forced:
                published = retried(lambda: publish(chosen, force=True), f"publishing {winner} (forced)")
            else:
                published = retried(lambda: publish(chosen), f"publishing {winner}")
        retried(
            lambda: tracking.set_champion(settings, str(chosen["model_version"])),
            f"moving the MLflow alias to v{chosen['model_version']} (already published: rerun promote)",
        )
    elif promote and publish is not None and refused is None:
        has_serving = serving_has_champion() if serving_has_champion else _serving_has_champion(settings)
        fallback = champion_candidate or (usable[winner] if winner else None)
        if not has_serving and fallback is not None:
            published = retried(lambda: publish(fallback), f"publishing {fallback['model_name']}")
            reason += (
                f"; serving registry had no champion, published {fallback['model_name']} v{fallback['model_version']}"
            )
    if wins and not promote:
        reason += " (promotion disabled for this run)"
    decision = {
        "run_date": run_day,
        "metric": metric,
        "margin": margin,
        "candidates": results,
        "skipped": skipped,
        "popularity_baseline": baseline,
        "champion": champion_record,
        "winner": winner,
        "winner_version": str(usable[winner]["model_version"]) if winner else None,
        "promoted": promoted,
        "published": published,
        "reason": reason,
        "forced": forced,
    }
    if refused is not None:
        decision["refused"] = refused
    if canary is not None:
        decision["canary"] = canary
    decision["comparison_run_id"] = tracking.log_comparison(decision, decision["run_date"], settings)
    return decision


def _start_canary(
    winner: Mapping[str, Any],
    share: float,
    baseline: float | None,
    run_day: str,
    settings: Settings,
    cfg: Config,
    start_canary: Callable[[Mapping[str, Any], float, float | None], Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], str]:
    """Start ``winner`` as a canary; returns the decision's ``canary`` record and the note for its reason."""
    from training.experiment import ExperimentRefused
    from training.experiment import start_canary as registry_canary

    start = start_canary or (lambda cand, sh, pop: registry_canary(cand, sh, pop, run_day, settings, cfg))
    name = f"{winner['model_name']} v{winner['model_version']}"
    try:
        doc = start(winner, share, baseline)
    except ExperimentRefused as exc:
        return {"started": False, "share": share, "refused": str(exc)}, f"; canary of {name} not started: {exc}"
    arms = {arm["variant"]: f"{arm['model_name']}/{arm['version']}" for arm in doc["arms"]}
    record = {"started": True, "share": share, "experiment": doc["name"], "arms": arms}
    return record, (
        f"; canary: {name} starts at {share:.0%} of traffic in experiment {doc['name']!r} against the serving "
        "champion (concluded by the experiment report); the champion alias did not move"
    )


def _champion_window(settings: Settings, mlflow_champion: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The data window of the serving champion (its manifest), else of the MLflow champion's run."""
    from core.registry import RegistryError, ServingRegistry

    try:
        registry = ServingRegistry.from_settings(settings)
        pointer = registry.champion()
        if pointer is not None:
            return registry.manifest(pointer["model_name"], pointer["version"]).get("data_window")
    except RegistryError:
        pass
    return None if mlflow_champion is None else mlflow_champion.get("data_window")


def _run_window(run_id: str) -> dict[str, str | None]:
    from mlflow import MlflowClient

    tags = MlflowClient().get_run(run_id).data.tags
    return {"start": tags.get("data_start"), "end": tags.get("data_end")}
