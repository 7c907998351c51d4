"""The column contract shared by loaders, Spark jobs, expectations, models and serving."""

from __future__ import annotations

USER_COL = "user_id"
ITEM_COL = "item_id"
EVENT_TYPE_COL = "event_type"
TS_COL = "ts"
SESSION_COL = "session_id"
PRICE_COL = "price"
QUANTITY_COL = "quantity"
EVENT_ID_COL = "event_id"
WEIGHT_COL = "weight"
DT_COL = "dt"

CATEGORY_COL = "category"
BRAND_COL = "brand"
AVAILABLE_COL = "available"
TITLE_COL = "title"
ATTRIBUTES_COL = "attributes"

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

#: Columns every event carries after ingest (bronze), in order.
EVENT_COLUMNS: tuple[str, ...] = (
    EVENT_ID_COL,
    USER_COL,
    ITEM_COL,
    EVENT_TYPE_COL,
    TS_COL,
    SESSION_COL,
    PRICE_COL,
    QUANTITY_COL,
)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = (USER_COL, ITEM_COL, EVENT_TYPE_COL, TS_COL)

#: Columns of the item catalogue (silver/items).
ITEM_COLUMNS: tuple[str, ...] = (
    ITEM_COL,
    CATEGORY_COL,
    BRAND_COL,
    PRICE_COL,
    AVAILABLE_COL,
    TITLE_COL,
    ATTRIBUTES_COL,
)

FORMATS: tuple[str, ...] = ("simulated", "events", "s3rec", "diginetica")
PROTOCOLS: tuple[str, ...] = ("leave-one-out", "temporal")
