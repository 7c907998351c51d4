"""The in-memory training/evaluation dataset every model consumes.

``TrainData`` is built either from the gold partition the Spark jobs wrote (``from_gold``) or from
a pandas events frame with the same split rules (``from_events``, used by the offline CLI); a parity
test keeps the two identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.config import Config, SplitConfig, load_config
from core.contract import (
    ATTRIBUTES_COL,
    AVAILABLE_COL,
    BRAND_COL,
    CATEGORY_COL,
    EVENT_TYPE_COL,
    ITEM_COL,
    PRICE_COL,
    PROTOCOLS,
    TS_COL,
    USER_COL,
    WEIGHT_COL,
)


@dataclass
class ItemFeatures:
    """Content features per item index (all arrays have length ``n_items``).

    ``category``/``brand``/``price_band`` are integer codes with 0 meaning unknown;
    ``attributes`` is a CSR multi-hot matrix (n_items × n_attributes) of any further attribute ids
    (e.g. the Amazon files' attribute ids). ``category_names`` maps codes back to names
    (``category_names[0] == ""`` is the unknown category).
    """

    category: np.ndarray
    brand: np.ndarray
    price_band: np.ndarray
    attributes: sp.csr_matrix
    available: np.ndarray
    category_names: list[str] = field(default_factory=list)


@dataclass
class TrainData:
    """Indexed interactions of one split.

    * ``user_ids``/``item_ids``: external id per internal index (str arrays).
    * ``train``: CSR (n_users × n_items) of decayed, event-weighted interaction strength.
    * ``sequences``: per user index, the train item indices in time order (consecutive repeats
      collapsed), the input of sequential models and of history-based user encoders.
    * ``valid``/``test``: user index → array of target item indices.
    * ``item_features``: optional content features.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    sequences: list[np.ndarray]
    valid: dict[int, np.ndarray]
    test: dict[int, np.ndarray]
    item_features: ItemFeatures | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_popularity(self) -> np.ndarray:
        """Number of distinct train users per item."""
        return np.asarray((self.train > 0).sum(axis=0)).ravel().astype(np.float64)

    def history(self, user: int) -> np.ndarray:
        return self.sequences[user]

    # ---- builders -------------------------------------------------------------------------
    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        items: pd.DataFrame | None = None,
        protocol: str | None = None,
        cfg: Config | None = None,
        reference_ts: Any = None,
    ) -> TrainData:
        """Build from a contract events frame (``user_id, item_id, event_type, ts``) and an optional
        catalogue, aggregating and splitting exactly as the Spark features/split jobs do.

        ``reference_ts`` is the instant ages are measured to for the decay (the end of the data
        interval); default: the latest event. ``protocol`` defaults to ``cfg.split.protocol``.
        """
        cfg = cfg if cfg is not None else load_config()
        protocol = protocol or cfg.split.protocol
        interactions, meta = aggregate_interactions(
            events,
            weights=cfg.events.weights,
            half_life_days=cfg.events.half_life_days,
            reference_ts=reference_ts,
        )
        train, valid, test, split_meta = split_interactions(interactions, protocol, cfg.split)
        meta.update(split_meta)
        meta.update({"source": "events", "protocol": protocol})
        return assemble(train, valid, test, items, meta)

    @classmethod
    def from_gold(cls, gold_dir: str | os.PathLike[str], cfg: Config | None = None) -> TrainData:
        """Build from a gold partition (``gold/<run_date>/``) written by the Spark jobs, with pyarrow only.

        Reads ``split=train`` (weights, first interaction time), ``split=valid``, ``split=test`` and
        ``items``; sequences are rebuilt from ``split=train`` so they hold the full train history.
        """
        root = Path(gold_dir)
        missing = [t for t in ("split=train", "split=valid", "split=test") if not (root / t).exists()]
        if missing:
            raise FileNotFoundError(f"gold partition {root} lacks {missing}: run the features/split job for this date")
        train = _read_parquet(root / "split=train", [USER_COL, ITEM_COL, WEIGHT_COL, "first_ts"])
        valid = _read_parquet(root / "split=valid", [USER_COL, ITEM_COL, TS_COL]).rename(columns={TS_COL: "first_ts"})
        test = _read_parquet(root / "split=test", [USER_COL, ITEM_COL, TS_COL]).rename(columns={TS_COL: "first_ts"})
        items = _read_parquet(root / "items", None) if (root / "items").exists() else None
        protocol = cfg.split.protocol if cfg is not None else None
        meta: dict[str, object] = {"source": "gold", "gold_dir": str(root)}
        if protocol is not None:
            meta["protocol"] = protocol
        stamps = pd.concat([train["first_ts"], valid["first_ts"], test["first_ts"]])
        if len(stamps):
            meta["data_start"] = _utc(stamps).min().isoformat()
            meta["data_end"] = _utc(stamps).max().isoformat()
        meta.update({"n_train": len(train), "n_valid": len(valid), "n_test": len(test)})
        return assemble(train, valid, test, items, meta)


# ---- building blocks (pure, shared by both builders) -----------------------------------------


def _read_parquet(path: Path, columns: list[str] | None) -> pd.DataFrame:
    frame = pd.read_parquet(path, columns=columns)
    if columns is not None:
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ValueError(f"{path}: missing column(s) {absent}; the gold schema is in docs/ARCHITECTURE.md")
    return frame


def _utc(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        out = pd.to_datetime(values, utc=True)
    else:
        out = pd.to_datetime(values, utc=True, format="ISO8601")
    return out.dt.as_unit("ns")


def _ns(values: pd.Series) -> np.ndarray:
    return _utc(values).astype("int64").to_numpy()


def aggregate_interactions(
    events: pd.DataFrame,
    weights: dict[str, float],
    half_life_days: float,
    reference_ts: Any = None,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """One row per (user, item): ``weight`` = Σ w(event_type) · 0.5^(age_days / half_life_days),
    ``n_events``, ``first_ts``, ``last_ts``.

    Age is measured to ``reference_ts`` (default: the latest event); events after it count as age 0.
    Rows without user/item/ts or with an unknown event type are dropped and counted in the report.
    """
    required = (USER_COL, ITEM_COL, EVENT_TYPE_COL, TS_COL)
    absent = [c for c in required if c not in events.columns]
    if absent:
        raise ValueError(f"events frame lacks column(s) {absent}; expected at least {list(required)}")
    if half_life_days <= 0:
        raise ValueError(f"events.half_life_days must be positive, got {half_life_days}")
    frame = events.loc[:, list(required)]
    n_in = len(frame)
    incomplete = frame[[USER_COL, ITEM_COL, TS_COL]].isna().any(axis=1)
    known_type = frame[EVENT_TYPE_COL].isin(list(weights))
    dropped = {"missing_field": int(incomplete.sum()), "unknown_event_type": int((~incomplete & ~known_type).sum())}
    frame = frame.loc[~incomplete & known_type]
    ts = _utc(frame[TS_COL])
    ref = _utc(pd.Series([reference_ts])).iloc[0] if reference_ts is not None else ts.max()
    age_days = ((ref - ts).dt.total_seconds() / 86400.0).clip(lower=0.0).to_numpy()
    w = frame[EVENT_TYPE_COL].map(weights).to_numpy(dtype=np.float64) * np.power(0.5, age_days / half_life_days)
    work = pd.DataFrame(
        {
            USER_COL: frame[USER_COL].astype(str).to_numpy(),
            ITEM_COL: frame[ITEM_COL].astype(str).to_numpy(),
            WEIGHT_COL: w,
            TS_COL: ts.to_numpy(),
        }
    )
    agg = (
        work.groupby([USER_COL, ITEM_COL], sort=True)
        .agg(
            weight=(WEIGHT_COL, "sum"),
            n_events=(WEIGHT_COL, "size"),
            first_ts=(TS_COL, "min"),
            last_ts=(TS_COL, "max"),
        )
        .reset_index()
    )
    meta: dict[str, object] = {
        "n_events": n_in,
        "n_events_used": len(work),
        "dropped_events": dropped,
        "n_interactions": len(agg),
        "reference_ts": ref.isoformat() if len(work) else None,
        "data_start": ts.min().isoformat() if len(work) else None,
        "data_end": ts.max().isoformat() if len(work) else None,
    }
    return agg, meta


def split_interactions(
    interactions: pd.DataFrame, protocol: str, split: SplitConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, object]]:
    """Split aggregated interactions into train / valid / test (rules in docs/ARCHITECTURE.md).

    ``leave-one-out``: per user, items ordered by ``(first_ts, item_id)``; users with at least
    ``min_user_items`` items give their last to test and second-to-last to valid.
    ``temporal``: with ``range = t_max - t_min`` of ``first_ts``, test is ``first_ts > t_max -
    test_fraction·range``, valid the ``valid_fraction·range`` before it (lower bound exclusive), train the
    rest; valid/test rows whose user has no train item or whose item is not in train are dropped (counted).
    """
    frame = interactions.sort_values([USER_COL, "first_ts", ITEM_COL], kind="mergesort").reset_index(drop=True)
    meta: dict[str, object] = {}
    if protocol == "leave-one-out":
        min_items = split.min_user_items
        from_end = frame.groupby(USER_COL, sort=False).cumcount(ascending=False).to_numpy()
        n_user = frame.groupby(USER_COL, sort=False)[ITEM_COL].transform("size").to_numpy()
        eligible = n_user >= min_items
        is_test = eligible & (from_end == 0)
        is_valid = eligible & (from_end == 1)
        train = frame.loc[~is_test & ~is_valid]
        valid = frame.loc[is_valid]
        test = frame.loc[is_test]
        meta["n_users_train_only"] = int(frame.loc[~eligible, USER_COL].nunique())
    elif protocol == "temporal":
        first = _utc(frame["first_ts"])
        t_min, t_max = first.min(), first.max()
        span = t_max - t_min
        test_cut = t_max - span * split.temporal_test_fraction
        valid_cut = test_cut - span * split.temporal_valid_fraction
        is_test = (first > test_cut).to_numpy()
        is_valid = ((first > valid_cut) & (first <= test_cut)).to_numpy()
        train = frame.loc[~is_test & ~is_valid]
        train_users = pd.Index(train[USER_COL].unique())
        train_items = pd.Index(train[ITEM_COL].unique())
        dropped: dict[str, int] = {}
        kept = []
        for name, mask in (("valid", is_valid), ("test", is_test)):
            part = frame.loc[mask]
            ok = part[USER_COL].isin(train_users) & part[ITEM_COL].isin(train_items)
            dropped[name] = int((~ok).sum())
            kept.append(part.loc[ok])
        valid, test = kept
        meta["dropped_cold_targets"] = dropped
        meta["valid_cut"], meta["test_cut"] = valid_cut.isoformat(), test_cut.isoformat()
    else:
        raise ValueError(f"split.protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    meta.update({"n_train": len(train), "n_valid": len(valid), "n_test": len(test)})
    return train, valid, test, meta


def _codes(values: pd.Series, ids: np.ndarray) -> np.ndarray:
    return pd.Categorical(values.astype(str), categories=ids).codes.astype(np.int64)


def _group_by_user(users: np.ndarray, items: np.ndarray, order_ts: np.ndarray, n_users: int) -> list[np.ndarray]:
    order = np.lexsort((items, order_ts, users))
    counts = np.bincount(users, minlength=n_users)
    return np.split(items[order], np.cumsum(counts)[:-1])


def assemble(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    items: pd.DataFrame | None,
    meta: dict[str, object] | None = None,
) -> TrainData:
    """Index split frames (``user_id, item_id, first_ts`` [+ ``weight`` for train]) into a ``TrainData``.

    Users and items are indexed by their id string in sorted order (deterministic); the item index
    covers every item of train/valid/test plus the catalogue. Train rows without a ``weight`` count 1.
    """
    catalogue_ids = items[ITEM_COL].astype(str).to_numpy() if items is not None else np.array([], dtype=object)
    user_ids = np.unique(np.concatenate([f[USER_COL].astype(str).to_numpy() for f in (train, valid, test)]))
    item_ids = np.unique(
        np.concatenate([*(f[ITEM_COL].astype(str).to_numpy() for f in (train, valid, test)), catalogue_ids])
    )
    user_ids, item_ids = user_ids.astype(object), item_ids.astype(object)
    n_users, n_items = len(user_ids), len(item_ids)

    tu, ti = _codes(train[USER_COL], user_ids), _codes(train[ITEM_COL], item_ids)
    weight = train[WEIGHT_COL].to_numpy(np.float64) if WEIGHT_COL in train.columns else np.ones(len(train))
    matrix = sp.csr_matrix((weight, (tu, ti)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.sort_indices()
    sequences = _group_by_user(tu, ti, _ns(train["first_ts"]), n_users)

    def targets(frame: pd.DataFrame) -> dict[int, np.ndarray]:
        u, i = _codes(frame[USER_COL], user_ids), _codes(frame[ITEM_COL], item_ids)
        groups = _group_by_user(u, i, _ns(frame["first_ts"]), n_users)
        return {int(user): groups[user] for user in np.unique(u)}

    info = dict(meta or {})
    info.update({"n_users": n_users, "n_items": n_items})
    features, feature_meta = build_item_features(items, item_ids)
    info.update(feature_meta)
    return TrainData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=matrix,
        sequences=sequences,
        valid=targets(valid),
        test=targets(test),
        item_features=features,
        meta=info,
    )


def price_bands(prices: pd.Series, item_ids: pd.Series, n_bands: int = 5) -> np.ndarray:
    """Quintile band 1..n_bands per row (0 for a missing price), like Spark's
    ``ntile(n_bands) over (order by price, item_id)``: the first ``n % n_bands`` bands get one extra item."""
    price = pd.to_numeric(prices, errors="coerce").to_numpy(np.float64)
    bands = np.zeros(len(price), dtype=np.int64)
    known = np.flatnonzero(~np.isnan(price))
    if not len(known):
        return bands
    order = known[np.lexsort((item_ids.astype(str).to_numpy()[known], price[known]))]
    n = len(order)
    q, r = divmod(n, n_bands)
    pos = np.arange(n)
    big = r * (q + 1)
    bucket = np.where(pos < big, pos // (q + 1), r + (pos - big) // max(q, 1)) + 1
    bands[order] = bucket
    return bands


def _vocab_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    present = values.notna() & (values.astype(str).str.len() > 0)
    names = sorted(values[present].astype(str).unique())
    codes = np.zeros(len(values), dtype=np.int64)
    if names:
        codes[present.to_numpy()] = pd.Categorical(values[present].astype(str), categories=names).codes + 1
    return codes, names


def build_item_features(items: pd.DataFrame | None, item_ids: np.ndarray) -> tuple[ItemFeatures, dict[str, object]]:
    """Content features aligned to ``item_ids`` from a catalogue frame (any of ``category, brand, price,
    price_band, available, attributes``); items missing from it are unknown (code 0) and available.

    ``price_band`` is taken from the frame when present (gold), else computed with :func:`price_bands`.
    """
    n = len(item_ids)
    category = np.zeros(n, dtype=np.int64)
    brand = np.zeros(n, dtype=np.int64)
    band = np.zeros(n, dtype=np.int64)
    available = np.ones(n, dtype=bool)
    attributes = sp.csr_matrix((n, 0), dtype=np.float32)
    names: list[str] = []
    meta: dict[str, object] = {"n_catalogue_items": 0, "duplicate_catalogue_items": 0}
    if items is None or not len(items):
        return ItemFeatures(category, brand, band, attributes, available, [""]), meta
    if ITEM_COL not in items.columns:
        raise ValueError(f"items frame lacks {ITEM_COL!r}; columns are {list(items.columns)}")
    cat = items.assign(**{ITEM_COL: items[ITEM_COL].astype(str)})
    dup = cat[ITEM_COL].duplicated(keep="first")
    meta["duplicate_catalogue_items"] = int(dup.sum())
    cat = cat.loc[~dup].reset_index(drop=True)
    meta["n_catalogue_items"] = len(cat)
    rows = _codes(cat[ITEM_COL], item_ids)
    if CATEGORY_COL in cat.columns:
        codes, names = _vocab_codes(cat[CATEGORY_COL])
        category[rows] = codes
    if BRAND_COL in cat.columns:
        brand[rows] = _vocab_codes(cat[BRAND_COL])[0]
    if "price_band" in cat.columns:
        band[rows] = pd.to_numeric(cat["price_band"], errors="coerce").fillna(0).astype(np.int64).to_numpy()
    elif PRICE_COL in cat.columns:
        band[rows] = price_bands(cat[PRICE_COL], cat[ITEM_COL])
    if AVAILABLE_COL in cat.columns:
        available[rows] = cat[AVAILABLE_COL].fillna(True).astype(bool).to_numpy()
    if ATTRIBUTES_COL in cat.columns:
        lists = [
            [] if v is None or (isinstance(v, float) and np.isnan(v)) else [str(a) for a in v]
            for v in cat[ATTRIBUTES_COL]
        ]
        vocab = sorted({a for lst in lists for a in lst})
        index = {a: j for j, a in enumerate(vocab)}
        lengths = np.fromiter((len(lst) for lst in lists), dtype=np.int64, count=len(lists))
        cols = np.fromiter((index[a] for lst in lists for a in lst), dtype=np.int64, count=int(lengths.sum()))
        attributes = sp.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (np.repeat(rows, lengths), cols)), shape=(n, len(vocab))
        )
        attributes.sum_duplicates()
        attributes.data[:] = 1.0
        meta["n_attributes"] = len(vocab)
    return ItemFeatures(category, brand, band, attributes, available, ["", *names]), meta
