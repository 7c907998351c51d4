"""Serving registry: where promotion publishes models and the scoring API fetches them.

```
<registry>/<model_name>/<version>/            model artifacts (model.json, ids.json, arrays.npz, fallback.json, ...)
<registry>/<model_name>/<version>/manifest.json  identity, MLflow lineage, metrics, data window, files {name: sha256}, checksum
<registry>/champion.json                       {model_name, version, path, checksum, promoted_at}
<registry>/experiment.json                     the online experiment (``core.experiments``), checksummed
```

The registry is a local directory or an S3 prefix (boto3, any S3-compatible endpoint), chosen by the
URI. Order of writes is the consistency protocol: artifact files, then ``manifest.json``, then
``champion.json``; a reader that follows the pointer therefore always finds a complete version, and
``fetch`` verifies every byte against the manifest before anything is loaded. ``experiment.json``
names published versions only (each arm carries its manifest checksum, like the champion pointer) and
its own checksum (``core.experiments.document_checksum``): a document edited by hand is refused.

Hardening:

* Names: model names, versions and every file name a manifest lists are checked (letters, digits,
  ``._-``; no ``..``, absolute, hidden or backslashed path) before anything is written: a manifest
  entry ``../../x`` is refused with nothing written outside the fetch's destination.
* Signatures (optional): with ``RECSYS_REGISTRY_SIGNING_KEY`` set (a secret kept outside the bucket),
  ``publish`` and ``set_champion`` add ``signature`` = HMAC-SHA256 of the document's canonical JSON,
  and every read of a manifest or of the pointer requires a valid one (an unsigned or forged one is
  refused).
* ``champion.json`` is compare-and-swap: each write names the version of the pointer it replaces
  (S3: ``If-Match`` / ``If-None-Match`` on the PUT; a directory: an ``flock`` on the registry folder
  and a content hash), so a writer that read a stale pointer loses (:class:`StaleChampion`). It keeps
  ``generation`` (+1 per write) and ``previous`` (the pointer it replaced, for rollback). A champion
  is never replaced by a version trained on older data (manifest ``data_window.end``) unless forced.
* Erasure (:meth:`ServingRegistry.redact_users`): versions whose ``ids.json`` holds an erased user
  are rewritten in place (id → ``[erased-<index>]``, history row emptied), their manifests
  re-checksummed, and ``champion.json`` / ``experiment.json`` re-pinned, so the champion still loads.
* Failures say which kind they are: :class:`RegistryError` is bad content (refuse it for good),
  :class:`RegistryUnreachable` is a registry that cannot be reached right now (timeouts from
  ``[serving] registry_timeout_seconds``; retry with backoff).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from core.experiments import EXPERIMENT_FILE, ExperimentError, document_checksum, validate_document
from core.lake import commit_path, staging_path
from core.settings import Settings, get_settings

MANIFEST = "manifest.json"
CHAMPION = "champion.json"
EXPERIMENT = EXPERIMENT_FILE
MANIFEST_SCHEMA_VERSION = 1
#: Manifest keys computed by the registry; ``manifest_extra`` may not override them.
RESERVED_KEYS = ("model_name", "version", "files", "checksum", "created_at")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Temp names of in-flight local writes (``core.lake.staging_path``): never listed as content.
_STAGING_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


class RegistryError(RuntimeError):
    """The registry is missing something, or what it holds does not match its manifest."""


class RegistryUnreachable(ConnectionError):
    """The registry cannot be reached right now (network, timeout, 5xx, credentials): retry later."""


class StaleChampion(RegistryError):
    """A ``champion.json`` write refused: another writer moved it first, or it would go back to older data."""


class PreconditionFailed(Exception):
    """A conditional write found something else than it expected."""


#: Default of ``set_champion(expected=...)``: compare against the pointer read at the start of the call.
READ_NOW = object()


class Backend(Protocol):
    """Key/value storage under one root; keys are ``/``-separated relative paths."""

    uri: str
    write_log: list[str]

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """Bytes under ``key``; ``FileNotFoundError`` when absent."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""
        ...

    def url(self, key: str) -> str: ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Bytes under ``key`` and a token that changes with every write of it; ``FileNotFoundError`` when absent."""
        ...

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``key`` only if its token is still ``token`` (``None``: only if absent); else ``PreconditionFailed``."""
        ...


class LocalBackend:
    """A directory; every write goes to a temp name in the same folder and is renamed into place."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.uri = str(self.root)
        self.write_log: list[str] = []

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*PurePosixPath(key).parts)

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = staging_path(target)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        self.write_log.append(key)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            if not path.is_file():
                raise FileNotFoundError(self.url(key))
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:  # a mount that went away, an I/O error: not the artifact's fault
            raise RegistryUnreachable(f"{self.url(key)}: {exc}") from exc

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, sha256_bytes(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive ``flock`` on the registry folder (writers of ``put_if`` on this filesystem serialise)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        with self._locked():
            try:
                current: str | None = self.get_versioned(key)[1]
            except FileNotFoundError:
                current = None
            if current != token:
                raise PreconditionFailed(f"{self.url(key)} changed (expected {token}, found {current})")
            self.put(key, data)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for path in base.rglob("*"):
            if path.is_file() and not _STAGING_RE.match(path.name):
                keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def url(self, key: str) -> str:
        return str(self._path(key))

    def delete(self, key: str) -> bool:
        path = self._path(key)
        if not path.is_file():
            return False
        path.unlink()
        self.write_log.append(f"-{key}")
        return True


class S3Backend:
    """An ``s3://bucket/prefix``; each object is one PUT, which S3 makes visible atomically."""

    def __init__(self, uri: str, endpoint_url: str | None, region: str, timeout_seconds: float | None = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"registry URI {uri!r} has no bucket; expected s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.write_log: list[str] = []
        config = None
        if timeout_seconds is not None:
            config = BotoConfig(
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"max_attempts": 2, "mode": "standard"},
            )
        # A fresh session reads the AWS_* credentials now (boto3's default session caches them forever).
        self.client = boto3.session.Session(region_name=region).client(
            "s3", endpoint_url=endpoint_url or None, config=config
        )

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """Translate read failures: absent → ``FileNotFoundError``; transport, 5xx, auth → ``RegistryUnreachable``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.url(key)) from None
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status >= 500 or status in (401, 403) or code in ("SlowDown", "RequestTimeout"):
                raise RegistryUnreachable(f"{self.url(key)}: {code} ({status})") from exc
            raise
        except BotoCoreError as exc:
            raise RegistryUnreachable(f"{self.url(key)}: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        self.write_log.append(key)

    def get(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        with self._reading(key):
            found = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return found["Body"].read(), str(found["ETag"])

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise PreconditionFailed(f"{self.url(key)} changed (expected {token})") from None
            raise
        self.write_log.append(key)

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/") + "/") if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._reading(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def delete(self, key: str) -> bool:
        try:
            self.get(key)
        except FileNotFoundError:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        self.write_log.append(f"-{key}")
        return True


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def overall_checksum(files: Mapping[str, str]) -> str:
    """One sha256 over the sorted ``name:sha256`` lines: identifies the whole artifact set."""
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return sha256_bytes(lines.encode())


def _check_name(field: str, value: str) -> str:
    value = str(value)
    if not _NAME_RE.match(value) or value in (".", ".."):
        raise ValueError(f"{field}={value!r} is not a valid registry name: use letters, digits, '.', '_' or '-'")
    return value


def check_file_name(name: str) -> str:
    """A file name a manifest may list: relative, ``/``-separated parts of letters, digits and ``._-``, none
    empty, hidden (``.x``, so no ``..``) or the manifest itself; anything else could escape the folder."""
    parts = str(name).split("/")
    bad = (
        not name
        or name == MANIFEST
        or any(not part or part.startswith(".") or not _NAME_RE.match(part) for part in parts)
    )
    if bad:
        raise RegistryError(f"file name {name!r} in a manifest is not a safe relative path; refused")
    return str(name)


def sign(document: Mapping[str, Any], key: str) -> str:
    """``hmac-sha256:<hex>`` of the document's canonical JSON without its ``signature``."""
    body = {k: v for k, v in document.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "hmac-sha256:" + hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()


def _window_end(manifest: Mapping[str, Any] | None) -> dt.datetime | None:
    end = ((manifest or {}).get("data_window") or {}).get("end")
    if not end:
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ServingRegistry:
    """Publish, point at and fetch model versions in a directory or an S3 prefix."""

    def __init__(
        self,
        uri: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        signing_key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        if not uri:
            raise ValueError("registry uri is empty; set RECSYS_REGISTRY_URI to a path or s3://bucket/prefix")
        self.signing_key = signing_key or None
        if uri.startswith("s3://"):
            settings = get_settings()
            self.backend: Backend = S3Backend(
                uri, endpoint_url or settings.s3_endpoint_url, region or settings.s3_region, timeout_seconds
            )
        elif "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"registry uri {uri!r}: only a local path, file:// or s3://bucket/prefix is supported")
        else:
            self.backend = LocalBackend(uri.removeprefix("file://"))

    @classmethod
    def from_settings(cls, settings: Settings | None = None, timeout_seconds: float | None = None) -> ServingRegistry:
        settings = settings or get_settings()
        return cls(
            settings.registry,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            signing_key=settings.registry_signing_key or None,
            timeout_seconds=timeout_seconds,
        )

    def _check_signature(self, document: Mapping[str, Any], where: str) -> None:
        if self.signing_key is None:
            return
        got = document.get("signature")
        if not isinstance(got, str) or not hmac.compare_digest(got, sign(document, self.signing_key)):
            state = "is not signed" if got is None else "has a signature that does not match"
            raise RegistryError(
                f"{where} {state} (RECSYS_REGISTRY_SIGNING_KEY is set, so every manifest and pointer must carry "
                "a valid signature); refused"
            )

    @property
    def uri(self) -> str:
        return self.backend.uri

    def version_url(self, model_name: str, version: str) -> str:
        return self.backend.url(f"{model_name}/{version}")

    # ---- write side ------------------------------------------------------------------------
    def publish(
        self,
        model_dir: str | os.PathLike[str],
        model_name: str,
        version: str | int,
        manifest_extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload every file of ``model_dir``, then its ``manifest.json``; return the manifest.

        Re-publishing identical files under the same version is a no-op (a DAG rerun); different
        files under an existing version are refused, since servers may already hold that version.
        """
        model_name = _check_name("model_name", model_name)
        version = _check_name("version", str(version))
        src = Path(model_dir)
        if not src.is_dir():
            raise RegistryError(f"model_dir {src} is not a directory; pass the exported artifact folder")
        paths = sorted(p for p in src.rglob("*") if p.is_file())
        names = [p.relative_to(src).as_posix() for p in paths]
        if MANIFEST in names:
            raise RegistryError(f"{src / MANIFEST} exists; the registry writes the manifest, remove it from model_dir")
        if not names:
            raise RegistryError(f"model_dir {src} holds no files; export the model first")
        for name in names:
            check_file_name(name)
        clash = sorted(set(manifest_extra or {}) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"manifest_extra may not set {clash}: the registry computes them")

        files = {name: sha256_file(path) for name, path in zip(names, paths, strict=True)}
        checksum = overall_checksum(files)
        existing = self._read_manifest_or_none(model_name, version)
        if existing is not None:
            if existing.get("checksum") == checksum:
                return existing
            raise RegistryError(
                f"{self.version_url(model_name, version)} is already published with checksum "
                f"{existing.get('checksum')}, not {checksum}; publish under a new version"
            )

        for name, path in zip(names, paths, strict=True):
            self.backend.put(f"{model_name}/{version}/{name}", path.read_bytes())
        manifest: dict[str, Any] = {
            "model_name": model_name,
            "version": version,
            "mlflow_run_id": None,
            "mlflow_model_version": None,
            "metrics": {},
            "data_window": {"start": None, "end": None},
            "run_date": None,
            "schema": _artifact_schema(src),
        }
        manifest.update(dict(manifest_extra or {}))
        manifest.update({"files": files, "checksum": checksum, "created_at": _utcnow()})
        if self.signing_key is not None:
            manifest["signature"] = sign(manifest, self.signing_key)
        self.backend.put(f"{model_name}/{version}/{MANIFEST}", _dumps(manifest))
        return manifest

    def champion_state(self) -> tuple[dict[str, Any] | None, str | None]:
        """The pointer (checked) and its version token (``None``, ``None`` when there is no champion):
        hand the token to :meth:`set_champion` to move it only if nobody else did meanwhile."""
        try:
            raw, token = self.backend.get_versioned(CHAMPION)
        except FileNotFoundError:
            return None, None
        return self._checked_pointer(raw), token

    def set_champion(
        self,
        model_name: str,
        version: str | int,
        expected: Any = READ_NOW,
        force: bool = False,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Point ``champion.json`` at a published, complete version (one atomic, conditional write, done last).

        ``expected``: the token of the pointer this write replaces (from :meth:`champion_state`;
        ``None`` = there must be no champion yet; default: the pointer read now). Refused with
        :class:`StaleChampion` when the pointer changed since, or when the current champion was trained on
        newer data (``data_window.end``) than this version, unless ``force`` (a rollback).
        """
        model_name = _check_name("model_name", model_name)
        version = _check_name("version", str(version))
        current, token = self.champion_state()
        if expected is not READ_NOW and expected != token:
            raise StaleChampion(
                f"{self.backend.url(CHAMPION)} changed since it was read (now {_ref(current)}); "
                "decide again on the current champion"
            )
        manifest = self.complete_manifest(model_name, version, "pointing the champion at it")
        if current is not None and not force and _ref(current) != f"{model_name}/{version}":
            try:
                current_manifest: dict[str, Any] | None = self.manifest(current["model_name"], current["version"])
            except RegistryError:
                current_manifest = None
            newer, mine = _window_end(current_manifest), _window_end(manifest)
            if newer is not None and mine is not None and mine < newer:
                raise StaleChampion(
                    f"{model_name}/{version} was trained on data up to {mine.date()}, older than the champion "
                    f"{_ref(current)}'s ({newer.date()}): a backfill never replaces a newer champion; force it "
                    "(python -m training.registry rollback) if that is what you want"
                )
        pointer: dict[str, Any] = {
            "model_name": model_name,
            "version": version,
            "path": self.version_url(model_name, version),
            "checksum": manifest["checksum"],
            "promoted_at": _utcnow(),
            "generation": int((current or {}).get("generation") or 0) + 1,
            "previous": None
            if current is None
            else {k: current.get(k) for k in ("model_name", "version", "checksum", "promoted_at")},
        }
        if reason:
            pointer["reason"] = reason
        if self.signing_key is not None:
            pointer["signature"] = sign(pointer, self.signing_key)
        try:
            self.backend.put_if(CHAMPION, _dumps(pointer), token)
        except PreconditionFailed:
            raise StaleChampion(
                f"{self.backend.url(CHAMPION)} was moved by another writer while {model_name}/{version} was being "
                "promoted; this write lost (decide again on the current champion)"
            ) from None
        return pointer

    def delete_version(self, model_name: str, version: str | int) -> int:
        """Remove a published version (manifest first, so it stops being published at once); files removed."""
        model_name, version = _check_name("model_name", model_name), _check_name("version", str(version))
        keys = self.backend.list_keys(f"{model_name}/{version}")
        manifest_key = f"{model_name}/{version}/{MANIFEST}"
        removed = int(self.backend.delete(manifest_key))
        for key in keys:
            if key != manifest_key:
                removed += int(self.backend.delete(key))
        return removed

    def redact_users(self, users: Collection[str]) -> dict[str, Any]:
        """Right to erasure: rewrite every published version whose ``ids.json`` holds one of ``users``
        (``core.artifacts.redact_users``: the id becomes ``[erased-<index>]``, the history row empty),
        re-checksum its manifest (``erased_at``, ``erased_users`` count recorded, re-signed), then re-pin
        ``champion.json`` (same version, ``previous`` kept) and ``experiment.json`` arms to the new
        checksums so serving loads the redacted files. Returns counts, never ids.
        """
        from core.artifacts import IDS_FILE, USER_FILES, redact_users

        versions: list[tuple[str, str]] = []
        for key in self.backend.list_keys(""):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == IDS_FILE and _NAME_RE.match(parts[0]) and _NAME_RE.match(parts[1]):
                versions.append((parts[0], parts[1]))
        rewritten: dict[tuple[str, str], str] = {}
        slots = 0
        for model_name, version in versions:
            manifest = self._read_manifest_or_none(model_name, version)
            present: dict[str, bytes] = {}
            for name in USER_FILES:
                with contextlib.suppress(FileNotFoundError):
                    present[name] = self.backend.get(f"{model_name}/{version}/{name}")
            changed, n = redact_users(present, users)
            if not changed:
                continue
            for name, data in changed.items():
                self.backend.put(f"{model_name}/{version}/{name}", data)
            slots += n
            if manifest is None:  # a half-published version: its files are redacted, there is nothing to pin
                continue
            files = dict(manifest.get("files") or {})
            files.update({name: sha256_bytes(data) for name, data in changed.items() if name in files})
            manifest.update(
                files=files,
                checksum=overall_checksum(files),
                erased_at=_utcnow(),
                erased_users=int(manifest.get("erased_users") or 0) + n,
            )
            manifest.pop("signature", None)
            if self.signing_key is not None:
                manifest["signature"] = sign(manifest, self.signing_key)
            self.backend.put(f"{model_name}/{version}/{MANIFEST}", _dumps(manifest))
            rewritten[(model_name, version)] = manifest["checksum"]
        repinned = self._repin(rewritten) if rewritten else []
        return {"versions_redacted": len(rewritten), "user_slots_redacted": slots, "repinned": repinned}

    def _repin(self, checksums: Mapping[tuple[str, str], str]) -> list[str]:
        """Point ``champion.json`` (and its ``previous``) and ``experiment.json``'s arms at the new checksums of
        versions rewritten in place; the pointer is a compare-and-swap write like any other."""
        done: list[str] = []
        current, token = self.champion_state()
        if current is not None:
            ref = (str(current["model_name"]), str(current["version"]))
            prev = current.get("previous") or None
            prev_ref = None if prev is None else (str(prev.get("model_name")), str(prev.get("version")))
            if ref in checksums or prev_ref in checksums:
                pointer = {k: v for k, v in current.items() if k != "signature"}
                if ref in checksums:
                    pointer["checksum"] = checksums[ref]
                if prev is not None and prev_ref in checksums:
                    pointer["previous"] = {**prev, "checksum": checksums[prev_ref]}  # type: ignore[index]
                pointer["generation"] = int(current.get("generation") or 0) + 1
                pointer["reason"] = "re-pinned after erasure"
                if self.signing_key is not None:
                    pointer["signature"] = sign(pointer, self.signing_key)
                try:
                    self.backend.put_if(CHAMPION, _dumps(pointer), token)
                except PreconditionFailed:
                    raise StaleChampion(
                        f"{self.backend.url(CHAMPION)} moved while erasure re-pinned it; run the erasure again"
                    ) from None
                done.append(CHAMPION)
        try:
            doc = self.experiment()
        except RegistryError:
            doc = None
        if doc is not None and any((a["model_name"], str(a["version"])) in checksums for a in doc["arms"]):
            arms = [
                {**a, "checksum": checksums.get((a["model_name"], str(a["version"])), a["checksum"])}
                for a in doc["arms"]
            ]
            self.write_experiment({**doc, "arms": arms})
            done.append(EXPERIMENT)
        return done

    def complete_manifest(self, model_name: str, version: str | int, purpose: str = "using it") -> dict[str, Any]:
        """The manifest of a published version whose every listed file is present (else ``RegistryError``)."""
        version = str(version)
        manifest = self.manifest(model_name, version)
        for name in manifest.get("files") or {}:
            check_file_name(name)
        present = set(self.backend.list_keys(f"{model_name}/{version}"))
        missing = sorted(name for name in manifest["files"] if f"{model_name}/{version}/{name}" not in present)
        if missing:
            raise RegistryError(
                f"{self.version_url(model_name, version)} lacks {missing}; re-publish it before {purpose}"
            )
        return manifest

    # ---- experiment ---------------------------------------------------------------------------
    def write_experiment(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``document`` (``core.experiments``), pin each arm to its published version's checksum,
        checksum the whole and write ``experiment.json`` in one atomic write; returns what was written.

        Every arm must be a complete published version; an arm that already names a checksum must
        match its manifest's (a version re-published under the same number is refused).
        """
        try:
            doc = validate_document(document, require_checksums=False)
        except ExperimentError as exc:
            raise RegistryError(f"experiment: {exc}") from None
        for arm in doc["arms"]:
            label = f"experiment arm {arm['variant']!r}"
            try:
                manifest = self.complete_manifest(arm["model_name"], arm["version"], f"making it {label}")
            except RegistryError as exc:
                raise RegistryError(f"{label}: {exc}") from None
            if arm["checksum"] not in (None, manifest["checksum"]):
                raise RegistryError(
                    f"{label}: {arm['model_name']}/{arm['version']} has checksum {manifest['checksum']}, "
                    f"not {arm['checksum']}; the version changed since the experiment was planned"
                )
            arm["checksum"] = manifest["checksum"]
        doc["checksum"] = document_checksum(doc)
        self.backend.put(EXPERIMENT, _dumps(doc))
        return doc

    def experiment(self) -> dict[str, Any] | None:
        """The experiment document, checked and its checksum verified; ``None`` when there is none.

        A document that is not valid JSON, fails validation or whose checksum does not match its
        content (edited by hand, half copied) raises ``RegistryError``: serving keeps what it had.
        """
        try:
            raw = self.backend.get(EXPERIMENT)
        except FileNotFoundError:
            return None
        where = self.backend.url(EXPERIMENT)
        doc = _loads(raw, where)
        try:
            checked = validate_document(doc)
        except ExperimentError as exc:
            raise RegistryError(f"{where}: {exc}; rewrite it with python -m training.experiment") from None
        want = document_checksum(doc)
        if doc.get("checksum") != want:
            raise RegistryError(
                f"{where}: checksum {doc.get('checksum')} does not match its content ({want}); it was edited "
                "outside the registry: refused. Rewrite it with python -m training.experiment"
            )
        return checked

    def clear_experiment(self) -> bool:
        """Delete ``experiment.json``; False when there was none."""
        return self.backend.delete(EXPERIMENT)

    # ---- read side -------------------------------------------------------------------------
    def champion(self) -> dict[str, Any] | None:
        """The current pointer, or ``None`` when nothing was ever promoted."""
        return self.champion_state()[0]

    def _checked_pointer(self, raw: bytes) -> dict[str, Any]:
        where = self.backend.url(CHAMPION)
        pointer = _loads(raw, where)
        missing = [k for k in ("model_name", "version", "checksum") if k not in pointer]
        if missing:
            raise RegistryError(f"{where} lacks {missing}; re-run promotion to rewrite it")
        try:
            _check_name("model_name", pointer["model_name"])
            _check_name("version", str(pointer["version"]))
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}; refused") from None
        self._check_signature(pointer, where)
        return pointer

    def manifest(self, model_name: str, version: str | int) -> dict[str, Any]:
        try:
            model_name, version = _check_name("model_name", model_name), _check_name("version", str(version))
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        manifest = self._read_manifest_or_none(model_name, version)
        if manifest is None:
            raise RegistryError(
                f"{self.backend.url(f'{model_name}/{version}/{MANIFEST}')} not found; publish the version first"
            )
        where = self.backend.url(f"{model_name}/{version}/{MANIFEST}")
        if (str(manifest.get("model_name")), str(manifest.get("version"))) != (model_name, version):
            raise RegistryError(
                f"{where} names {manifest.get('model_name')}/{manifest.get('version')}, not {model_name}/{version}; refused"
            )
        self._check_signature(manifest, where)
        return manifest

    def versions(self, model_name: str) -> list[str]:
        """Published versions of ``model_name`` (those with a manifest), oldest first."""
        found = {
            parts[1]
            for key in self.backend.list_keys(model_name)
            if len(parts := key.split("/")) == 3 and parts[2] == MANIFEST
        }
        return sorted(found, key=_version_key)

    def fetch(
        self,
        model_name: str,
        version: str | int,
        dest_dir: str | os.PathLike[str],
        expected_checksum: str | None = None,
    ) -> Path:
        """Download a version into ``dest_dir`` and verify every file; the folder appears only if all match.

        ``expected_checksum`` (from ``champion.json``) guards against a manifest swapped under the pointer.
        """
        version = str(version)
        manifest = self.manifest(model_name, version)
        files: dict[str, str] = manifest.get("files") or {}
        where = self.version_url(model_name, version)
        if not files or not isinstance(files, dict):
            raise RegistryError(f"{where}/{MANIFEST} lists no files; re-publish the version")
        for name in files:
            check_file_name(name)
        if overall_checksum(files) != manifest.get("checksum"):
            raise RegistryError(f"{where}/{MANIFEST}: checksum does not match its files list; the manifest is corrupt")
        if expected_checksum is not None and expected_checksum != manifest["checksum"]:
            raise RegistryError(
                f"{where}: manifest checksum {manifest['checksum']} differs from the champion pointer's "
                f"{expected_checksum}; re-run promotion"
            )
        dest = Path(dest_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = staging_path(dest)
        staged.mkdir()
        try:
            for name, want in sorted(files.items()):
                try:
                    data = self.backend.get(f"{model_name}/{version}/{name}")
                except FileNotFoundError:
                    raise RegistryError(f"{where}/{name} is missing; the published version is incomplete") from None
                got = sha256_bytes(data)
                if got != want:
                    raise RegistryError(f"{where}/{name}: sha256 {got} does not match the manifest's {want}; refused")
                target = staged.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (staged / MANIFEST).write_bytes(_dumps(manifest))
            commit_path(staged, dest)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return dest

    def _read_manifest_or_none(self, model_name: str, version: str) -> dict[str, Any] | None:
        key = f"{model_name}/{version}/{MANIFEST}"
        try:
            raw = self.backend.get(key)
        except FileNotFoundError:
            return None
        return _loads(raw, self.backend.url(key))


def _artifact_schema(model_dir: Path) -> dict[str, Any]:
    """What a loader needs to know before reading: the artifact format and the model's shape."""
    schema: dict[str, Any] = {"manifest_version": MANIFEST_SCHEMA_VERSION}
    meta_path = model_dir / "model.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        for key in ("name", "format_version", "n_users", "n_items"):
            if key in meta:
                schema[key] = meta[key]
    return schema


def _ref(pointer: Mapping[str, Any] | None) -> str:
    return "nothing" if pointer is None else f"{pointer.get('model_name')}/{pointer.get('version')}"


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def _loads(raw: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{where} is not valid JSON ({exc}); rewrite it") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"{where} holds a {type(obj).__name__}, expected a JSON object")
    return obj


def publish_champion(
    candidate: Mapping[str, Any],
    settings: Settings | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Publish a promoted training candidate to the serving registry and make it the champion.

    ``candidate`` is ``training.train.train_model``'s result: ``model_name``, ``model_version``,
    ``run_id``, ``metrics``, ``artifact_dir`` and the data window (``data_window`` {start, end} or
    ``data_start``/``data_end``), optionally ``run_date``. Returns the ``champion.json`` pointer.
    ``force`` replaces a champion trained on newer data (a deliberate backfill).
    """
    registry = ServingRegistry.from_settings(settings)
    manifest = publish_candidate(candidate, settings, manifest_extra, registry)
    return registry.set_champion(manifest["model_name"], manifest["version"], force=force)


def publish_candidate(
    candidate: Mapping[str, Any],
    settings: Settings | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    registry: ServingRegistry | None = None,
) -> dict[str, Any]:
    """Publish a training candidate (see :func:`publish_champion`) as a registry version without pointing
    anything at it (a canary's treatment); returns its manifest."""
    missing = [k for k in ("model_name", "model_version", "artifact_dir") if candidate.get(k) in (None, "")]
    if missing:
        raise ValueError(f"candidate lacks {missing}; pass the dict returned by training.train.train_model")
    window = candidate.get("data_window") or {
        "start": candidate.get("data_start"),
        "end": candidate.get("data_end"),
    }
    extra: dict[str, Any] = {
        "mlflow_run_id": candidate.get("run_id"),
        "mlflow_model_version": str(candidate["model_version"]),
        "metrics": dict(candidate.get("metrics") or {}),
        "data_window": {"start": window.get("start"), "end": window.get("end")},
        "run_date": candidate.get("run_date"),
    }
    extra.update(dict(manifest_extra or {}))
    registry = registry or ServingRegistry.from_settings(settings)
    return registry.publish(candidate["artifact_dir"], candidate["model_name"], str(candidate["model_version"]), extra)
