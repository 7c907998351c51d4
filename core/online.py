"""The online loop's lake layout, column names and report defaults (exposures → attribution → experiment report).

Shared by the Spark jobs that write these tables (``jobs.exposures``, ``jobs.attribution``,
``jobs.experiment_report``), the exposure gate (``expectations.exposures``), the statistics that read
the per-arm aggregates (``evaluation.online``) and the report / conclude commands
(``training.experiment_report``); it imports nothing but the standard library and ``core.lake``.

```
landing/exposures/dt=D/*.jsonl                 one JSON object per recommendation response (the API)
bronze/exposures/dt=D/                         typed, one row per response (items nested), _SOURCE.json
bronze/_rejected/exposures/dt=D/               malformed lines: raw, reason, source_file
silver/exposures/dt=D/                         deduplicated by request_id, _SILVER.json
silver/attributed_events/dt=D/                 every silver event of D with its attribution, _ATTRIBUTION.json
gold/experiments/<name>/dt=D/                  one row per experiment unit: variant, outcomes, pre-period
gold/experiments/<name>/dt=D/_AGGREGATES.json  per-variant moments the statistics read
<reports>/D/experiment_<name>.json | .md       the readable experiment report
```
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from core.lake import Lake

# ---- exposure records (landing/exposures, the API's exposure_record) ---------------------------------
REQUEST_ID_COL = "request_id"
POSITION_COL = "position"
ROUTE_COL = "route"
MODEL_NAME_COL = "model_name"
MODEL_VERSION_COL = "model_version"
EXPERIMENT_COL = "experiment"
VARIANT_COL = "variant"
FALLBACK_COL = "fallback"
FILTERS_COL = "filters"
ITEMS_COL = "items"
SCORE_COL = "score"
TEAM_COL = "team"
#: Derived: how many items the response showed.
N_ITEMS_COL = "n_items"
#: The experiment unit of an exposure: its user id, else its session id (the API assigns arms the same way).
UNIT_COL = "unit_id"

#: Top-level fields of an exposure record, in the order of the contract.
EXPOSURE_FIELDS: tuple[str, ...] = (
    REQUEST_ID_COL,
    "ts",
    "user_id",
    "session_id",
    ROUTE_COL,
    MODEL_NAME_COL,
    MODEL_VERSION_COL,
    EXPERIMENT_COL,
    VARIANT_COL,
    FALLBACK_COL,
    FILTERS_COL,
    ITEMS_COL,
)
#: Fields of one shown item.
EXPOSURE_ITEM_FIELDS: tuple[str, ...] = ("item_id", POSITION_COL, SCORE_COL, TEAM_COL)

# ---- attributed events (silver/attributed_events) -------------------------------------------------
#: How an event was tied to an exposure: ``request`` (its request_id) or ``window`` (user + item); null: not.
ATTRIBUTION_COL = "attribution"
BY_REQUEST = "request"
BY_WINDOW = "window"
#: ``attributed`` | ``late`` (its exposure is older than the window) | ``unexposed`` (no exposure of user + item before it).
ATTRIBUTION_STATUS_COL = "attribution_status"
ATTRIBUTED = "attributed"
LATE = "late"
UNEXPOSED = "unexposed"
#: For events that carry a request_id: ``matched`` | ``late`` | ``unknown_request`` | ``item_not_in_request``.
REQUEST_STATUS_COL = "request_status"
MATCHED = "matched"
UNKNOWN_REQUEST = "unknown_request"
ITEM_NOT_IN_REQUEST = "item_not_in_request"
EXPOSURE_REQUEST_COL = "exposure_request_id"
EXPOSURE_TS_COL = "exposure_ts"
EXPOSED_POSITION_COL = "exposed_position"

# ---- experiment units (gold/experiments/<name>/dt=D/units): one row per unit ----------------------
EXPOSURES = "exposures"
CLICKS = "clicks"
ADD_TO_CARTS = "add_to_carts"
PURCHASES = "purchases"
PURCHASER = "purchaser"
REVENUE = "revenue"
USER_CTR = "user_ctr"
PRE_CLICKS = "pre_clicks"
PRE_ADD_TO_CARTS = "pre_add_to_carts"
PRE_PURCHASER = "pre_purchaser"
PRE_REVENUE = "pre_revenue"
#: The numeric per-unit columns whose moments (n, sums, cross products) the report aggregates per variant.
UNIT_METRIC_COLUMNS: tuple[str, ...] = (
    EXPOSURES,
    CLICKS,
    ADD_TO_CARTS,
    PURCHASES,
    PURCHASER,
    REVENUE,
    USER_CTR,
    PRE_CLICKS,
    PRE_ADD_TO_CARTS,
    PRE_PURCHASER,
    PRE_REVENUE,
)
#: The report's metrics, in order (their formulas: ``evaluation.online.DEFAULT_METRICS``).
REPORT_METRICS: tuple[str, ...] = ("ctr", "ctr_per_user", "add_to_cart_rate", "conversion", "revenue_per_user")
#: Interleaving: per unit, the mean per-request preference for the treatment's team (+1 win, 0 tie, -1 loss).
PREFERENCE = "preference"
AGGREGATES_FILE = "_AGGREGATES.json"


@dataclass(frozen=True)
class ReportDefaults:
    """Defaults of the exposure gate and the experiment report, in one place until ``config/recsys.toml``
    has an ``[experiments]`` section for them (the DAG's params and the CLIs override each per run)."""

    #: Significance level of the decision; intervals are (1 - alpha) confidence sequences.
    alpha: float = 0.05
    #: The metric a treatment must win on to be promoted.
    primary_metric: str = "ctr"
    #: Sample-ratio mismatch is flagged when the chi-square test against the configured shares gives p below this.
    srm_alpha: float = 0.001
    #: Units (all arms together) at which the mixture confidence sequence is tightest (Howard et al. 2021).
    sequential_tuning_n: int = 10_000
    #: Power at which the minimum detectable effect is reported.
    power: float = 0.8
    #: Days before the experiment start whose behaviour is each unit's CUPED covariate.
    cuped_pre_days: int = 14
    #: Days of exposures the report reads when the experiment document gives no start.
    window_days_without_start: int = 28
    #: Largest share of a landing day's exposure lines that may be malformed (quarantined) before the gate fails.
    exposures_max_rejected_fraction: float = 0.01


REPORT_DEFAULTS = ReportDefaults()


# ---- paths -----------------------------------------------------------------------------------------
def _day(base: Path, day: dt.date | None) -> Path:
    return base if day is None else base / f"dt={day.isoformat()}"


def bronze_exposures(lake: Lake, day: dt.date | None = None) -> Path:
    return _day(lake.root / "bronze" / "exposures", day)


def rejected_exposures(lake: Lake, day: dt.date | None = None) -> Path:
    return _day(lake.root / "bronze" / "_rejected" / "exposures", day)


def silver_exposures(lake: Lake, day: dt.date | None = None) -> Path:
    return _day(lake.root / "silver" / "exposures", day)


def attributed_events(lake: Lake, day: dt.date | None = None) -> Path:
    return _day(lake.root / "silver" / "attributed_events", day)


def experiment_units(lake: Lake, name: str, run_date: dt.date | None = None) -> Path:
    """``gold/experiments/<name>/dt=<run_date>``: the report job's per-unit table (Parquet) and its aggregates."""
    return _day(lake.root / "gold" / "experiments" / name, run_date)


def aggregates_path(lake: Lake, name: str, run_date: dt.date) -> Path:
    """``_AGGREGATES.json`` beside the per-unit table: per-variant moments, what the statistics read."""
    return experiment_units(lake, name, run_date) / AGGREGATES_FILE


def report_paths(reports_root: str | os.PathLike[str], run_date: dt.date, name: str) -> tuple[Path, Path]:
    """``<reports>/<run_date>/experiment_<name>.json`` and ``.md`` (next to the validation reports)."""
    folder = Path(reports_root) / run_date.isoformat()
    return folder / f"experiment_{name}.json", folder / f"experiment_{name}.md"
