"""``GET /v1/items/{item_id}/similar``: the items nearest by cosine of the model's item vectors."""

from fastapi import APIRouter

from serving.api.deps import SimilarItems
from serving.api.errors import CLIENT_ERRORS, ApiError
from serving.api.schemas import ErrorOut, ItemOut, ModelRef, SimilarOut

router = APIRouter()


@router.get(
    "/v1/items/{item_id}/similar", response_model=SimilarOut, responses={404: {"model": ErrorOut}, **CLIENT_ERRORS}
)
def similar_items(query: SimilarItems) -> SimilarOut:
    loaded = query.loaded
    found = loaded.scorer.similar(query.item_id, query.k, query.options)
    if found is None:
        raise ApiError(404, f"item_id: {query.item_id!r} is not in the catalogue of {loaded.name}/{loaded.version}")
    return SimilarOut(item_id=query.item_id, items=[ItemOut.of(item) for item in found], model=ModelRef.of(loaded))
