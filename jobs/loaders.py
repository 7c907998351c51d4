"""Public formats → the event/item contract, and ``land`` that writes them into the landing zone.

Every reader returns ``(events, items)`` pandas frames: events with ``core.contract.EVENT_COLUMNS``
(``ts`` tz-aware UTC), items with ``ITEM_COLUMNS``. What a reader converted or could not read is
counted in ``events.attrs["report"]`` (nothing is dropped silently); ``land`` copies it into its report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    EVENT_COLUMNS,
    EVENT_ID_COL,
    EVENT_TYPE_COL,
    EVENT_TYPES,
    FORMATS,
    ITEM_COL,
    ITEM_COLUMNS,
    PRICE_COL,
    QUANTITY_COL,
    REQUIRED_EVENT_COLUMNS,
    SESSION_COL,
    TS_COL,
    USER_COL,
)
from core.lake import Lake, commit_path, staging_path

READABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
S3REC_ANCHOR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S3REC_STEP = dt.timedelta(hours=1)
MAX_ROWS_PER_FILE = 1_000_000
_SIM_ALIASES = {"users": "n_users", "items": "n_items", "categories": "n_categories", "brands": "n_brands"}


# --------------------------------------------------------------------------- native contract


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, int]:
    """Rows of a JSONL file and the number of lines that were not JSON objects (skipped, counted)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                bad += 1
    return pd.DataFrame.from_records(rows), bad


def _read_table(path: Path) -> tuple[pd.DataFrame, int]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=True), 0
    if suffix == ".parquet":
        return pd.read_parquet(path), 0
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {READABLE_SUFFIXES}")


def _is_items_file(path: Path) -> bool:
    return path.stem.lower().startswith("items") or path.parent.name == "items"


def _as_id(values: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (a CSV/JSON artefact) lose their ``.0``; missing stays None."""
    if pd.api.types.is_float_dtype(values):
        out = values.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
    else:
        out = values.map(lambda v: None if v is None or (not isinstance(v, list | tuple) and pd.isna(v)) else str(v))
    return out.astype(object)


def _to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC: ISO strings (naive ones read as UTC) or epoch seconds/milliseconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values
        return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    numeric = pd.to_numeric(values, errors="coerce")
    if len(values) and numeric.notna().sum() == values.notna().sum():
        unit = "ms" if numeric.abs().max() > 1e11 else "s"
        return pd.to_datetime(numeric, unit=unit, utc=True)
    text = values.astype("string").str.strip()
    has_offset = text.str.contains(r"(?:[zZ]|[+-]\d{2}:?\d{2})$", regex=True).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    # Parsed apart: pandas applies an earlier row's offset to later naive strings when they are mixed.
    for mask in (has_offset, ~has_offset):
        if mask.any():
            out[mask] = pd.to_datetime(text[mask], utc=True, errors="coerce", format="ISO8601").astype(out.dtype)
    return out


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str, source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: {what} column {missing[0]!r} is missing (required: {list(columns)}; found: {list(frame.columns)}). "
            f"Rename the column holding it to {missing[0]!r}, or choose the matching --format."
        )


def normalize_events(frame: pd.DataFrame, source: str = "events") -> tuple[pd.DataFrame, dict[str, int]]:
    """Coerce a frame to ``EVENT_COLUMNS`` with typed columns; report what could not be typed."""
    _require(frame, REQUIRED_EVENT_COLUMNS, "event", source)
    out = pd.DataFrame(index=frame.index)
    report: dict[str, int] = {}
    for col in (EVENT_ID_COL, USER_COL, ITEM_COL, EVENT_TYPE_COL, SESSION_COL):
        out[col] = _as_id(frame[col]) if col in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    out[TS_COL] = _to_utc(frame[TS_COL])
    out[PRICE_COL] = pd.to_numeric(frame[PRICE_COL], errors="coerce") if PRICE_COL in frame.columns else np.nan
    out[PRICE_COL] = out[PRICE_COL].astype("float64")
    if QUANTITY_COL in frame.columns:
        out[QUANTITY_COL] = pd.to_numeric(frame[QUANTITY_COL], errors="coerce").round().astype("Int64")
    else:
        out[QUANTITY_COL] = pd.array([pd.NA] * len(frame), dtype="Int64")
    report["ts_unparseable"] = int((out[TS_COL].isna() & frame[TS_COL].notna()).sum())
    report["ts_missing"] = int(out[TS_COL].isna().sum())
    if PRICE_COL in frame.columns:
        report["price_unparseable"] = int((out[PRICE_COL].isna() & frame[PRICE_COL].notna()).sum())
    report["unknown_event_type"] = int((~out[EVENT_TYPE_COL].isin(EVENT_TYPES)).sum())
    return out[list(EVENT_COLUMNS)].reset_index(drop=True), report


def _as_attributes(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return [t for t in text.split("|") if t]


def _as_bool(value: Any) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "n", "f", "")
    return bool(value)


def normalize_items(frame: pd.DataFrame, source: str = "items") -> pd.DataFrame:
    """Coerce a catalogue frame to ``ITEM_COLUMNS`` (missing ``available`` means available)."""
    _require(frame, (ITEM_COL,), "item", source)
    out = pd.DataFrame(index=frame.index)
    out[ITEM_COL] = _as_id(frame[ITEM_COL])
    for col in ("category", "brand", "title"):
        out[col] = _as_id(frame[col]) if col in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    out[PRICE_COL] = pd.to_numeric(frame[PRICE_COL], errors="coerce") if PRICE_COL in frame.columns else np.nan
    out[PRICE_COL] = out[PRICE_COL].astype("float64")
    out[AVAILABLE_COL] = frame[AVAILABLE_COL].map(_as_bool) if AVAILABLE_COL in frame.columns else True
    out[AVAILABLE_COL] = out[AVAILABLE_COL].astype(bool)
    if ATTRIBUTES_COL in frame.columns:
        out[ATTRIBUTES_COL] = frame[ATTRIBUTES_COL].map(_as_attributes)
    else:
        out[ATTRIBUTES_COL] = [[] for _ in range(len(frame))]
    return out[list(ITEM_COLUMNS)].reset_index(drop=True)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder (give a CSV/JSONL/Parquet file or a folder of them)")
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES and not p.name.startswith(".")
    )
    if not found:
        raise FileNotFoundError(f"{path}: no {'/'.join(READABLE_SUFFIXES)} files in this folder")
    return found


def read_events(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Native contract from a CSV/JSONL/Parquet file or a folder of them (searched recursively).

    A file named ``items.*`` (or any file in an ``items/`` folder) is the catalogue; the rest are events.
    """
    files = _files(Path(path))
    event_parts: list[tuple[Path, pd.DataFrame]] = []
    item_parts: list[tuple[Path, pd.DataFrame]] = []
    bad_lines = 0
    for f in files:
        frame, bad = _read_table(f)
        bad_lines += bad
        (item_parts if _is_items_file(f) else event_parts).append((f, frame))
    if not event_parts:
        raise ValueError(f"{path}: only catalogue files found; add event files (any name not starting with 'items')")
    normalized = []
    report: dict[str, int] = {"files": len(event_parts), "bad_lines": bad_lines}
    for f, frame in event_parts:
        ev, rep = normalize_events(frame, str(f))
        normalized.append(ev)
        for k, v in rep.items():
            report[k] = report.get(k, 0) + v
    events = pd.concat(normalized, ignore_index=True) if len(normalized) > 1 else normalized[0]
    events.attrs["report"] = report
    items = None
    if item_parts:
        items = pd.concat([normalize_items(fr, str(f)) for f, fr in item_parts], ignore_index=True)
    return events, items


# --------------------------------------------------------------------------- S3-Rec (Amazon Beauty)


def _s3rec_files(path: Path) -> tuple[Path, Path | None]:
    """The sequence file and its own ``<Name>_item2attributes.json`` (if present).

    A file path means that file; a folder must hold exactly one ``<Name>.txt`` (pass the file when it
    holds several, e.g. ``Beauty.txt`` and ``Sports.txt``).
    """
    if path.is_file():
        seq = path
    else:
        seqs = sorted(p for p in path.glob("*.txt") if not p.name.lower().startswith("readme"))
        if len(seqs) != 1:
            names = [p.name for p in seqs]
            hint = f"; pass one of them as the path, e.g. {path / names[0]}" if len(seqs) > 1 else ""
            raise ValueError(
                f"{path}: expected exactly one '<Name>.txt' sequence file (user item1 item2 ...), found {names}{hint}"
            )
        seq = seqs[0]
    attrs = seq.with_name(f"{seq.stem}_item2attributes.json")
    return seq, (attrs if attrs.is_file() else None)


def read_s3rec(folder: str | Path, anchor: dt.datetime = S3REC_ANCHOR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """S3-Rec files (``<Name>.txt`` + ``<Name>_item2attributes.json``) → purchase events and items.

    The files carry no timestamps: the item at position ``i`` of a user's line gets ``anchor + i``
    × ``S3REC_STEP`` (one hour), which keeps each user's order (ties impossible) and spaces the
    events like a shopper's, not a bot's (the clean job removes users with bursts of dozens of events
    a minute; seconds apart, every long line would look like one). Event ids are ``s3rec-<user>-<i>``.
    Items come from the attribute file (``attributes`` = attribute-id strings, category/brand/price
    unknown, available); items seen in events but absent from it get no attributes and are counted.
    """
    if anchor.tzinfo is None:
        raise ValueError("read_s3rec: anchor must be tz-aware (e.g. datetime(2026, 1, 1, tzinfo=UTC))")
    seq_path, attr_path = _s3rec_files(Path(folder))
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    bad_lines = 0
    with open(seq_path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                bad_lines += int(bool(parts))
                continue
            users.extend([parts[0]] * (len(parts) - 1))
            items.extend(parts[1:])
            positions.extend(range(len(parts) - 1))
    pos = np.asarray(positions, dtype=np.int64)
    user_arr = np.asarray(users, dtype=object)
    anchor_utc = pd.Timestamp(anchor).tz_convert("UTC")
    events = pd.DataFrame(
        {
            EVENT_ID_COL: ("s3rec-" + pd.Series(user_arr) + "-" + pd.Series(pos).astype(str)).astype(object),
            USER_COL: user_arr,
            ITEM_COL: np.asarray(items, dtype=object),
            EVENT_TYPE_COL: "purchase",
            TS_COL: anchor_utc + pd.to_timedelta(pos * S3REC_STEP.total_seconds(), unit="s"),
            SESSION_COL: pd.Series([None] * len(pos), dtype=object),
            PRICE_COL: np.nan,
            QUANTITY_COL: pd.array(np.ones(len(pos), dtype=np.int64), dtype="Int64"),
        }
    )[list(EVENT_COLUMNS)]

    attributes: dict[str, list[Any]] = {}
    if attr_path is not None:
        with open(attr_path, encoding="utf-8") as fh:
            attributes = json.load(fh)
    item_ids = sorted(set(attributes) | set(events[ITEM_COL].unique()), key=lambda s: (len(s), s))
    without = sum(1 for i in item_ids if i not in attributes)
    catalogue = pd.DataFrame(
        {
            ITEM_COL: pd.Series(item_ids, dtype=object),
            "category": pd.Series([None] * len(item_ids), dtype=object),
            "brand": pd.Series([None] * len(item_ids), dtype=object),
            PRICE_COL: np.nan,
            AVAILABLE_COL: True,
            "title": pd.Series([None] * len(item_ids), dtype=object),
            ATTRIBUTES_COL: [[str(a) for a in attributes.get(i, [])] for i in item_ids],
        }
    )[list(ITEM_COLUMNS)]
    events.attrs["report"] = {
        "bad_lines": bad_lines,
        "synthetic_ts": len(events),
        "items_without_attributes": without,
        "items_only_in_catalogue": len(set(attributes) - set(events[ITEM_COL].unique())),
    }
    return events, catalogue


# --------------------------------------------------------------------------- Diginetica


def _diginetica_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*item-views*.csv"))
    if not found:
        raise FileNotFoundError(f"{path}: no '*item-views*.csv' file (Diginetica train-item-views, ';'-separated)")
    return found[0]


def read_diginetica(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Diginetica ``train-item-views.csv`` (``session_id;user_id;item_id;timeframe;eventdate``) → views.

    ``ts`` = ``eventdate`` (UTC midnight) + ``timeframe`` milliseconds; a missing user (``NA``)
    becomes ``anon-<session_id>`` (counted as ``anonymous_users_filled``). Event ids are
    ``diginetica-<row>`` (the row's position in the file). Items: every item seen, no metadata.
    """
    file = _diginetica_file(Path(path))
    raw = pd.read_csv(file, sep=";", dtype=str, keep_default_na=False)
    _require(raw, ("session_id", "user_id", "item_id", "timeframe", "eventdate"), "diginetica", str(file))
    anon = raw["user_id"].str.strip().isin(("", "NA", "NaN", "null"))
    users = raw["user_id"].where(~anon, "anon-" + raw["session_id"])
    timeframe = pd.to_numeric(raw["timeframe"], errors="coerce")
    day = pd.to_datetime(raw["eventdate"], format="%Y-%m-%d", errors="coerce", utc=True)
    ts = day + pd.to_timedelta(timeframe.fillna(0), unit="ms")
    ts = ts.where(day.notna())
    events = pd.DataFrame(
        {
            EVENT_ID_COL: ("diginetica-" + pd.Series(np.arange(len(raw))).astype(str)).astype(object),
            USER_COL: users.astype(object),
            ITEM_COL: raw["item_id"].astype(object),
            EVENT_TYPE_COL: "view",
            TS_COL: ts,
            SESSION_COL: raw["session_id"].astype(object),
            PRICE_COL: np.nan,
            QUANTITY_COL: pd.array([pd.NA] * len(raw), dtype="Int64"),
        }
    )[list(EVENT_COLUMNS)]
    item_ids = sorted(events[ITEM_COL].unique(), key=lambda s: (len(s), s))
    catalogue = normalize_items(pd.DataFrame({ITEM_COL: item_ids}), str(file))
    events.attrs["report"] = {
        "anonymous_users_filled": int(anon.sum()),
        "anonymous_sessions": int(raw.loc[anon, "session_id"].nunique()),
        "timeframe_missing": int(timeframe.isna().sum()),
        "ts_missing": int(ts.isna().sum()),
    }
    return events, catalogue


# --------------------------------------------------------------------------- landing


def read_source(source: str | Path, fmt: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Dispatch to the reader of ``fmt`` (``events``, ``s3rec`` or ``diginetica``)."""
    if fmt == "events":
        return read_events(source)
    if fmt == "s3rec":
        return read_s3rec(source)
    if fmt == "diginetica":
        return read_diginetica(source)
    raise ValueError(f"format {fmt!r} is unknown; use one of {FORMATS}")


def _iso_utc(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23) + "Z"


def _write_jsonl(frame: pd.DataFrame, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(target)
    frame.to_json(staged, orient="records", lines=True, force_ascii=False, date_format="iso")
    commit_path(staged, target)


def write_landing(events: pd.DataFrame, items: pd.DataFrame | None, lake_root: str | Path, fmt: str) -> dict[str, Any]:
    """Write events as ``landing/events/dt=<UTC day of ts>/<fmt>-<part>.jsonl`` and the catalogue.

    Files of this ``fmt`` from an earlier landing are replaced (same names) or, within the days this
    landing spans, removed (days or parts no longer present), so re-landing a source never
    duplicates it; days before or after its span are left alone, so a daily drop never deletes the
    days landed before it. Rows without a
    timestamp cannot be placed in a day: they are dropped and counted as ``dropped_no_ts``.
    """
    lake = Lake(lake_root)
    has_ts = events[TS_COL].notna()
    rows = events.loc[has_ts].copy()
    day = rows[TS_COL].dt.strftime("%Y-%m-%d")
    rows[TS_COL] = _iso_utc(rows[TS_COL])
    rows[QUANTITY_COL] = rows[QUANTITY_COL].astype(object).where(rows[QUANTITY_COL].notna(), None)
    rows_per_day: dict[str, int] = {}
    files: list[str] = []
    written: set[Path] = set()
    for d, part in rows.groupby(day.to_numpy(), sort=True):
        folder = lake.landing_events(dt.date.fromisoformat(str(d)))
        for n, lo in enumerate(range(0, len(part), MAX_ROWS_PER_FILE)):
            target = folder / f"{fmt}-{n}.jsonl"
            _write_jsonl(part.iloc[lo : lo + MAX_ROWS_PER_FILE], target)
            written.add(target)
            files.append(str(target))
        rows_per_day[str(d)] = len(part)
    first, last = (min(rows_per_day), max(rows_per_day)) if rows_per_day else ("", "")
    stale = [
        p
        for p in lake.landing_events().glob(f"dt=*/{fmt}-*.jsonl")
        if p not in written and first <= p.parent.name.removeprefix("dt=") <= last
    ]
    for p in stale:
        p.unlink()
    report: dict[str, Any] = {
        "source_format": fmt,
        "rows_per_day": rows_per_day,
        "n_events": len(rows),
        "start": min(rows_per_day) if rows_per_day else None,
        "end": max(rows_per_day) if rows_per_day else None,
        "n_users": int(rows[USER_COL].nunique()),
        "n_items": int(rows[ITEM_COL].nunique()),
        "dropped_no_ts": int((~has_ts).sum()),
        "stale_files_removed": len(stale),
        "files": files,
    }
    if items is not None:
        target = lake.landing_items() / "items.jsonl"
        _write_jsonl(items, target)
        report["n_catalogue_items"] = len(items)
        report["items_file"] = str(target)
    return report


def land(
    source: str | Path | None,
    fmt: str,
    lake_root: str | Path,
    run_date: dt.date,
    window_days: int | None = None,
    **sim_opts: Any,
) -> dict[str, Any]:
    """Put a data source into the landing zone and report what was written.

    ``fmt="simulated"`` runs the simulator with ``end_date=run_date`` (``sim_opts``: ``SimConfig``
    fields, or ``users``/``items``/``categories``/``brands``); other formats read ``source`` and write
    it partitioned by event day. The report has ``rows_per_day``, ``start``, ``end``, ``n_users``,
    ``n_items``, the reader's conversion counts under ``converted`` and, given ``window_days``, what
    of the data the run's window ``[run_date - window_days + 1, run_date]`` leaves out (``window``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; use one of {FORMATS}")
    if fmt == "simulated":
        from jobs.simulator import SimConfig, simulate_to_landing

        opts = {_SIM_ALIASES.get(k, k): v for k, v in sim_opts.items()}
        unknown = set(opts) - set(SimConfig.__dataclass_fields__) | ({"end_date"} & set(opts))
        if unknown:
            raise ValueError(
                f"land(simulated): unknown option(s) {sorted(unknown)}; use SimConfig fields except end_date (run_date sets it)"
            )
        summary = simulate_to_landing(SimConfig(end_date=run_date, **opts), lake_root)
        if window_days is not None:
            summary["window"] = window_coverage(summary["rows_per_day"], run_date, window_days)
        return summary
    if sim_opts:
        raise ValueError(f"land({fmt}): options {sorted(sim_opts)} only apply to format 'simulated'")
    if source is None:
        raise ValueError(f"land({fmt}): source is required (a path to the data); only 'simulated' needs none")
    events, items = read_source(source, fmt)
    report = write_landing(events, items, lake_root, fmt)
    report["source"] = str(source)
    report["run_date"] = run_date.isoformat()
    report["converted"] = dict(events.attrs.get("report", {}))
    if window_days is not None:
        report["window"] = window_coverage(report["rows_per_day"], run_date, window_days, events)
    return report


def window_coverage(
    rows_per_day: dict[str, int], run_date: dt.date, window_days: int, events: pd.DataFrame | None = None
) -> dict[str, Any]:
    """What a run's window ``[run_date - window_days + 1, run_date]`` keeps of the landed data.

    Counts events before the window and after ``run_date``; with ``events``, also the users and items
    that only appear outside it (a run never sees them). ``days_to_cover_all`` is the window that would
    take every landed day up to ``run_date``.
    """
    start = run_date - dt.timedelta(days=window_days - 1)
    days = {dt.date.fromisoformat(d): n for d, n in rows_per_day.items()}
    out: dict[str, Any] = {
        "start": start.isoformat(),
        "end": run_date.isoformat(),
        "days": window_days,
        "events_in": sum(n for d, n in days.items() if start <= d <= run_date),
        "events_before": sum(n for d, n in days.items() if d < start),
        "events_after": sum(n for d, n in days.items() if d > run_date),
        "days_to_cover_all": (run_date - min(days)).days + 1 if days and min(days) <= run_date else window_days,
    }
    timed = events.loc[events[TS_COL].notna()] if events is not None else None
    if timed is not None and len(timed):
        day = timed[TS_COL].dt.tz_convert("UTC").dt.date
        inside = (day >= start) & (day <= run_date)
        for col, name in ((USER_COL, "users"), (ITEM_COL, "items")):
            outside_only = ~timed.loc[~inside, col].drop_duplicates().isin(set(timed.loc[inside, col]))
            out[f"{name}_only_outside"] = int(outside_only.sum())
    return out


def landing_coverage(lake_root: str | Path, run_date: dt.date, window_days: int) -> dict[str, Any]:
    """The landing zone as a run's window sees it, from file sizes only (nothing is read).

    ``days_in``/``bytes_in``: landing days inside ``[run_date - window_days + 1, run_date]``;
    ``days_before``/``bytes_before`` and ``days_after``: landing days the window leaves out.
    """
    lake = Lake(lake_root)
    start = run_date - dt.timedelta(days=window_days - 1)
    out: dict[str, Any] = {"start": start.isoformat(), "end": run_date.isoformat(), "days": window_days}
    sizes = {
        day: sum(f.stat().st_size for f in lake.landing_events(day).glob("*.jsonl*"))
        for day in Lake.partition_days(lake.landing_events())
    }
    for name, keep in (
        ("in", lambda d: start <= d <= run_date),
        ("before", lambda d: d < start),
        ("after", lambda d: d > run_date),
    ):
        chosen = [d for d in sizes if keep(d)]
        out[f"days_{name}"] = len(chosen)
        out[f"bytes_{name}"] = sum(sizes[d] for d in chosen)
    out["days_to_cover_all"] = (run_date - min(sizes)).days + 1 if sizes and min(sizes) <= run_date else window_days
    return out


def data_end_date(source: str | Path | None, fmt: str) -> dt.date:
    """UTC date of the last event in a source, read cheaply (only the time columns).

    For ``simulated`` the data ends wherever it is told to: today's UTC date. For a folder of native
    files with ``dt=`` partitions, the last partition's day.
    """
    if fmt == "simulated":
        return dt.datetime.now(dt.UTC).date()
    if source is None:
        raise ValueError(f"data_end_date({fmt}): source is required")
    path = Path(source)
    if fmt == "s3rec":
        seq_path, _ = _s3rec_files(path)
        with open(seq_path, encoding="utf-8") as fh:
            longest = max((len(line.split()) - 1 for line in fh), default=0)
        return (S3REC_ANCHOR + S3REC_STEP * max(longest - 1, 0)).date()
    if fmt == "diginetica":
        file = _diginetica_file(path)
        raw = pd.read_csv(file, sep=";", usecols=["timeframe", "eventdate"], dtype=str)
        ts = pd.to_datetime(raw["eventdate"], format="%Y-%m-%d", utc=True, errors="coerce") + pd.to_timedelta(
            pd.to_numeric(raw["timeframe"], errors="coerce").fillna(0), unit="ms"
        )
        return ts.max().date()
    if fmt == "events":
        days = Lake.partition_days(path) if path.is_dir() else []
        if days:
            return days[-1]
        last: pd.Timestamp | None = None
        for f in _files(path):
            if _is_items_file(f):
                continue
            if f.suffix.lower() == ".parquet":
                frame = pd.read_parquet(f, columns=[TS_COL])
            elif f.suffix.lower() == ".csv":
                frame = pd.read_csv(f, usecols=[TS_COL], dtype=str)
            else:
                frame, _ = _read_jsonl(f)
            _require(frame, (TS_COL,), "event", str(f))
            m = _to_utc(frame[TS_COL]).max()
            if pd.notna(m) and (last is None or m > last):
                last = m
        if last is None:
            raise ValueError(f"{source}: no event has a readable '{TS_COL}'")
        return last.date()
    raise ValueError(f"format {fmt!r} is unknown; use one of {FORMATS}")
