"""Request and response bodies of the scoring API (what OpenAPI documents)."""

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from core.config import EXCLUDE_POLICIES
from serving.scorer import ScoredItem
from serving.store import LoadedModel

#: ``exclude`` values: the policies of ``core.config.EXCLUDE_POLICIES``, which also checks ``[serving] exclude``.
if TYPE_CHECKING:
    ExcludePolicy: TypeAlias = str  # mypy cannot read a Literal built from a tuple
else:
    ExcludePolicy = Literal[EXCLUDE_POLICIES]


class ItemOut(BaseModel):
    item_id: str
    score: float
    reason: str | None = None

    @classmethod
    def of(cls, item: ScoredItem) -> "ItemOut":
        return cls(item_id=item.item_id, score=item.score, reason=item.reason)


class ModelRef(BaseModel):
    name: str
    version: str

    @classmethod
    def of(cls, loaded: LoadedModel) -> "ModelRef":
        return cls(name=loaded.name, version=loaded.version)


class RecommendationsOut(BaseModel):
    user_id: str | None
    items: list[ItemOut]
    model: ModelRef
    fallback: bool
    live_items: int = Field(description="Recent items from the live state / session used for this answer.")


class SimilarOut(BaseModel):
    item_id: str
    items: list[ItemOut]
    model: ModelRef


class SessionIn(BaseModel):
    """An anonymous session: what it viewed (oldest first) and bought, plus the ranking options."""

    model_config = ConfigDict(extra="forbid")

    recent_items: list[str] = Field(default_factory=list)
    purchased_items: list[str] = Field(default_factory=list)
    k: int = 10
    exclude: ExcludePolicy | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    diversity: float | None = None


class EventsIn(BaseModel):
    """A batch of events in the landing contract (user_id, item_id, event_type, ts, session_id, price, quantity, event_id)."""

    events: list[Any]


class EventErrorOut(BaseModel):
    index: int
    field: str
    message: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    errors: list[EventErrorOut]


class HealthOut(BaseModel):
    status: str
    model: ModelRef
    checksum: str
    loaded_at: str


class ErrorOut(BaseModel):
    error: str
