"""The model the API serves, kept in step with the registry's ``champion.json``.

``refresh`` is one poll: read the pointer; if it names something new, fetch and verify the artifact
into the cache, load it, build its scorer, and only then swap the reference under a lock. Anything
that fails on the way (missing or tampered file, unloadable model) is logged with its reason and
remembered, and the model already serving stays. A background thread calls ``refresh`` every
``poll_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.registry import ServingRegistry
from models.base import Recommender
from serving.scorer import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One champion version, fetched, verified and ready to score."""

    name: str
    version: str
    checksum: str
    path: Path
    scorer: Scorer
    manifest: dict[str, Any]
    pointer: dict[str, Any]
    loaded_at: str

    @property
    def model(self) -> Recommender:
        return self.scorer.model


def pointer_key(pointer: dict[str, Any]) -> tuple[str, str, str, str]:
    """What makes a pointer new: a re-promotion of the same version (new ``promoted_at``) is retried."""
    return (
        str(pointer.get("model_name")),
        str(pointer.get("version")),
        str(pointer.get("checksum")),
        str(pointer.get("promoted_at")),
    )


def smoke_test(scorer: Scorer) -> None:
    """Score one known and one unknown user so that a model which loads but cannot rank is refused."""
    if len(scorer.item_ids) == 0:
        raise ValueError("model has no items")
    if scorer.user_index:
        scorer.recommend(next(iter(scorer.user_index)), 1)
    scorer.recommend("\x00smoke-test-unknown-user", 1)


def load_version(
    registry: ServingRegistry, cache_dir: Path, pointer: dict[str, Any], scorer_options: dict[str, Any]
) -> LoadedModel:
    """Fetch the version ``pointer`` names (``model_name``, ``version``, ``checksum``) into ``cache_dir``,
    verify every file against that checksum, load it, build its scorer and smoke-test it.

    Raises on anything wrong; the caller decides what keeps serving. Used for the champion
    (``ModelStore``) and for every experiment arm (``serving.experiments.ExperimentStore``).
    """
    name, version, checksum = str(pointer["model_name"]), str(pointer["version"]), str(pointer["checksum"])
    dest = cache_dir / name / f"{version}-{checksum[:16]}"
    registry.fetch(name, version, dest, expected_checksum=checksum)
    model = Recommender.load(dest)
    scorer = Scorer.from_artifact(model, dest, **scorer_options)
    smoke_test(scorer)
    manifest = registry.manifest(name, version)
    return LoadedModel(
        name=name,
        version=version,
        checksum=checksum,
        path=dest,
        scorer=scorer,
        manifest=manifest,
        pointer=dict(pointer),
        loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


@dataclass
class StoreStatus:
    polls: int = 0
    swaps: int = 0
    refused: int = 0
    poll_errors: int = 0
    last_error: str | None = None
    refused_pointers: dict[tuple[str, str, str, str], str] = field(default_factory=dict)


class ModelStore:
    def __init__(
        self,
        registry: ServingRegistry,
        cache_dir: str | Path,
        poll_seconds: float,
        scorer_options: dict[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.scorer_options = dict(scorer_options or {})
        self.cache_dir = Path(cache_dir)
        self.poll_seconds = poll_seconds
        self.status = StoreStatus()
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The serving model (read once per request; a swap never changes a request's model midway)."""
        return self._current

    def refresh(self) -> bool:
        """One poll of the champion pointer; True when a new model was swapped in."""
        with self._refresh_lock:
            self.status.polls += 1
            try:
                pointer = self.registry.champion()
            except Exception as exc:
                self.status.poll_errors += 1
                self._note_error(f"cannot read champion pointer from {self.registry.uri}: {exc}")
                return False
            if pointer is None:
                return False
            key = pointer_key(pointer)
            current = self._current
            if current is not None and pointer_key(current.pointer) == key:
                return False
            if key in self.status.refused_pointers:
                return False
            try:
                loaded = self._load(pointer)
            except Exception as exc:
                reason = f"refused {pointer['model_name']}/{pointer['version']} ({pointer.get('checksum')}): {exc}"
                self.status.refused += 1
                self.status.refused_pointers[key] = reason
                self._note_error(reason)
                return False
            with self._swap_lock:
                previous, self._current = self._current, loaded
            self.status.swaps += 1
            self.status.last_error = None
            log.info(
                "serving %s/%s (checksum %s), replacing %s",
                loaded.name,
                loaded.version,
                loaded.checksum,
                f"{previous.name}/{previous.version}" if previous else "nothing",
            )
            self._prune_cache(keep=loaded.path)
            return True

    def _load(self, pointer: dict[str, Any]) -> LoadedModel:
        return load_version(self.registry, self.cache_dir, pointer, self.scorer_options)

    def _note_error(self, message: str) -> None:
        if message != self.status.last_error:
            log.warning("model store: %s; keeping %s", message, self._describe_current())
        self.status.last_error = message

    def _describe_current(self) -> str:
        cur = self._current
        return f"{cur.name}/{cur.version}" if cur else "no model"

    def _prune_cache(self, keep: Path) -> None:
        """Delete cached artifacts other than the serving one (the model lives in memory once loaded)."""
        if not self.cache_dir.is_dir():
            return
        for model_dir in self.cache_dir.iterdir():
            if not model_dir.is_dir():
                continue
            for version_dir in model_dir.iterdir():
                if version_dir != keep and version_dir.is_dir():
                    shutil.rmtree(version_dir, ignore_errors=True)

    # ---- background polling ---------------------------------------------------------------
    def start(self) -> None:
        """Poll in a daemon thread until ``stop``; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-store-poll", daemon=True)
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
                log.exception("model store: unexpected error while polling")

    def describe(self) -> dict[str, Any]:
        cur = self._current
        return {
            "model": None if cur is None else {"name": cur.name, "version": cur.version, "checksum": cur.checksum},
            "loaded_at": None if cur is None else cur.loaded_at,
            "polls": self.status.polls,
            "swaps": self.status.swaps,
            "refused": self.status.refused,
            "poll_errors": self.status.poll_errors,
            "last_error": self.status.last_error,
        }
