"""The right to erasure, lake side: remove a user from every layer and audit it without keeping the id.

**Request contract.** A request is one JSON file ``<lake>/erasure/requests/<request_id>.json``
(written whole and renamed into place, e.g. by the scoring API's ``DELETE /v1/users/{id}`` or by
``python -m jobs.erasure --request USER_ID --by NAME``)::

    {"request_id": "<1-128 of A-Z a-z 0-9 . _ ->", "user_id": "<the id as the shop sends it>",
     "requested_at": "<ISO-8601 with offset>", "requested_by": "<who asked: API key name, operator>"}

**What ``run`` removes.** Every pending request's user (ids matched as given and as clean
normalises them: trimmed, NFC), from:

- every JSON-lines file in the lake (``landing/`` events, exposures and any other drop, and the
  landing copies set aside under ``quarantine/``): lines whose ``user_id`` is the user, and unreadable
  lines that carry the id as a JSON string, are dropped; a file left empty is removed;
- every Parquet table in the lake (``bronze/events``, ``bronze/_rejected`` by the raw line,
  ``silver/…``, ``gold/<every run date>/…``, any other): rows whose ``user_id`` is the user, or whose
  ``raw`` line carries it; a table (partition) is rewritten atomically only when it holds such rows;
- every other text file in the lake (stage reports) and in the reports folder (validation
  summaries, gate state, GX results, Data Docs): the id is replaced by ``[erased]`` (JSON string
  values only, never numbers; as a whole token in other text).

Rewritten landing days are re-ingested by the next run (their files changed), and their raw gate
judged again. A quarantine manifest records the new size and checksum of a file erasure rewrote.

**Audit without the id.** Each done request appends one line to ``<lake>/erasure/audit.jsonl``
(append-only, fsynced): request id, ``user_hash`` = HMAC-SHA256 of the normalised id keyed with the
salt, who asked and when, when it was done, and the rows/lines/files removed per layer. The request
then moves to ``erasure/done/<request_id>.json`` with the id replaced by its hash. The salt lives
outside the lake, in the environment variable ``RECSYS_ERASURE_SALT`` (``make secrets`` generates one
for docker compose); without it no request is processed (the id would be kept in a guessable form).
To answer "was user X erased?", hash X with the same salt and look it up in the audit log.

A request file that breaks the contract is left in place, named in the report (never its id) and
fails the job after the valid ones are done: the DAG's ``erase`` task runs before ``ingest``, so no
training run starts while an erasure request is pending.

**Trained models.** Every exported model that holds the user is redacted in place
(``core.artifacts.redact_users``: her id in ``ids.json`` becomes ``[erased-<index>]``, her
``history.npz`` row empty; item-level files and the arrays stay, so each model still loads): every
version of the serving registry (``ServingRegistry.redact_users`` re-checksums the manifest and
re-pins ``champion.json`` and ``experiment.json``, so the champion keeps serving), and every model
folder of the local MLflow artifact root and of the training exports (``<home>/artifacts``). A remote
MLflow artifact store (``s3://``) is named in the report as not redacted. The day's training runs after
``erase``, so the next published model never saw the user.

Not covered here: the serving state and landing buffer (the API's ``DELETE /v1/users`` route).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
import re
import shutil
import sys
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config
from core.contract import USER_COL
from core.lake import Lake, commit_path, staging_path

SALT_ENV = "RECSYS_ERASURE_SALT"
REQUESTS = "requests"
DONE = "done"
AUDIT = "audit.jsonl"
REQUEST_FIELDS = ("request_id", "user_id", "requested_at", "requested_by")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
REDACTED = "[erased]"
RAW_COL = "raw"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".json", ".html", ".htm", ".txt", ".md", ".csv", ".log", ".yml", ".yaml")
QUARANTINE_MANIFEST = "QUARANTINE.json"


class ErasureError(RuntimeError):
    """No salt to hash the audited ids with, or request files that break the contract."""


@dataclass(frozen=True)
class ErasureRequest:
    request_id: str
    user_id: str
    requested_at: str
    requested_by: str
    path: Path

    @property
    def normalised(self) -> str:
        return normalise_id(self.user_id)


@dataclass
class Removed:
    """What was removed, per layer and per normalised user id."""

    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    files: Counter[str] = field(default_factory=Counter)

    def add(self, layer: str, user: str, n: int) -> None:
        if n:
            self.counts[layer][user] += n

    def of(self, user: str) -> dict[str, int]:
        return {layer: c[user] for layer, c in sorted(self.counts.items()) if c[user]}


def normalise_id(value: str) -> str:
    """An id as clean keeps it: surrounding whitespace removed, NFC."""
    return unicodedata.normalize("NFC", value.strip())


def user_hash(user_id: str, salt: str) -> str:
    """HMAC-SHA256 of the normalised id keyed with ``salt``: the audit log's stand-in for the id."""
    return hmac.new(salt.encode(), normalise_id(user_id).encode(), hashlib.sha256).hexdigest()


def erasure_root(lake: Lake) -> Path:
    return lake.root / "erasure"


def write_request(
    lake_root: str | os.PathLike[str],
    user_id: str,
    requested_by: str,
    request_id: str | None = None,
    now: dt.datetime | None = None,
) -> Path:
    """File an erasure request (the contract above), written whole and renamed into place."""
    if not normalise_id(user_id):
        raise ErasureError("an erasure request needs a non-empty user_id")
    request_id = request_id or uuid.uuid4().hex
    if not REQUEST_ID.match(request_id):
        raise ErasureError(f"request_id {request_id!r} must be 1-128 of A-Z a-z 0-9 . _ -")
    folder = erasure_root(Lake(lake_root)) / REQUESTS
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "request_id": request_id,
        "user_id": user_id,
        "requested_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
        "requested_by": requested_by,
    }
    target = folder / f"{request_id}.json"
    tmp = folder / f".{request_id}.json.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, target)
    return target


def read_requests(lake: Lake) -> tuple[list[ErasureRequest], list[dict[str, str]]]:
    """Pending requests, and the files that break the contract (named with the reason, never the id)."""
    folder = erasure_root(lake) / REQUESTS
    valid: list[ErasureRequest] = []
    invalid: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            invalid.append({"file": path.name, "error": f"not readable JSON ({type(exc).__name__})"})
            continue
        problem = _contract_problem(body)
        if problem:
            invalid.append({"file": path.name, "error": problem})
            continue
        valid.append(ErasureRequest(**{k: body[k] for k in REQUEST_FIELDS}, path=path))
    return valid, invalid


def _contract_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "not a JSON object"
    missing = [k for k in REQUEST_FIELDS if not isinstance(body.get(k), str) or not body[k].strip()]
    if missing:
        return f"missing or empty field(s) {missing} (each a non-empty string)"
    if not REQUEST_ID.match(body["request_id"]):
        return "request_id must be 1-128 of A-Z a-z 0-9 . _ -"
    try:
        stamp = dt.datetime.fromisoformat(body["requested_at"].replace("Z", "+00:00"))
    except ValueError:
        return "requested_at is not an ISO-8601 timestamp"
    if stamp.tzinfo is None:
        return "requested_at needs a UTC offset"
    return None


# ---------------------------------------------------------------------------------------------- JSON lines


def _open_text(path: Path, mode: str, gz: bool) -> Any:
    return gzip.open(path, mode + "t", encoding="utf-8") if gz else open(path, mode, encoding="utf-8")


def _line_user(line: str, quoted: dict[str, str]) -> str | None:
    """The erased user a line belongs to (normalised id), or None."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        user = record.get(USER_COL)
        if isinstance(user, str) and normalise_id(user) in quoted:
            return normalise_id(user)
        return None
    return next((user for user, token in quoted.items() if token in line), None)


def erase_jsonl(path: Path, quoted: dict[str, str], removed: Removed, layer: str) -> bool:
    """Drop the erased users' lines from one JSON-lines file (atomic rewrite; removed if nothing is left)."""
    gz = path.name.endswith(".gz")
    with _open_text(path, "r", gz) as fh:
        if not any(token in line or user in line for line in fh for user, token in quoted.items()):
            return False
    kept = 0
    tmp = path.with_name(f".{path.name}.erasure-tmp")
    try:
        with _open_text(path, "r", gz) as src, _open_text(tmp, "w", gz) as dst:
            for line in src:
                user = _line_user(line, quoted)
                if user is None:
                    dst.write(line)
                    kept += 1
                else:
                    removed.add(layer, user, 1)
        if kept:
            os.replace(tmp, path)
        else:
            tmp.unlink()
            path.unlink()
    finally:
        tmp.unlink(missing_ok=True)
    removed.files[layer] += 1
    return True


def _jsonl_files(lake: Lake) -> Iterator[tuple[str, Path]]:
    for path in sorted(lake.root.rglob("*")):
        rel = path.relative_to(lake.root)
        if not path.is_file() or rel.parts[0] == "erasure" or any(p.startswith(".") for p in rel.parts):
            continue
        if path.name.endswith(JSONL_SUFFIXES):
            yield rel.parts[0], path


def _refresh_quarantine_manifests(lake: Lake, rewritten: list[Path]) -> None:
    """Keep a quarantine manifest true to the files erasure rewrote (size, sha256) or removed."""
    by_drop: dict[Path, list[Path]] = defaultdict(list)
    for path in rewritten:
        rel = path.relative_to(lake.root)
        if rel.parts[0] == "quarantine" and len(rel.parts) > 2:
            by_drop[lake.root / "quarantine" / rel.parts[1]].append(path)
    for folder, paths in by_drop.items():
        manifest_path = folder / QUARANTINE_MANIFEST
        if not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text())
        touched = {p.relative_to(folder).as_posix() for p in paths}
        for entry in manifest.get("files", []):
            if entry.get("path") in touched:
                source = folder / entry["path"]
                entry["rewritten_by_erasure"] = True
                if source.is_file():
                    entry["bytes"] = source.stat().st_size
                    entry["sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()
                else:
                    entry["bytes"], entry["sha256"], entry["removed_by_erasure"] = 0, None, True
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------------------------- Parquet


def _parquet_tables(lake: Lake) -> list[tuple[Path, list[Path]]]:
    """Parquet tables of the lake as (base, leaves): a leaf holds the files (a table, or one ``k=v`` partition
    of the table at ``base``); hidden and staging folders aside."""
    leaves = set()
    for path in lake.root.rglob("*.parquet"):
        rel = path.relative_to(lake.root)
        if any(p.startswith((".", "_")) and p != "_rejected" for p in rel.parts[:-1]):
            continue
        leaves.add(path.parent)
    tables: dict[Path, list[Path]] = defaultdict(list)
    for leaf in sorted(leaves):
        partitioned = "=" in leaf.name and not leaf.name.startswith("split=")
        tables[leaf.parent if partitioned else leaf].append(leaf)
    return sorted(tables.items())


def _leaves_with_rows(
    spark: Any, base: Path, leaves: list[Path], normalised: list[str], given: list[str]
) -> list[Path]:
    """The leaves of one table that hold an erased user's row (one Spark pass over the whole table)."""
    from urllib.parse import unquote, urlparse

    from pyspark.sql import functions as F

    reader = spark.read.option("mergeSchema", "true")
    if leaves != [base]:
        reader = reader.option("basePath", str(base))
    frame = reader.parquet(*[str(leaf) for leaf in leaves])
    if USER_COL not in frame.columns and RAW_COL not in frame.columns:
        return []
    files = frame.where(_erased_rows(frame.columns, normalised, given)).select(F.col("_metadata.file_path")).distinct()
    hit = {Path(unquote(urlparse(r[0]).path)).parent.resolve() for r in files.collect()}
    return [leaf for leaf in leaves if leaf.resolve() in hit]


def _trimmed(col: Any) -> Any:
    """An id with surrounding (Unicode) whitespace removed, as clean trims it."""
    from pyspark.sql import functions as F

    return F.regexp_replace(col, r"^[\s\p{Z}]+|[\s\p{Z}]+$", "")


def _forms(normalised: list[str], given: list[str]) -> list[str]:
    """Every spelling of the erased ids a row may carry: as given, trimmed, NFC and NFD."""
    forms = set(given)
    for user in normalised:
        forms |= {user, unicodedata.normalize("NFD", user)}
    return sorted(forms)


def _erased_rows(columns: list[str], normalised: list[str], given: list[str]) -> Any:
    """Spark condition: the row belongs to an erased user (by ``user_id``, or by the ``raw`` line)."""
    from pyspark.sql import functions as F

    forms = _forms(normalised, given)
    condition = F.lit(False)
    if USER_COL in columns:
        condition = condition | F.col(USER_COL).isin(forms) | _trimmed(F.col(USER_COL)).isin(forms)
    if RAW_COL in columns:
        parsed = _trimmed(F.get_json_object(F.col(RAW_COL), f"$.{USER_COL}"))
        quoted = "|".join(r"\Q" + json.dumps(u)[1:-1] + r"\E" for u in forms)
        condition = condition | parsed.isin(forms) | F.col(RAW_COL).rlike(f'"({quoted})"')
    return F.coalesce(condition, F.lit(False))


def _erased_user(columns: list[str], normalised: list[str]) -> Any:
    """Which erased user an erased row belongs to (for a raw line that does not parse: the id it carries)."""
    from pyspark.sql import functions as F

    if USER_COL in columns:
        return _trimmed(F.col(USER_COL))
    parsed = _trimmed(F.get_json_object(F.col(RAW_COL), f"$.{USER_COL}"))
    carried = [F.when(F.col(RAW_COL).contains(json.dumps(u)), F.lit(u)) for u in normalised]
    return F.coalesce(F.when(parsed.isin(_forms(normalised, [])), parsed), *carried)


def erase_parquet(
    spark: Any, leaf: Path, normalised: list[str], given: list[str], removed: Removed, layer: str
) -> bool:
    """Rewrite one Parquet folder without the erased users' rows (only when it holds any)."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(leaf))
    columns = frame.columns
    if USER_COL not in columns and RAW_COL not in columns:
        return False
    erased = _erased_rows(columns, normalised, given)
    hits = (
        frame.where(erased)
        .groupBy(F.coalesce(_erased_user(columns, normalised), F.lit("?")).alias("u"))
        .count()
        .collect()
    )
    if not hits:
        return False
    data_files = [p for p in leaf.iterdir() if p.is_file() and p.name.endswith(".parquet")]
    staged = staging_path(leaf)
    try:
        frame.where(~erased).coalesce(max(1, len(data_files))).write.mode("error").parquet(str(staged))
        for sidecar in leaf.iterdir():
            if sidecar.is_file() and sidecar.suffix == ".json":
                shutil.copy2(sidecar, staged / sidecar.name)
        commit_path(staged, leaf)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    for row in hits:
        removed.add(layer, normalise_id(row["u"]), int(row["count"]))
    removed.files[layer] += 1
    return True


def _layer_of(lake: Lake, leaf: Path) -> str:
    parts = leaf.relative_to(lake.root).parts
    if parts[:2] == ("bronze", "_rejected"):
        return "bronze/_rejected"
    if parts[0] == "gold":
        return "gold"
    return "/".join(p for p in parts[:2] if not p.startswith("dt="))


# --------------------------------------------------------------------------------------------- text files


def _token(user: str) -> re.Pattern[str]:
    forms = sorted({user, json.dumps(user)[1:-1], _html_escape(user)}, key=len, reverse=True)
    alternatives = "|".join(re.escape(f) for f in forms)
    return re.compile(rf"(?<![A-Za-z0-9_.\-])(?:{alternatives})(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])")


def _html_escape(value: str) -> str:
    import html

    return html.escape(value, quote=True)


def _redact_json(value: Any, tokens: list[re.Pattern[str]]) -> Any:
    if isinstance(value, str):
        for token in tokens:
            value = token.sub(REDACTED, value)
        return value
    if isinstance(value, list):
        return [_redact_json(v, tokens) for v in value]
    if isinstance(value, dict):
        return {_redact_json(k, tokens): _redact_json(v, tokens) for k, v in value.items()}
    return value


def redact_file(path: Path, users: list[str], tokens: list[re.Pattern[str]]) -> int:
    """Replace the users' ids in one text file (JSON: string values only); return how many were replaced."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return 0
    if not any(u in text or _html_escape(u) in text or json.dumps(u)[1:-1] in text for u in users):
        return 0
    if path.suffix == ".json":
        try:
            new = json.dumps(_redact_json(json.loads(text), tokens), indent=2, sort_keys=False, ensure_ascii=False)
        except ValueError:
            new = text
            for token in tokens:
                new = token.sub(REDACTED, new)
    else:
        new = text
        for token in tokens:
            new = token.sub(REDACTED, new)
    if new == text:
        return 0
    tmp = path.with_name(f".{path.name}.erasure-tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return sum(len(token.findall(text)) for token in tokens) or 1


def _text_files(folder: Path, skip: Path | None = None) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if skip is not None and path.is_relative_to(skip):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and not path.name.endswith(JSONL_SUFFIXES):
            yield path


# ------------------------------------------------------------------------------------------------- job


def _salt(salt: str | None) -> str:
    value = salt if salt is not None else os.environ.get(SALT_ENV, "")
    if len(value) < 16:
        raise ErasureError(
            f"{SALT_ENV} is not set (or shorter than 16 characters): erasure requests are pending but their ids "
            "cannot be audited without a secret salt. Set it (make secrets generates one) and rerun."
        )
    return value


def _audit(lake: Lake, entries: list[dict[str, Any]]) -> None:
    path = erasure_root(lake) / AUDIT
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run(
    lake_root: str | os.PathLike[str],
    run_date: dt.date,
    cfg: Config | None,
    spark: Any,
    window_days: int | None = None,
    *,
    reports_dir: str | os.PathLike[str] | None = None,
    salt: str | None = None,
    now: dt.datetime | None = None,
    registry_uri: str | None = None,
    model_roots: list[str] | None = None,
) -> dict[str, Any]:
    """Carry out every pending erasure request (see the module docstring); return the report (no ids in it).

    ``reports_dir`` (default ``RECSYS_REPORTS_DIR``) is redacted too, and so are the trained models of
    ``registry_uri`` (default ``RECSYS_REGISTRY_URI``) and under ``model_roots`` (default: the MLflow
    artifact root and ``<home>/artifacts``; ``[]`` = none); ``salt`` defaults to
    ``RECSYS_ERASURE_SALT``. ``cfg`` and ``window_days`` are accepted for a uniform job signature:
    erasure covers every day of every layer. Raises ``ErasureError`` when a request file breaks the
    contract (after doing the valid ones) or when requests are pending and no salt is set.
    """
    from core.reports import write_report
    from core.settings import get_settings

    lake = Lake(lake_root)
    requests, invalid = read_requests(lake)
    report: dict[str, Any] = {"stage": "erase", "run_date": run_date.isoformat(), "requests": len(requests)}
    report["invalid_requests"] = invalid
    if requests:
        key = _salt(salt)
        settings = get_settings()
        reports = Path(reports_dir if reports_dir is not None else settings.reports)
        models = ModelStores(
            registry_uri if registry_uri is not None else settings.registry,
            model_roots if model_roots is not None else [settings.artifact_root, str(settings.home / "artifacts")],
        )
        report.update(_erase(lake, requests, spark, reports, key, now or dt.datetime.now(dt.UTC), run_date, models))
    write_report(lake.root, run_date, "erase", report)
    if invalid:
        names = ", ".join(f"{i['file']} ({i['error']})" for i in invalid)
        raise ErasureError(
            f"{len(invalid)} erasure request file(s) in {erasure_root(lake) / REQUESTS} break the contract "
            f"{{{', '.join(REQUEST_FIELDS)}}}: {names}. Fix or re-file them; the valid ones were carried out."
        )
    return report


def _erase(
    lake: Lake,
    requests: list[ErasureRequest],
    spark: Any,
    reports: Path,
    salt: str,
    now: dt.datetime,
    run_date: dt.date,
    models: ModelStores | None = None,
) -> dict[str, Any]:
    normalised = sorted({r.normalised for r in requests})
    given = sorted({r.user_id for r in requests} | set(normalised))
    quoted = {user: json.dumps(user) for user in normalised}
    removed = Removed()

    rewritten: list[Path] = []
    for layer, path in list(_jsonl_files(lake)):
        if erase_jsonl(path, quoted, removed, layer):
            rewritten.append(path)
    _refresh_quarantine_manifests(lake, rewritten)

    for base, leaves in _parquet_tables(lake):
        for leaf in _leaves_with_rows(spark, base, leaves, normalised, given):
            erase_parquet(spark, leaf, normalised, given, removed, _layer_of(lake, leaf))

    tokens = [_token(u) for u in given]
    redacted = 0
    for folder in (lake.root, reports):
        for path in _text_files(folder, skip=erasure_root(lake)):
            n = redact_file(path, given, tokens)
            if n:
                redacted += n
                removed.files["reports" if folder == reports or "reports" in path.parts else "other"] += 1

    erased_models = erase_models(models, given) if models is not None else {}

    done_at = now.isoformat()
    entries = []
    for request in requests:
        entry = {
            "request_id": request.request_id,
            "user_hash": user_hash(request.user_id, salt),
            "hash": "hmac-sha256(RECSYS_ERASURE_SALT, normalised user_id)",
            "requested_at": request.requested_at,
            "requested_by": request.requested_by,
            "erased_at": done_at,
            "run_date": run_date.isoformat(),
            "removed": removed.of(request.normalised),
        }
        entries.append(entry)
    _audit(lake, entries)
    done = erasure_root(lake) / DONE
    done.mkdir(parents=True, exist_ok=True)
    for request, entry in zip(requests, entries, strict=True):
        target = done / f"{request.request_id}.json"
        tmp = done / f".{request.request_id}.json.tmp"
        tmp.write_text(json.dumps({k: v for k, v in entry.items() if k != "hash"}, indent=2, sort_keys=True))
        os.replace(tmp, target)
        request.path.unlink(missing_ok=True)
    return {
        "done": [e["request_id"] for e in entries],
        "user_hashes": [e["user_hash"] for e in entries],
        "removed": {layer: sum(c.values()) for layer, c in sorted(removed.counts.items())},
        "files_rewritten": dict(sorted(removed.files.items())),
        "ids_redacted_in_text": redacted,
        "models": erased_models,
    }


@dataclass(frozen=True)
class ModelStores:
    """Where trained models live: the serving registry (path or ``s3://``) and local folders of model exports."""

    registry_uri: str
    roots: list[str] = field(default_factory=list)


def erase_models(stores: ModelStores, users: list[str]) -> dict[str, Any]:
    """Redact ``users`` from every exported model of ``stores`` (see the module docstring); counts, no ids."""
    from core.artifacts import redact_model_folders
    from core.registry import ServingRegistry
    from core.settings import get_settings

    out: dict[str, Any] = {}
    if stores.registry_uri:
        settings = get_settings()
        registry = ServingRegistry(
            stores.registry_uri,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            signing_key=settings.registry_signing_key or None,
        )
        out["registry"] = registry.redact_users(users)
    folders = slots = 0
    skipped = []
    for root in dict.fromkeys(stores.roots):
        if root.startswith("file://"):
            root = root.removeprefix("file://")
        elif "://" in root:
            skipped.append(root)
            continue
        f, n = redact_model_folders(root, users)
        folders, slots = folders + f, slots + n
    out["model_folders_redacted"] = folders
    out["model_folder_user_slots"] = slots
    if skipped:
        out["not_redacted_remote_stores"] = skipped
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m jobs.erasure`` carries out pending requests; ``--request USER_ID --by NAME`` files one first."""
    from core.config import load_config
    from core.settings import get_settings
    from jobs.spark import get_spark

    parser = argparse.ArgumentParser(prog="python -m jobs.erasure", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=None, help="lake root (default: RECSYS_LAKE_URI or <RECSYS_HOME>/lake)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=None, help="report date (default: today)")
    parser.add_argument("--reports-dir", default=None, help="default: RECSYS_REPORTS_DIR / <home>/reports")
    parser.add_argument("--request", metavar="USER_ID", help="file an erasure request for this user first")
    parser.add_argument("--by", default=os.environ.get("USER", "operator"), help="who asks (kept in the audit log)")
    parser.add_argument("--only-file", action="store_true", help="with --request: file it, leave it to the next run")
    args = parser.parse_args(argv)
    lake = args.lake or get_settings().lake
    try:
        if args.request:
            path = write_request(lake, args.request, args.by)
            print(f"erasure request {path.stem} filed in {path.parent}")
            if args.only_file:
                return 0
        run_date = args.run_date or dt.datetime.now(dt.UTC).date()
        report = run(lake, run_date, load_config(), get_spark("mercato-erasure"), reports_dir=args.reports_dir)
    except ErasureError as exc:
        print(f"erasure: {exc}", file=sys.stderr)
        return 2
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
