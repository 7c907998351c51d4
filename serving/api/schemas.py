"""Request and response bodies of the scoring API (what OpenAPI documents)."""

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

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
    team: str | None = Field(
        default=None, description="Interleaving experiments only: the arm (variant) that placed the item."
    )

    @model_serializer(mode="wrap")
    def _team_only_when_interleaved(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("team") is None:
            out.pop("team", None)
        return out

    @classmethod
    def of(cls, item: ScoredItem) -> "ItemOut":
        return cls(item_id=item.item_id, score=item.score, reason=item.reason, team=item.team)


class ModelRef(BaseModel):
    name: str
    version: str

    @classmethod
    def of(cls, loaded: LoadedModel) -> "ModelRef":
        return cls(name=loaded.name, version=loaded.version)


_REQUEST_ID = "This response's id (a ULID: time-ordered, unique); send it back with the events it leads to."
_EXPERIMENT = "The running experiment that served this response (null: none, the champion served it)."
_VARIANT = "The experiment arm (control, treatment, ...; 'interleaved' when both arms' lists were merged)."


class RecommendationsOut(BaseModel):
    request_id: str = Field(description=_REQUEST_ID)
    user_id: str | None
    items: list[ItemOut]
    model: ModelRef
    experiment: str | None = Field(default=None, description=_EXPERIMENT)
    variant: str | None = Field(default=None, description=_VARIANT)
    fallback: bool
    fallback_reason: str | None = Field(
        default=None,
        description="Why the answer is the popularity fallback: 'unknown_user' (no history), 'model_error' "
        "(the model failed; counted in mercato_model_errors_total). Null when the model answered.",
    )
    live: bool = Field(
        default=True,
        description="False when the real-time state store could not be read: the answer uses the model and the "
        "user's training history only (the user's latest events are missing).",
    )
    live_items: int = Field(description="Recent items from the live state / session used for this answer.")


class SimilarOut(BaseModel):
    request_id: str = Field(description=_REQUEST_ID)
    item_id: str
    items: list[ItemOut]
    model: ModelRef
    experiment: str | None = Field(default=None, description=_EXPERIMENT)
    variant: str | None = Field(default=None, description=_VARIANT)


class SessionIn(BaseModel):
    """An anonymous session: what it viewed (oldest first) and bought, plus the ranking options."""

    model_config = ConfigDict(extra="forbid")

    recent_items: list[str] = Field(default_factory=list)
    purchased_items: list[str] = Field(default_factory=list)
    session_id: str | None = Field(
        default=None, description="The shop's session id: logged with the exposure and the experiment unit."
    )
    k: int = 10
    exclude: ExcludePolicy | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    diversity: float | None = None


class EventsIn(BaseModel):
    """A batch of events in the landing contract (user_id, item_id, event_type, ts, session_id, price, quantity,
    event_id, request_id, position)."""

    events: list[Any]


class EventErrorOut(BaseModel):
    index: int
    field: str
    message: str


class EventsOut(BaseModel):
    accepted: int = Field(description="Events acknowledged: in the write-ahead log, they will land exactly once.")
    rejected: int
    duplicates: int = Field(
        default=0,
        description="Accepted events whose event_id was accepted before with the same payload: acknowledged, "
        "not landed again.",
    )
    errors: list[EventErrorOut]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="'degraded': the API answers, without what 'degraded' names (see the README's failure table)."
    )
    model: ModelRef
    checksum: str
    loaded_at: str
    degraded: dict[str, str] = Field(
        default_factory=dict, description="Each failing component (state, landing, exposures, registry) and why."
    )
    auth: Literal["on", "disabled"] = "on"


class ErasureOut(BaseModel):
    request_id: str = Field(description="The erasure request filed for the lake-side job (jobs/erasure.py).")
    user_hash: str = Field(description="HMAC-SHA256 of the user id keyed with RECSYS_ERASURE_SALT (as audited).")
    state: dict[str, int] = Field(description="What was removed from the live state: recent, purchased, requests.")
    landing_flushed: dict[str, int] = Field(
        description="Records of every user flushed to the landing zone before the request, so the lake job sees "
        "all the API acknowledged."
    )
    erasure_request: str = Field(description="Path of the request file, relative to the lake.")
    audit: str = Field(description="Path of the append-only audit log, relative to the lake.")


class ErrorOut(BaseModel):
    error: str
