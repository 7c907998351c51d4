"""Great Expectations suites for every gated table, defined in code.

Each builder is a pure function: thresholds come in as arguments (the runner reads them from
``config/recsys.toml`` ``[validation]``), so a suite is reproducible from the config in force.
Every expectation carries a ``description`` that says what must hold and why; the runner shows it
as the "expected" line of a failure report and Data Docs renders it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe

from core.config import ValidationConfig
from core.contract import (
    AVAILABLE_COL,
    EVENT_COLUMNS,
    EVENT_ID_COL,
    EVENT_TYPE_COL,
    EVENT_TYPES,
    ITEM_COL,
    PRICE_COL,
    QUANTITY_COL,
    REQUIRED_EVENT_COLUMNS,
    TS_COL,
    USER_COL,
    WEIGHT_COL,
)

#: Derived column of the raw events frame: the item id where the catalogue does not list it, else null.
UNKNOWN_ITEM_COL = "unknown_item"
#: Landing file a bronze row came from (relative to the lake), when ingest records it.
SOURCE_FILE_COL = "source_file"

#: Columns of the derived split-check frame (see ``expectations.runner.split_check_frame``).
SPLIT_COL = "split"
LEAKED_PAIR_COL = "leaked_pair"
USER_WITHOUT_TRAIN_COL = "user_without_train"

#: Share of silver events that must carry a price when the config does not say
#: (clean keeps a null price when the catalogue has none for the item).
DEFAULT_CLEAN_MIN_PRICE_FRACTION = 0.95

#: Suite names per table, the unit the runner validates.
RAW_EVENTS = "raw_events"
RAW_DAYS = "raw_days"
CLEAN_EVENTS = "clean_events"
ITEMS = "items"
GOLD_INTERACTIONS = "features_interactions"
GOLD_USERS = "features_users"
GOLD_ITEMS = "features_items"
GOLD_TRAIN = "features_split_train"
GOLD_SPLIT_CHECKS = "features_split_checks"


def _suite(name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
    """A suite holding exactly ``expectations`` (GX only logs an invalid one; here it is an error)."""
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    if len(suite.expectations) != len(expectations):
        raise ValueError(f"suite {name}: {len(expectations) - len(suite.expectations)} expectation(s) are invalid")
    return suite


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.4g}%"


def _not_null(column: str, why: str, mostly: float = 1.0) -> gxe.Expectation:
    share = "never null" if mostly >= 1.0 else f"non-null on at least {_pct(mostly)} of rows"
    return gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly, description=f"{column} is {share} ({why})")


def _min_value(column: str, minimum: float, why: str, strict: bool = False) -> gxe.Expectation:
    op = ">" if strict else "≥"
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=minimum,
        strict_min=strict,
        description=f"{column} {op} {minimum:g} wherever present ({why})",
    )


def _unique(column: str, why: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeUnique(column=column, description=f"{column} is unique ({why})")


def _fraction(name: str, value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"validation.{name} must be a number in [0, 1], got {value!r}: fix config/recsys.toml"
        ) from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"validation.{name} must be in [0, 1], got {fraction}: fix config/recsys.toml")
    return fraction


def raw_events_suite(
    unknown_event_type_max_fraction: float,
    missing_price_max_fraction: float,
    event_types: tuple[str, ...] = EVENT_TYPES,
    prices_expected: bool = True,
    ts_bounds: tuple[dt.datetime, dt.datetime] | None = None,
    unknown_item_max_fraction: float | None = None,
) -> gx.ExpectationSuite:
    """Bronze events of the run window: the contract's hard rules, with tolerance only for what clean repairs.

    ``prices_expected=False`` (a feed that carries no prices at all, e.g. review or view logs; price is
    optional in the contract) drops the price-completeness expectation; negative prices still fail.
    ``ts_bounds`` (floor, latest acceptable instant) holds every timestamp inside them;
    ``unknown_item_max_fraction`` (given when there is a catalogue) bounds the share of events on items
    it does not list (the frame then carries ``unknown_item``).
    """
    unknown = _fraction("raw_unknown_event_type_max_fraction", unknown_event_type_max_fraction)
    missing_price = _fraction("raw_missing_price_max_fraction", missing_price_max_fraction)
    expectations: list[gxe.Expectation] = []
    suite_name = RAW_EVENTS
    expectations.append(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(EVENT_COLUMNS),
            exact_match=False,
            description=f"bronze events carry every contract column: {', '.join(EVENT_COLUMNS)}",
        )
    )
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="the run window holds at least one event")
    )
    for column in (USER_COL, ITEM_COL, TS_COL):
        expectations.append(_not_null(column, "the contract requires it on every event"))
    expectations.append(
        _not_null(EVENT_TYPE_COL, "clean drops the rest; raw_unknown_event_type_max_fraction", mostly=1.0 - unknown)
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=EVENT_TYPE_COL,
            value_set=list(event_types),
            mostly=1.0 - unknown,
            description=(
                f"{EVENT_TYPE_COL} is one of {', '.join(event_types)} on at least {_pct(1.0 - unknown)} of rows "
                "(clean drops the rest; raw_unknown_event_type_max_fraction)"
            ),
        )
    )
    expectations.append(_min_value(PRICE_COL, 0, "a negative price is a broken feed, never tolerated"))
    if prices_expected:
        expectations.append(
            _not_null(
                PRICE_COL, "clean fills the rest from the catalogue; raw_missing_price_max_fraction", 1 - missing_price
            )
        )
    expectations.append(_min_value(QUANTITY_COL, 1, "an event moves at least one unit"))
    if ts_bounds is not None:
        floor, latest = ts_bounds
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=TS_COL,
                min_value=floor,
                max_value=latest,
                description=(
                    f"{TS_COL} lies in {floor:%Y-%m-%d} .. {latest:%Y-%m-%d %H:%M} UTC: nothing before "
                    "validation.ts_floor, nothing later than the run date's end + validation.ts_future_tolerance_hours "
                    "(a broken clock or unit)"
                ),
            )
        )
    if unknown_item_max_fraction is not None:
        unknown_items = _fraction("unknown_item_max_fraction", unknown_item_max_fraction)
        expectations.append(
            gxe.ExpectColumnValuesToBeNull(
                column=UNKNOWN_ITEM_COL,
                mostly=1.0 - unknown_items,
                description=(
                    f"at least {_pct(1.0 - unknown_items)} of events are on items the catalogue lists "
                    f"({UNKNOWN_ITEM_COL} = the item id of the others; validation.unknown_item_max_fraction)"
                ),
            )
        )
    return _suite(suite_name, expectations)


def raw_days_suite(
    v: ValidationConfig, prices_expected: bool = True, catalogue: bool = False, day_checks: bool = True
) -> gx.ExpectationSuite:
    """The day table of the raw feed (``expectations.daily``): each judged day's own shares of what the
    row-level suite tolerates, and with ``day_checks`` (the daily feed) data on the day, volume, drift.

    A null ratio or PSI means "not judged" (too little history or too small a sample) and GX skips it.
    """
    shares = [
        ("unknown_event_type_share", v.raw_unknown_event_type_max_fraction, "raw_unknown_event_type_max_fraction")
    ]
    if prices_expected:
        shares.append(("missing_price_share", v.raw_missing_price_max_fraction, "raw_missing_price_max_fraction"))
    if catalogue:
        shares.append(("unknown_item_share", v.unknown_item_max_fraction, "unknown_item_max_fraction"))
    expectations: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToBeBetween(
            column=column,
            max_value=float(limit),
            description=f"on each judged day on its own, {column} ≤ {_pct(limit)} (validation.{key})",
        )
        for column, limit, key in shares
    ]
    if not day_checks:
        return _suite(RAW_DAYS, expectations)
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(
            column="events",
            min_value=int(v.min_day_events),
            description=(
                f"every checked day (the run's own day included) holds at least {int(v.min_day_events)} "
                "event(s): a day without landing data fails (validation.min_day_events)"
            ),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="volume_ratio",
            min_value=float(v.volume_min_ratio),
            max_value=float(v.volume_max_ratio),
            description=(
                f"a day's events are {v.volume_min_ratio:g}..{v.volume_max_ratio:g} × the median of the previous "
                f"{v.volume_lookback_days} days with data (validation.volume_min_ratio / volume_max_ratio)"
            ),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="psi_event_type",
            max_value=float(v.psi_max_event_type),
            description=(
                f"event-type mix PSI against the previous day with data ≤ {v.psi_max_event_type:g} "
                "(validation.psi_max_event_type)"
            ),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="psi_item_popularity",
            max_value=float(v.psi_max_item_popularity),
            description=(
                f"item-popularity PSI (previous day's top {v.drift_top_items} items + the rest) ≤ "
                f"{v.psi_max_item_popularity:g} (validation.psi_max_item_popularity)"
            ),
        ),
    ]
    return _suite(RAW_DAYS, expectations)


def raw_ts_bounds(v: ValidationConfig, run_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """(floor, latest acceptable instant) of raw timestamps for a run: ``ts_floor`` and the run date's end + tolerance."""
    floor = dt.datetime.combine(dt.date.fromisoformat(v.ts_floor), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return floor, end + dt.timedelta(hours=v.ts_future_tolerance_hours)


def clean_events_suite(
    min_events: int,
    min_price_fraction: float = DEFAULT_CLEAN_MIN_PRICE_FRACTION,
    event_types: tuple[str, ...] = EVENT_TYPES,
    prices_expected: bool = True,
) -> gx.ExpectationSuite:
    """Silver events of the run window: everything clean promises, strictly (price completeness only
    when the feed carries prices, see ``raw_events_suite``)."""
    price_fraction = _fraction("clean_min_price_fraction", min_price_fraction)
    expectations: list[gxe.Expectation] = []
    suite_name = CLEAN_EVENTS
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=int(min_events),
            description=f"at least {int(min_events)} clean events in the window (validation.min_clean_events)",
        )
    )
    for column in (EVENT_ID_COL, *REQUIRED_EVENT_COLUMNS):
        expectations.append(_not_null(column, "clean drops rows without it"))
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=EVENT_TYPE_COL,
            value_set=list(event_types),
            description=f"{EVENT_TYPE_COL} is one of {', '.join(event_types)} (clean drops unknown types)",
        )
    )
    expectations.append(_unique(EVENT_ID_COL, "clean removes duplicates by event_id"))
    expectations.append(_min_value(PRICE_COL, 0, "clean never lets a negative price through"))
    if prices_expected:
        expectations.append(
            _not_null(
                PRICE_COL, "clean fills prices from the catalogue; validation.clean_min_price_fraction", price_fraction
            )
        )
    return _suite(suite_name, expectations)


def items_suite() -> gx.ExpectationSuite:
    """Silver items: one row per item, sane prices, a boolean availability flag."""
    expectations: list[gxe.Expectation] = []
    suite_name = ITEMS
    expectations.append(_not_null(ITEM_COL, "every catalogue row names its item"))
    expectations.append(_unique(ITEM_COL, "silver items hold one row per item"))
    expectations.append(_min_value(PRICE_COL, 0, "a negative catalogue price is never valid"))
    expectations.append(
        gxe.ExpectColumnValuesToBeOfType(
            column=AVAILABLE_COL, type_="BooleanType", description=f"{AVAILABLE_COL} is a boolean column"
        )
    )
    return _suite(suite_name, expectations)


def interactions_suite(min_users: int, min_items: int, name: str = GOLD_INTERACTIONS) -> gx.ExpectationSuite:
    """Gold interactions (also used for ``split=train``): one positive-weight row per (user, item), enough of both."""
    expectations: list[gxe.Expectation] = []
    suite_name = name
    for column in (USER_COL, ITEM_COL):
        expectations.append(_not_null(column, "every interaction names its user and item"))
    expectations.append(_min_value(WEIGHT_COL, 0, "a kept interaction always has a positive weight", strict=True))
    expectations.append(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[USER_COL, ITEM_COL],
            description="(user_id, item_id) is unique: features aggregates events into one row per pair",
        )
    )
    expectations.append(
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=USER_COL,
            min_value=int(min_users),
            description=f"at least {int(min_users)} distinct users (validation.min_users)",
        )
    )
    expectations.append(
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column=ITEM_COL,
            min_value=int(min_items),
            description=f"at least {int(min_items)} distinct items (validation.min_items)",
        )
    )
    return _suite(suite_name, expectations)


def gold_users_suite() -> gx.ExpectationSuite:
    """Gold users: one row per user."""
    expectations: list[gxe.Expectation] = []
    suite_name = GOLD_USERS
    expectations.append(_not_null(USER_COL, "every user row names its user"))
    expectations.append(_unique(USER_COL, "gold users hold one row per user"))
    return _suite(suite_name, expectations)


def gold_items_suite() -> gx.ExpectationSuite:
    """Gold items: one row per item, price band in 0..5, no negative price."""
    expectations: list[gxe.Expectation] = []
    suite_name = GOLD_ITEMS
    expectations.append(_not_null(ITEM_COL, "every item row names its item"))
    expectations.append(_unique(ITEM_COL, "gold items hold one row per item"))
    expectations.append(_min_value(PRICE_COL, 0, "a negative price is never valid"))
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="price_band",
            min_value=0,
            max_value=5,
            description="price_band is a quintile 1..5, or 0 when the price is unknown",
        )
    )
    return _suite(suite_name, expectations)


def split_checks_suite() -> gx.ExpectationSuite:
    """Valid/test rows against train: no held-out pair seen in train, every held-out user has train history."""
    expectations: list[gxe.Expectation] = []
    suite_name = GOLD_SPLIT_CHECKS
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="valid + test hold at least one row to evaluate on")
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeNull(
            column=LEAKED_PAIR_COL,
            description="no (user_id, item_id) of valid/test is present in train (it would leak the answer)",
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeNull(
            column=USER_WITHOUT_TRAIN_COL,
            description="every valid/test user_id also appears in train (models need a history to score)",
        )
    )
    return _suite(suite_name, expectations)


#: Columns that identify a row of each validated table; a failure report names offending rows by them.
TABLE_ROW_KEYS: dict[str, tuple[str, ...]] = {
    "bronze_events": (EVENT_ID_COL, SOURCE_FILE_COL),
    "bronze_days": ("dt",),
    "silver_events": (EVENT_ID_COL,),
    "silver_items": (ITEM_COL,),
    "interactions": (USER_COL, ITEM_COL),
    "users": (USER_COL,),
    "items": (ITEM_COL,),
    "split=train": (USER_COL, ITEM_COL),
    "split_checks": (SPLIT_COL, USER_COL, ITEM_COL),
}


def stage_suites(
    stage: str,
    thresholds: ValidationConfig,
    prices_expected: bool = True,
    *,
    run_date: dt.date | None = None,
    catalogue: bool = False,
    day_table: bool = False,
    day_checks: bool = False,
) -> dict[str, gx.ExpectationSuite]:
    """The suites a pipeline stage runs, keyed by the table each one validates (thresholds: ``[validation]``).

    Raw only: ``run_date`` bounds the timestamps, ``catalogue`` adds the unknown-item share (the frame
    carries ``unknown_item``), ``day_table`` adds the ``bronze_days`` table's suite (per-day shares),
    with data per day, volume and drift when ``day_checks``.
    """
    v = thresholds
    if stage == "raw":
        suites = {
            "bronze_events": raw_events_suite(
                v.raw_unknown_event_type_max_fraction,
                v.raw_missing_price_max_fraction,
                prices_expected=prices_expected,
                ts_bounds=raw_ts_bounds(v, run_date) if run_date is not None else None,
                unknown_item_max_fraction=v.unknown_item_max_fraction if catalogue else None,
            )
        }
        if day_table:
            suites["bronze_days"] = raw_days_suite(v, prices_expected, catalogue, day_checks)
        return suites
    if stage == "clean":
        return {
            "silver_events": clean_events_suite(
                v.min_clean_events, v.clean_min_price_fraction, prices_expected=prices_expected
            ),
            "silver_items": items_suite(),
        }
    if stage == "features":
        return {
            "interactions": interactions_suite(v.min_users, v.min_items),
            "users": gold_users_suite(),
            "items": gold_items_suite(),
            "split=train": interactions_suite(1, 1, name=GOLD_TRAIN),
            "split_checks": split_checks_suite(),
        }
    raise ValueError(f"unknown stage {stage!r}: choose one of raw, clean, features")
