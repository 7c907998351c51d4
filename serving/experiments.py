"""The online experiment the API runs, kept in step with the registry's ``experiment.json``.

``ExperimentStore.refresh`` is one poll, like ``ModelStore.refresh`` for the champion: read the
document (checked and its checksum verified by ``core.registry``); if it names a new running
experiment, load every arm (fetched into the cache and verified against the arm's checksum, loaded,
smoke-tested; an arm that is the serving champion or an arm of the current experiment is reused, not
fetched again) and only then swap the whole experiment in. A document that cannot be read, fails its
checksum or has an arm that will not load is refused: logged, counted, remembered (not retried until
the document changes), and whatever was serving (the previous experiment, or the champion alone)
stays. A registry that cannot be reached while loading an arm is not a refusal: retried next poll.
A document that is gone, stopped or concluded ends the experiment: the champion serves
everyone again.

Assignment is ``core.experiments.assign``: a pure function of the salt and the unit, so every worker
and replica puts a user in the same arm without sharing anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.experiments import INTERLEAVING, RUNNING, assign
from core.registry import RegistryError, ServingRegistry
from serving.store import LoadedModel, load_version, prune_cache, transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveArm:
    """One arm, loaded: its variant name, traffic share and model."""

    variant: str
    share: float
    loaded: LoadedModel


@dataclass(frozen=True)
class LiveExperiment:
    """A running experiment with every arm loaded and verified."""

    name: str
    kind: str
    salt: str
    arms: tuple[LiveArm, ...]
    checksum: str
    document: dict[str, Any]

    @property
    def interleaving(self) -> bool:
        return self.kind == INTERLEAVING

    def arm_for(self, unit: str) -> LiveArm:
        """The arm ``unit`` (user id, session id or request id) is assigned to: sticky everywhere."""
        return self.arms[assign(self.salt, unit, [arm.share for arm in self.arms])]


def _arm_key(name: str, version: str, checksum: str) -> tuple[str, str, str]:
    return (str(name), str(version), str(checksum))


@dataclass
class ExperimentStatus:
    polls: int = 0
    swaps: int = 0
    ended: int = 0
    refused: int = 0
    poll_errors: int = 0
    last_error: str | None = None
    refused_documents: dict[str, str] = field(default_factory=dict)


class ExperimentStore:
    """Polls ``experiment.json``, loads and verifies every arm, swaps the running experiment atomically."""

    def __init__(
        self,
        registry: ServingRegistry,
        cache_dir: str | Path,
        poll_seconds: float,
        scorer_options: dict[str, Any] | None = None,
        champion: Callable[[], LoadedModel | None] | None = None,
    ) -> None:
        self.registry = registry
        self.cache_dir = Path(cache_dir)
        self.poll_seconds = poll_seconds
        self.scorer_options = dict(scorer_options or {})
        self.champion = champion or (lambda: None)
        self.status = ExperimentStatus()
        self._current: LiveExperiment | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LiveExperiment | None:
        """The running experiment (read once per request), or ``None``: the champion serves everyone."""
        return self._current

    def refresh(self) -> bool:
        """One poll of ``experiment.json``; True when what is served changed (an experiment swapped in or ended)."""
        with self._refresh_lock:
            self.status.polls += 1
            try:
                doc = self.registry.experiment()
            except RegistryError as exc:
                self._refuse(f"unreadable:{exc}", f"refused {self.registry.uri}/experiment.json: {exc}")
                return False
            except Exception as exc:
                self.status.poll_errors += 1
                self._note_error(f"cannot read the experiment from {self.registry.uri}: {exc}")
                return False
            if doc is None or doc["status"] != RUNNING:
                return self._end(doc)
            key = str(doc["checksum"])
            current = self._current
            if current is not None and current.checksum == key:
                return False
            if key in self.status.refused_documents:
                return False
            try:
                live = self._load(doc)
            except Exception as exc:
                if transient(exc):  # the registry or the disk, not the experiment: try again next poll
                    self.status.poll_errors += 1
                    self._note_error(f"could not load experiment {doc['name']!r} ({key[:16]}): {exc}; retrying")
                    return False
                self._refuse(key, f"refused experiment {doc['name']!r} ({key[:16]}): {exc}")
                return False
            self._current = live
            self.status.swaps += 1
            self.status.last_error = None
            log.info(
                "experiment %r (%s) running: %s; replacing %s",
                live.name,
                live.kind,
                ", ".join(f"{a.variant}={a.loaded.name}/{a.loaded.version}@{a.share:g}" for a in live.arms),
                repr(current.name) if current else "no experiment",
            )
            self._prune_cache()
            return True

    def _end(self, doc: dict[str, Any] | None) -> bool:
        current = self._current
        if current is None:
            return False
        self._current = None
        self.status.ended += 1
        why = "removed" if doc is None else f"{doc['status']} (winner {doc.get('winner')})"
        log.info("experiment %r %s: the champion serves everyone", current.name, why)
        self._prune_cache()
        return True

    def _load(self, doc: dict[str, Any]) -> LiveExperiment:
        reuse: dict[tuple[str, str, str], LoadedModel] = {}
        champion = self.champion()
        if champion is not None:
            reuse[_arm_key(champion.name, champion.version, champion.checksum)] = champion
        if self._current is not None:
            for arm in self._current.arms:
                reuse[_arm_key(arm.loaded.name, arm.loaded.version, arm.loaded.checksum)] = arm.loaded
        arms = []
        for arm in doc["arms"]:
            key = _arm_key(arm["model_name"], arm["version"], arm["checksum"])
            loaded = reuse.get(key)
            if loaded is None:
                try:
                    loaded = load_version(self.registry, self.cache_dir, arm, self.scorer_options)
                except Exception as exc:
                    if transient(exc):
                        raise
                    raise RuntimeError(f"arm {arm['variant']!r} ({arm['model_name']}/{arm['version']}): {exc}") from exc
                reuse[key] = loaded
            arms.append(LiveArm(arm["variant"], float(arm["share"]), loaded))
        return LiveExperiment(doc["name"], doc["type"], doc["salt"], tuple(arms), str(doc["checksum"]), dict(doc))

    def _refuse(self, key: str, reason: str) -> None:
        if key not in self.status.refused_documents:
            self.status.refused += 1
            self.status.refused_documents[key] = reason
        self._note_error(reason)

    def _note_error(self, message: str) -> None:
        if message != self.status.last_error:
            current = self._current
            keeping = f"experiment {current.name!r}" if current else "the champion alone"
            log.warning("experiment store: %s; keeping %s", message, keeping)
        self.status.last_error = message

    def _prune_cache(self) -> None:
        """Delete cached arm artifacts the running experiment does not use (loaded models live in memory)."""
        current = self._current
        prune_cache(self.cache_dir, {arm.loaded.path for arm in current.arms} if current else set())

    # ---- background polling ---------------------------------------------------------------
    def start(self) -> None:
        """Poll in a daemon thread until ``stop``; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="experiment-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any single bad poll
                log.exception("experiment store: unexpected error while polling")

    def describe(self) -> dict[str, Any]:
        cur = self._current
        return {
            "experiment": None
            if cur is None
            else {
                "name": cur.name,
                "type": cur.kind,
                "checksum": cur.checksum,
                "arms": [
                    {"variant": a.variant, "model": f"{a.loaded.name}/{a.loaded.version}", "share": a.share}
                    for a in cur.arms
                ],
            },
            "polls": self.status.polls,
            "swaps": self.status.swaps,
            "ended": self.status.ended,
            "refused": self.status.refused,
            "poll_errors": self.status.poll_errors,
            "last_error": self.status.last_error,
        }
