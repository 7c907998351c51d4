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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
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
        if not path.is_file():
            raise FileNotFoundError(self.url(key))
        return path.read_bytes()

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

    def __init__(self, uri: str, endpoint_url: str | None, region: str) -> None:
        import boto3

        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"registry URI {uri!r} has no bucket; expected s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.write_log: list[str] = []
        # A fresh session reads the AWS_* credentials now (boto3's default session caches them forever).
        self.client = boto3.session.Session(region_name=region).client("s3", endpoint_url=endpoint_url or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        self.write_log.append(key)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.url(key)) from None
            raise

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/") + "/") if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
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
    if not _NAME_RE.match(value):
        raise ValueError(f"{field}={value!r} is not a valid registry name: use letters, digits, '.', '_' or '-'")
    return value


def _version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ServingRegistry:
    """Publish, point at and fetch model versions in a directory or an S3 prefix."""

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None) -> None:
        if not uri:
            raise ValueError("registry uri is empty; set RECSYS_REGISTRY_URI to a path or s3://bucket/prefix")
        if uri.startswith("s3://"):
            settings = get_settings()
            self.backend: Backend = S3Backend(
                uri, endpoint_url or settings.s3_endpoint_url, region or settings.s3_region
            )
        elif "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"registry uri {uri!r}: only a local path, file:// or s3://bucket/prefix is supported")
        else:
            self.backend = LocalBackend(uri.removeprefix("file://"))

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ServingRegistry:
        settings = settings or get_settings()
        return cls(settings.registry, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)

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
        self.backend.put(f"{model_name}/{version}/{MANIFEST}", _dumps(manifest))
        return manifest

    def set_champion(self, model_name: str, version: str | int) -> dict[str, Any]:
        """Point ``champion.json`` at a published, complete version (one atomic write, done last)."""
        version = str(version)
        manifest = self.complete_manifest(model_name, version, "pointing the champion at it")
        pointer = {
            "model_name": model_name,
            "version": version,
            "path": self.version_url(model_name, version),
            "checksum": manifest["checksum"],
            "promoted_at": _utcnow(),
        }
        self.backend.put(CHAMPION, _dumps(pointer))
        return pointer

    def complete_manifest(self, model_name: str, version: str | int, purpose: str = "using it") -> dict[str, Any]:
        """The manifest of a published version whose every listed file is present (else ``RegistryError``)."""
        version = str(version)
        manifest = self.manifest(model_name, version)
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
        try:
            raw = self.backend.get(CHAMPION)
        except FileNotFoundError:
            return None
        pointer = _loads(raw, self.backend.url(CHAMPION))
        missing = [k for k in ("model_name", "version", "checksum") if k not in pointer]
        if missing:
            raise RegistryError(f"{self.backend.url(CHAMPION)} lacks {missing}; re-run promotion to rewrite it")
        return pointer

    def manifest(self, model_name: str, version: str | int) -> dict[str, Any]:
        manifest = self._read_manifest_or_none(model_name, str(version))
        if manifest is None:
            raise RegistryError(
                f"{self.backend.url(f'{model_name}/{version}/{MANIFEST}')} not found; publish the version first"
            )
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
        if not files:
            raise RegistryError(f"{where}/{MANIFEST} lists no files; re-publish the version")
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
) -> dict[str, Any]:
    """Publish a promoted training candidate to the serving registry and make it the champion.

    ``candidate`` is ``training.train.train_model``'s result: ``model_name``, ``model_version``,
    ``run_id``, ``metrics``, ``artifact_dir`` and the data window (``data_window`` {start, end} or
    ``data_start``/``data_end``), optionally ``run_date``. Returns the ``champion.json`` pointer.
    """
    registry = ServingRegistry.from_settings(settings)
    manifest = publish_candidate(candidate, settings, manifest_extra, registry)
    return registry.set_champion(manifest["model_name"], manifest["version"])


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
