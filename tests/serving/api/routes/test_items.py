"""``GET /v1/items/{item_id}/similar`` on the trained two-cluster model (``client`` in tests/serving/conftest.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.serving.clusters import UNAVAILABLE, cluster_items


def similar(client: TestClient, item_id: str, **params: object) -> dict:
    resp = client.get(f"/v1/items/{item_id}/similar", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_answer_shape_and_k(client: TestClient) -> None:
    body = similar(client, "b2", k=3)
    assert body["item_id"] == "b2" and body["model"] == {"name": "bpr", "version": "1"}
    assert len(body["items"]) == 3 and "b2" not in [item["item_id"] for item in body["items"]]
    assert {item["reason"] for item in body["items"]} == {"similar to b2"}
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    everything = similar(client, "b2", k=100)["items"]
    assert len(everything) == len(cluster_items()) - 2, "every item but itself and the unavailable one"
    assert UNAVAILABLE not in [item["item_id"] for item in everything]


def test_category_and_price_filters(client: TestClient) -> None:
    prices = dict(zip(cluster_items()["item_id"], cluster_items()["price"], strict=True))
    alpha = similar(client, "b2", k=100, category="alpha")["items"]
    assert alpha and all(item["item_id"].startswith("a") for item in alpha)
    priced = similar(client, "b2", k=100, min_price=12, max_price=14)["items"]
    assert priced and all(12 <= prices[item["item_id"]] <= 14 for item in priced)
    assert similar(client, "b2", category="no-such-category")["items"] == []


def test_client_errors(client: TestClient) -> None:
    missing = client.get("/v1/items/nope/similar")
    assert missing.status_code == 404 and missing.json() == {
        "error": "item_id: 'nope' is not in the catalogue of bpr/1"
    }
    assert client.get("/v1/items/b2/similar", params={"k": 0}).json() == {
        "error": "k: must be between 1 and 100 (got 0)"
    }
    bad_prices = client.get("/v1/items/b2/similar", params={"min_price": 5, "max_price": 1})
    assert bad_prices.status_code == 422 and bad_prices.json() == {"error": "min_price: 5.0 is above max_price 1.0"}
