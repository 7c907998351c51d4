"""``GET /v1/items/{item_id}/similar``: the items nearest by cosine of the model's item vectors.

Like the recommendation routes, each answer carries a ``request_id``, the model, experiment and
variant, and is logged to the exposure log; the experiment unit is ``user_id``, else ``session_id``
(optional query parameters), else the request itself.
"""

from fastapi import APIRouter

from serving.api.deps import ReadsRecommendations, Runtime, SimilarItems
from serving.api.errors import CLIENT_ERRORS, ApiError
from serving.api.schemas import ErrorOut, ItemOut, ModelRef, SimilarOut

router = APIRouter(dependencies=[ReadsRecommendations])

SIMILAR_ROUTE = "/v1/items/{item_id}/similar"


@router.get(SIMILAR_ROUTE, response_model=SimilarOut, responses={404: {"model": ErrorOut}, **CLIENT_ERRORS})
def similar_items(query: SimilarItems, runtime: Runtime) -> SimilarOut:
    job = runtime.assign(query.job(), unit=query.user_id if query.user_id is not None else query.session_id)
    found = runtime.similar(job, query.item_id)
    if found is None:
        loaded = job.loaded
        raise ApiError(404, f"item_id: {query.item_id!r} is not in the catalogue of {loaded.name}/{loaded.version}")
    runtime.served(job, SIMILAR_ROUTE, found, fallback=False)
    return SimilarOut(
        request_id=job.request_id,
        item_id=query.item_id,
        items=[ItemOut.of(item) for item in found],
        model=ModelRef.of(job.loaded),
        experiment=job.assignment.experiment,
        variant=job.assignment.variant,
    )
