"""Great Expectations suites for every gated table, defined in code.

Each builder is a pure function: thresholds come in as arguments (the runner reads them from
``config/recsys.toml`` ``[validation]``), so a suite is reproducible from the config in force.
Every expectation carries a ``description`` that says what must hold and why; the runner shows it
as the "expected" line of a failure report and Data Docs renders it.
"""

from __future__ import annotations

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

#: Columns of the derived split-check frame (see ``expectations.runner.split_check_frame``).
SPLIT_COL = "split"
LEAKED_PAIR_COL = "leaked_pair"
USER_WITHOUT_TRAIN_COL = "user_without_train"

#: Share of silver events that must carry a price when the config does not say
#: (clean keeps a null price when the catalogue has none for the item).
DEFAULT_CLEAN_MIN_PRICE_FRACTION = 0.95

#: Suite names per table, the unit the runner validates.
RAW_EVENTS = "raw_events"
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
) -> gx.ExpectationSuite:
    """Bronze events of the run window: the contract's hard rules, with tolerance only for what clean repairs.

    ``prices_expected=False`` (a feed that carries no prices at all, e.g. review or view logs; price is
    optional in the contract) drops the price-completeness expectation; negative prices still fail.
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
    return _suite(suite_name, expectations)


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
    "bronze_events": (EVENT_ID_COL,),
    "silver_events": (EVENT_ID_COL,),
    "silver_items": (ITEM_COL,),
    "interactions": (USER_COL, ITEM_COL),
    "users": (USER_COL,),
    "items": (ITEM_COL,),
    "split=train": (USER_COL, ITEM_COL),
    "split_checks": (SPLIT_COL, USER_COL, ITEM_COL),
}


def stage_suites(
    stage: str, thresholds: ValidationConfig, prices_expected: bool = True
) -> dict[str, gx.ExpectationSuite]:
    """The suites a pipeline stage runs, keyed by the table each one validates (thresholds: ``[validation]``)."""
    v = thresholds
    if stage == "raw":
        return {
            "bronze_events": raw_events_suite(
                v.raw_unknown_event_type_max_fraction,
                v.raw_missing_price_max_fraction,
                prices_expected=prices_expected,
            )
        }
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
