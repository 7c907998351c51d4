"""The model the API serves, kept in step with the registry's ``champion.json``.

``refresh`` is one poll: read the pointer; if it names something new, fetch and verify the artifact
into the cache, load it, build its scorer, and only then swap the reference under a lock. A background
thread calls ``refresh`` every ``poll_seconds``.

Two kinds of failure, told apart (``core.registry``):

* a bad artifact (a file that does not match its checksum, a manifest naming an unsafe path, a model
  that will not load or score) is refused: logged with its reason and remembered (not fetched again
  until the pointer changes); the model already serving stays;
* a registry that cannot be reached (network, timeout, 5xx) is retried with exponential backoff
  (``poll_seconds`` doubling up to ``[serving] registry_retry_max_seconds``), never remembered as a
  refusal: a transient S3 error does not refuse a new champion forever.

The cache (``RECSYS_SERVING_CACHE_DIR``) holds verified artifacts only, and ``champion.json`` there is
the last good pointer (with its manifest), written after each swap. At start with the registry
unreachable, the API serves that cached champion, re-verified file by file against its manifest.
Workers sharing a cache never corrupt each other's download: each version is fetched under an
exclusive file lock (``<cache>/.locks/``) into a private staging folder and renamed into place; a
worker that finds the version already there verifies and reuses it; pruning skips versions another
worker holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.registry import (
    MANIFEST,
    RegistryError,
    ServingRegistry,
    check_file_name,
    overall_checksum,
    sha256_file,
)
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


LOCKS = ".locks"
#: The last good champion, kept in the cache folder: ``{"pointer", "manifest"}``.
LAST_GOOD = "champion.json"


@contextlib.contextmanager
def version_lock(cache_dir: Path, name: str, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on one cached version (``<cache>/.locks/<name>``); yields whether it was taken."""
    folder = cache_dir / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_folder(cache_dir: Path, pointer: dict[str, Any]) -> Path:
    return cache_dir / str(pointer["model_name"]) / f"{pointer['version']}-{str(pointer['checksum'])[:16]}"


def verify_cached(dest: Path, manifest: dict[str, Any], checksum: str) -> None:
    """Every file of a cached copy matches its manifest and the manifest the pointer's checksum (else ``RegistryError``)."""
    files: dict[str, str] = manifest.get("files") or {}
    if not files or overall_checksum(files) != checksum or manifest.get("checksum") != checksum:
        raise RegistryError(f"cached {dest}: its manifest does not match checksum {checksum}")
    for name, want in files.items():
        path = dest.joinpath(*PurePosixPath(check_file_name(name)).parts)
        if not path.is_file() or sha256_file(path) != want:
            raise RegistryError(f"cached {dest}/{name} is missing or does not match its manifest")


def _load(dest: Path, pointer: dict[str, Any], manifest: dict[str, Any], scorer_options: dict[str, Any]) -> LoadedModel:
    model = Recommender.load(dest)
    scorer = Scorer.from_artifact(model, dest, **scorer_options)
    smoke_test(scorer)
    return LoadedModel(
        name=str(pointer["model_name"]),
        version=str(pointer["version"]),
        checksum=str(pointer["checksum"]),
        path=dest,
        scorer=scorer,
        manifest=manifest,
        pointer=dict(pointer),
        loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def load_version(
    registry: ServingRegistry, cache_dir: Path, pointer: dict[str, Any], scorer_options: dict[str, Any]
) -> LoadedModel:
    """Fetch the version ``pointer`` names (``model_name``, ``version``, ``checksum``) into ``cache_dir``,
    verify every file against that checksum, load it, build its scorer and smoke-test it.

    Under the version's file lock: a copy another worker already fetched is verified and reused.
    Raises on anything wrong (``RegistryError``: bad content; ``RegistryUnreachable``/``OSError``: try
    later); the caller decides what keeps serving. Used for the champion (``ModelStore``) and for every
    experiment arm (``serving.experiments.ExperimentStore``).
    """
    name, version, checksum = str(pointer["model_name"]), str(pointer["version"]), str(pointer["checksum"])
    dest = cache_folder(cache_dir, pointer)
    manifest = registry.manifest(name, version)
    with version_lock(cache_dir, f"{name}-{dest.name}"):
        reused = False
        if dest.is_dir():
            try:
                verify_cached(dest, json.loads((dest / MANIFEST).read_text()), checksum)
                reused = True
            except (OSError, ValueError, RegistryError):
                reused = False
        if not reused:
            registry.fetch(name, version, dest, expected_checksum=checksum)
        return _load(dest, pointer, manifest, scorer_options)


def load_cached(cache_dir: Path, scorer_options: dict[str, Any]) -> LoadedModel | None:
    """The last good champion from the cache (re-verified), or ``None`` when there is none usable."""
    try:
        saved = json.loads((cache_dir / LAST_GOOD).read_text())
        pointer, manifest = saved["pointer"], saved["manifest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    dest = cache_folder(cache_dir, pointer)
    with version_lock(cache_dir, f"{pointer['model_name']}-{dest.name}"):
        verify_cached(dest, manifest, str(pointer["checksum"]))
        return _load(dest, pointer, manifest, scorer_options)


def save_last_good(cache_dir: Path, loaded: LoadedModel) -> None:
    """Persist the serving champion's pointer and manifest in the cache (atomic rename)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{LAST_GOOD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"pointer": loaded.pointer, "manifest": loaded.manifest}, default=str))
    os.replace(tmp, cache_dir / LAST_GOOD)


def prune_cache(cache_dir: Path, keep: set[Path]) -> None:
    """Delete cached versions other than ``keep`` and the last good champion's, skipping any another
    worker holds (its lock is taken)."""
    if not cache_dir.is_dir():
        return
    try:
        saved = json.loads((cache_dir / LAST_GOOD).read_text())
        keep = keep | {cache_folder(cache_dir, saved["pointer"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for model_dir in cache_dir.iterdir():
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        for version_dir in model_dir.iterdir():
            if version_dir in keep or not version_dir.is_dir() or version_dir.name.startswith("."):
                continue
            with version_lock(cache_dir, f"{model_dir.name}-{version_dir.name}", blocking=False) as mine:
                if mine:
                    shutil.rmtree(version_dir, ignore_errors=True)


def transient(exc: BaseException) -> bool:
    """A failure of the registry or the disk, not of the artifact: retried, never remembered as a refusal."""
    return not isinstance(exc, RegistryError) and isinstance(exc, ConnectionError | TimeoutError | OSError)


@dataclass
class StoreStatus:
    polls: int = 0
    swaps: int = 0
    refused: int = 0
    poll_errors: int = 0
    last_error: str | None = None
    #: The registry could not be reached on the last try (``None``: it answered).
    unreachable: str | None = None
    #: Seconds until the next try while unreachable (doubles up to ``max_backoff``).
    backoff: float = 0.0
    retry_at: float = 0.0
    from_cache: bool = False
    refused_pointers: dict[tuple[str, str, str, str], str] = field(default_factory=dict)


class ModelStore:
    def __init__(
        self,
        registry: ServingRegistry,
        cache_dir: str | Path,
        poll_seconds: float,
        scorer_options: dict[str, Any] | None = None,
        max_backoff: float = 300.0,
    ) -> None:
        self.registry = registry
        self.scorer_options = dict(scorer_options or {})
        self.cache_dir = Path(cache_dir)
        self.poll_seconds = poll_seconds
        self.max_backoff = max(max_backoff, poll_seconds)
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
            if self.status.unreachable is not None and time.monotonic() < self.status.retry_at:
                return False  # backing off
            self.status.polls += 1
            try:
                pointer = self.registry.champion()
            except RegistryError as exc:
                self._note_error(f"champion pointer of {self.registry.uri} refused: {exc}")
                return False
            except Exception as exc:
                return self._unreachable(f"cannot read champion pointer from {self.registry.uri}: {exc}")
            self._reachable()
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
                where = f"{pointer['model_name']}/{pointer['version']} ({pointer.get('checksum')})"
                if transient(exc):
                    return self._unreachable(f"could not fetch {where}: {type(exc).__name__}: {exc}")
                reason = f"refused {where}: {exc}"
                self.status.refused += 1
                self.status.refused_pointers[key] = reason
                self._note_error(reason)
                return False
            self._swap(loaded, from_cache=False)
            with contextlib.suppress(OSError):
                save_last_good(self.cache_dir, loaded)
            self._prune_cache(keep=loaded.path)
            return True

    def _swap(self, loaded: LoadedModel, from_cache: bool) -> None:
        with self._swap_lock:
            previous, self._current = self._current, loaded
        self.status.swaps += 1
        self.status.from_cache = from_cache
        if not from_cache:
            self.status.last_error = None
        log.info(
            "serving %s/%s (checksum %s)%s, replacing %s",
            loaded.name,
            loaded.version,
            loaded.checksum,
            " from the local cache (registry unreachable)" if from_cache else "",
            f"{previous.name}/{previous.version}" if previous else "nothing",
        )

    def _unreachable(self, message: str) -> bool:
        """Count, back off, and with nothing serving yet fall back to the cached last good champion."""
        self.status.poll_errors += 1
        self.status.unreachable = message
        self.status.backoff = min(max(self.status.backoff * 2, self.poll_seconds), self.max_backoff)
        self.status.retry_at = time.monotonic() + self.status.backoff
        self._note_error(f"{message}; retrying in {self.status.backoff:.0f}s")
        if self._current is not None:
            return False
        try:
            cached = load_cached(self.cache_dir, self.scorer_options)
        except Exception as exc:
            log.warning("model store: the cached champion in %s is not usable (%s)", self.cache_dir, exc)
            return False
        if cached is None:
            return False
        self._swap(cached, from_cache=True)
        return True

    def _reachable(self) -> None:
        if self.status.unreachable is not None:
            log.info("model store: registry %s reachable again", self.registry.uri)
        self.status.unreachable = None
        self.status.backoff = 0.0
        self.status.retry_at = 0.0

    def _load(self, pointer: dict[str, Any]) -> LoadedModel:
        return load_version(self.registry, self.cache_dir, pointer, self.scorer_options)

    def _note_error(self, message: str) -> None:
        if message != self.status.last_error:
            log.warning("model store: %s; keeping %s", message, self._describe_current())
        self.status.last_error = message

    def _describe_current(self) -> str:
        return self.describe_current()

    def describe_current(self) -> str:
        cur = self._current
        if cur is None:
            return "no model"
        return f"{cur.name}/{cur.version}" + (" (from the local cache)" if self.status.from_cache else "")

    def _prune_cache(self, keep: Path) -> None:
        """Delete cached artifacts other than the serving one and the last good champion (the model lives in
        memory once loaded), never one another worker is fetching or loading."""
        prune_cache(self.cache_dir, {keep})

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
            "age_seconds": None if cur is None else _age(cur.manifest.get("created_at")),
            "data_age_seconds": None if cur is None else _age((cur.manifest.get("data_window") or {}).get("end")),
            "polls": self.status.polls,
            "swaps": self.status.swaps,
            "refused": self.status.refused,
            "poll_errors": self.status.poll_errors,
            "last_error": self.status.last_error,
            "unreachable": self.status.unreachable,
            "from_cache": self.status.from_cache,
        }


def _age(stamp: Any) -> float | None:
    """Seconds since an ISO date or timestamp (a date counts from its start, UTC); ``None`` if unreadable."""
    if not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return max((dt.datetime.now(dt.UTC) - when).total_seconds(), 0.0)
