"""``serving.api.deps``: which error a client sees first, bounds from ``[serving]``, the exclude policies.

The order is FastAPI's validation of every parameter (one message), then k's range, the ids, the
filters, and only then 503 while no model is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from core.config import EXCLUDE_POLICIES
from serving.api.schemas import ExcludePolicy
from serving.app import create_app
from tests.serving.clusters import AUTH, live_cfg, settings_for

NO_MODEL = "no model loaded yet: no champion.json in"


@pytest.fixture
def no_model(tmp_path: Path) -> Iterator[TestClient]:
    """The API over an empty registry, with ids of at most 8 characters."""
    app = create_app(settings_for(tmp_path / "home", tmp_path / "registry"), cfg=live_cfg(max_id_length=8), poll=False)
    with TestClient(app, headers=AUTH) as client:
        yield client


def error(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    resp = client.request(method, path, **kwargs)
    return resp.status_code, resp.json()["error"]


def test_malformed_parameters_come_first_all_in_one_message(no_model: TestClient) -> None:
    assert error(no_model, "GET", "/v1/recommendations/ua0", params={"k": 0, "min_price": -1}) == (
        422,
        "min_price: Input should be greater than or equal to 0",
    )
    status, message = error(no_model, "GET", "/v1/recommendations/ua0", params={"k": "ten", "diversity": 2})
    assert status == 422 and message == (
        "k: Input should be a valid integer, unable to parse string as an integer (allowed: integer 1..100); "
        "diversity: Input should be less than or equal to 1"
    )


def test_then_k_then_the_ids_then_the_filters(no_model: TestClient) -> None:
    prices = {"min_price": 5, "max_price": 1}
    assert error(no_model, "GET", "/v1/recommendations/a%00b", params={"k": 0, **prices}) == (
        422,
        "k: must be between 1 and 100 (got 0)",
    )
    assert error(no_model, "GET", "/v1/recommendations/a%00b", params=prices) == (
        422,
        "user_id: contains the control or unassigned character U+0000; remove it",
    )
    assert error(no_model, "GET", "/v1/recommendations/ua0", params={"category": " ", **prices}) == (
        422,
        "min_price: 5.0 is above max_price 1.0",
    )
    assert error(no_model, "GET", "/v1/recommendations/ua0", params={"category": " "}) == (
        422,
        "category: must not be empty or blank",
    )
    session = {"k": 0, "recent_items": ["a\u0007"], "min_price": -1}
    assert error(no_model, "POST", "/v1/recommendations", json=session)[1] == "k: must be between 1 and 100 (got 0)"
    del session["k"]
    assert error(no_model, "POST", "/v1/recommendations", json=session)[1].startswith("recent_items.0: contains")
    assert error(no_model, "POST", "/v1/recommendations", json={"recent_items": ["a"] * 51}) == (
        422,
        "recent_items: 51 items; at most state_max_recent=50",
    )


def test_503_only_once_the_input_is_valid(no_model: TestClient) -> None:
    for path, params in (
        ("/v1/recommendations/ua0", {"k": 3}),
        ("/v1/items/a0/similar", {"k": 3}),
        ("/v1/items/unknown/similar", {}),  # the catalogue is the model's: no 404 without one
    ):
        status, message = error(no_model, "GET", path, params=params)
        assert status == 503 and message.startswith(NO_MODEL), path
        assert error(no_model, "GET", path, params={"k": 0})[0] == 422, path
    assert error(no_model, "POST", "/v1/recommendations", json={"k": 3})[0] == 503
    assert error(no_model, "POST", "/v1/recommendations", json={"k": 0})[0] == 422
    assert error(no_model, "GET", "/health")[0] == 503


def test_id_length_limit_follows_the_config(no_model: TestClient) -> None:
    assert error(no_model, "GET", "/v1/recommendations/" + "u" * 8)[0] == 503
    assert error(no_model, "GET", "/v1/recommendations/" + "u" * 9) == (
        422,
        "user_id: String should have at most 8 characters",
    )
    assert error(no_model, "GET", "/v1/recommendations/" + "u" * 9, params={"category": "c" * 9, "k": 0}) == (
        422,
        "user_id: String should have at most 8 characters; category: String should have at most 8 characters",
    )
    assert error(no_model, "GET", "/v1/items/" + "i" * 9 + "/similar") == (
        422,
        "item_id: String should have at most 8 characters",
    )
    assert error(no_model, "POST", "/v1/recommendations", json={"category": "c" * 9}) == (
        422,
        "category: is 9 characters long; the limit is 8",
    )


def _exclude_enum(schema: dict[str, Any]) -> list[str]:
    return next(option["enum"] for option in schema["anyOf"] if "enum" in option)


def test_exclude_policies_are_core_configs(no_model: TestClient) -> None:
    assert get_args(ExcludePolicy) == EXCLUDE_POLICIES
    openapi = no_model.get("/openapi.json").json()
    params = openapi["paths"]["/v1/recommendations/{user_id}"]["get"]["parameters"]
    exclude = next(p for p in params if p["name"] == "exclude")
    assert _exclude_enum(exclude["schema"]) == list(EXCLUDE_POLICIES)
    assert _exclude_enum(openapi["components"]["schemas"]["SessionIn"]["properties"]["exclude"]) == list(
        EXCLUDE_POLICIES
    )
    assert error(no_model, "GET", "/v1/recommendations/ua0", params={"exclude": "bogus"}) == (
        422,
        "exclude: Input should be 'purchased', 'seen' or 'none'",
    )
    for policy in EXCLUDE_POLICIES:
        assert error(no_model, "GET", "/v1/recommendations/ua0", params={"exclude": policy})[0] == 503
