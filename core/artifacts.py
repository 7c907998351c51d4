"""The serving files that sit next to an exported model: their names, formats, one writer, one reader.

Training writes them (``training.train``), the scoring API reads them (``serving.scorer``), benchmarks
and tests write them through the same function; nobody else names or parses these files.

* ``fallback.json``: ``{"by": <how scored>, "overall": [{"item_id", "score"}, ...], "by_category":
  {category: [...]}}``, best first: the cold-start / unknown-user lists (``[item_id, score]`` pairs are
  accepted on read).
* ``history.npz``: ``indptr``/``indices``, a CSR over the model's user index: each known user's item
  indices in time order (what a sequential encoder reads and what ``exclude=seen`` removes).
* ``items.json``: a list in the model's item order of ``{"item_id", "category", "brand", "price",
  "available"}`` (null = unknown; ``available`` defaults to true). An object ``{item_id: {...}}`` is
  accepted on read.

Every file is optional on read: a model without them still serves (no fallback lists, no train
history, every item available with unknown category and price).

Erasure (:func:`redact_users`): the files of an exported model that hold user-level data are
``ids.json`` (``user_ids``, written by ``models.base.Recommender.export``) and ``history.npz``; an
erased user's id becomes ``[erased-<index>]`` (the index keeps every array aligned, so the model still
loads) and her history row becomes empty. Item-level files are left as they are.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FALLBACK_FILE = "fallback.json"
HISTORY_FILE = "history.npz"
ITEMS_FILE = "items.json"
SERVING_FILES = (FALLBACK_FILE, HISTORY_FILE, ITEMS_FILE)
#: The exported model's id file (``models.base``): ``{"user_ids": [...], "item_ids": [...]}``.
IDS_FILE = "ids.json"
#: Files of a model folder that hold user-level data (what :func:`redact_users` rewrites).
USER_FILES = (IDS_FILE, HISTORY_FILE)

#: Item metadata fields of ``items.json`` and their defaults when unknown.
ITEM_FIELDS: dict[str, Any] = {"category": None, "brand": None, "price": None, "available": True}


@dataclass(frozen=True)
class RankedItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class FallbackLists:
    """Popular items overall and per category, best first."""

    overall: list[RankedItem]
    by_category: dict[str, list[RankedItem]] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemRecord:
    """One row of ``items.json`` (``None`` = unknown)."""

    item_id: str
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    available: bool = True


@dataclass(frozen=True)
class ServingFiles:
    """What :func:`read_serving_files` found (``None`` for a file that is absent)."""

    fallback: FallbackLists | None
    histories: tuple[np.ndarray, np.ndarray] | None
    items: list[ItemRecord] | None


def histories_csr(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user item index arrays → CSR ``(indptr int64, indices int32)``."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if len(sequences) and lengths.sum():
        indices = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]).astype(np.int32)
    else:
        indices = np.zeros(0, dtype=np.int32)
    return indptr, indices


def write_serving_files(
    out: str | Path,
    *,
    fallback: Mapping[str, Any] | None = None,
    histories: Sequence[np.ndarray] | None = None,
    items: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
    """Write the given files into the exported model folder ``out``; returns the names written.

    ``fallback`` is the ``fallback.json`` object, ``histories`` one item index array per user index
    (time order), ``items`` the ``items.json`` rows in the model's item order.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if fallback is not None:
        _fallback_lists(dict(fallback), FALLBACK_FILE)  # refuse to write what the reader would refuse
        (folder / FALLBACK_FILE).write_text(json.dumps(dict(fallback)))
        written.append(FALLBACK_FILE)
    if histories is not None:
        indptr, indices = histories_csr(histories)
        with open(folder / HISTORY_FILE, "wb") as fh:
            np.savez(fh, indptr=indptr, indices=indices)
        written.append(HISTORY_FILE)
    if items is not None:
        rows = [_item_row(row) for row in items]
        (folder / ITEMS_FILE).write_text(json.dumps(rows))
        written.append(ITEMS_FILE)
    return written


def read_serving_files(src: str | Path) -> ServingFiles:
    """Parse the serving files of an artifact folder; a malformed file raises ``ValueError`` naming it."""
    folder = Path(src)
    fallback = None
    if (folder / FALLBACK_FILE).is_file():
        fallback = _fallback_lists(_read_json(folder / FALLBACK_FILE), str(folder / FALLBACK_FILE))
    histories = None
    if (folder / HISTORY_FILE).is_file():
        with np.load(folder / HISTORY_FILE, allow_pickle=False) as npz:
            missing = {"indptr", "indices"} - set(npz.files)
            if missing:
                raise ValueError(f"{folder / HISTORY_FILE}: lacks {sorted(missing)}; re-export the model")
            histories = (npz["indptr"].astype(np.int64), npz["indices"].astype(np.int64))
    items = None
    if (folder / ITEMS_FILE).is_file():
        items = _item_records(_read_json(folder / ITEMS_FILE), str(folder / ITEMS_FILE))
    return ServingFiles(fallback, histories, items)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-export the model") from None


def _fallback_lists(obj: Any, where: str) -> FallbackLists:
    if not isinstance(obj, dict) or "overall" not in obj:
        raise ValueError(f"{where}: expected an object with an 'overall' list of {{item_id, score}}")
    cats = obj.get("by_category", obj.get("per_category")) or {}
    if not isinstance(cats, dict):
        raise ValueError(f"{where}: by_category must be an object {{category: [...]}}")
    return FallbackLists(
        overall=_ranked(obj["overall"], f"{where}: overall"),
        by_category={str(c): _ranked(v, f"{where}: by_category[{c!r}]") for c, v in cats.items()},
    )


def _ranked(raw: Any, where: str) -> list[RankedItem]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list, got {type(raw).__name__}")
    out = []
    for n, entry in enumerate(raw):
        if isinstance(entry, dict) and "item_id" in entry:
            out.append(RankedItem(str(entry["item_id"]), float(entry.get("score", 0.0))))
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            out.append(RankedItem(str(entry[0]), float(entry[1])))
        else:
            raise ValueError(f"{where}[{n}] = {entry!r}: expected {{item_id, score}} or [item_id, score]")
    return out


def _item_records(obj: Any, where: str) -> list[ItemRecord]:
    if isinstance(obj, dict):
        rows: list[Any] = [dict(v, item_id=k) if isinstance(v, dict) else None for k, v in obj.items()]
    elif isinstance(obj, list):
        rows = [r if isinstance(r, dict) and "item_id" in r else None for r in obj]
    else:
        raise ValueError(f"{where}: expected a list of {{item_id, category, price, available}} objects")
    out = []
    for n, row in enumerate(rows):
        if row is None:
            raise ValueError(f"{where}: entry {n} is not an object with an item_id")
        price = row.get("price")
        category, brand = row.get("category"), row.get("brand")
        out.append(
            ItemRecord(
                item_id=str(row["item_id"]),
                category=None if category is None else str(category),
                brand=None if brand is None else str(brand),
                price=float(price) if isinstance(price, int | float) and math.isfinite(price) else None,
                available=row.get("available") is not False,
            )
        )
    return out


def _item_row(row: Mapping[str, Any]) -> dict[str, Any]:
    if "item_id" not in row:
        raise ValueError(f"items row {dict(row)!r} lacks item_id")
    out: dict[str, Any] = {"item_id": str(row["item_id"])}
    for name, default in ITEM_FIELDS.items():
        out[name] = _plain(row.get(name), default)
    return out


def _plain(value: Any, default: Any) -> Any:
    """A JSON-ready scalar: numpy scalars unwrapped, NaN/None/NA → ``default``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return default
    if type(value).__name__ == "NAType":  # pandas.NA without importing pandas
        return default
    return value


def erased_id(index: int) -> str:
    """The id an erased user's slot carries in ``ids.json``: her index only, nothing of the id."""
    return f"[erased-{index}]"


def redact_users(files: Mapping[str, bytes], users: Collection[str]) -> tuple[dict[str, bytes], int]:
    """Rewrite a model folder's user-level files without ``users``: ``(changed files, users redacted)``.

    ``files`` maps names to bytes (at least ``ids.json``; ``history.npz`` when present). The user's
    slot in ``user_ids`` becomes :func:`erased_id` and her ``history.npz`` row becomes empty, so the
    arrays stay aligned and the model still loads; nothing is returned when no user is present.
    """
    if IDS_FILE not in files:
        return {}, 0
    ids = json.loads(files[IDS_FILE])
    wanted = set(users)
    user_ids = [str(u) for u in ids.get("user_ids") or []]
    hits = [n for n, user in enumerate(user_ids) if user in wanted]
    if not hits:
        return {}, 0
    for n in hits:
        user_ids[n] = erased_id(n)
    changed = {IDS_FILE: json.dumps({**ids, "user_ids": user_ids}).encode()}
    if HISTORY_FILE in files:
        with np.load(io.BytesIO(files[HISTORY_FILE]), allow_pickle=False) as npz:
            indptr, indices = npz["indptr"].astype(np.int64), npz["indices"]
        rows = [indices[indptr[u] : indptr[u + 1]] for u in range(len(indptr) - 1)]
        for n in hits:
            if n < len(rows):
                rows[n] = rows[n][:0]
        new_indptr, new_indices = histories_csr(rows)
        buffer = io.BytesIO()
        np.savez(buffer, indptr=new_indptr, indices=new_indices.astype(indices.dtype, copy=False))
        changed[HISTORY_FILE] = buffer.getvalue()
    return changed, len(hits)


def model_folders(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Every exported model folder (``ids.json`` beside ``model.json``) under ``root``."""
    base = Path(root)
    if not base.is_dir():
        return
    for ids in sorted(base.rglob(IDS_FILE)):
        if ids.is_file() and (ids.parent / "model.json").is_file():
            yield ids.parent


def redact_model_folders(root: str | os.PathLike[str], users: Collection[str]) -> tuple[int, int]:
    """:func:`redact_users` on every model folder under ``root`` (training exports, MLflow artifacts), in
    place, each file replaced whole; returns ``(folders rewritten, user slots redacted)``."""
    folders = slots = 0
    for folder in model_folders(root):
        present = {name: (folder / name).read_bytes() for name in USER_FILES if (folder / name).is_file()}
        changed, n = redact_users(present, users)
        for name, data in changed.items():
            tmp = folder / f".{name}.erasure-tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
        folders += bool(changed)
        slots += n
    return folders, slots
