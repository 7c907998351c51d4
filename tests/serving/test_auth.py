"""API keys: every route but /health needs one with the route's scope; hashes only; keys never logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving import keys as keys_cli
from serving.app import create_app
from serving.auth import SCOPES, KeyRing, add_key, hash_secret, new_key, read_keys_file, split_key, write_keys
from tests.serving.clusters import AUTH, TEST_KEY, live_cfg, settings_for

EVENT = {"user_id": "u", "item_id": "a1", "event_type": "view"}


def app_with(tmp_path: Path, registry_dir: Path, ring: KeyRing) -> TestClient:
    return TestClient(create_app(settings_for(tmp_path / "home", registry_dir), cfg=live_cfg(), poll=False, keys=ring))


def test_every_route_but_health_needs_a_key(client: TestClient) -> None:
    bare = TestClient(client.app)
    assert bare.get("/health").status_code == 200
    for method, path, body in (
        ("GET", "/v1/recommendations/ua0", None),
        ("POST", "/v1/recommendations", {"recent_items": ["a1"]}),
        ("GET", "/v1/items/a1/similar", None),
        ("POST", "/v1/events", {"events": [EVENT]}),
        ("DELETE", "/v1/users/ua0", None),
        ("GET", "/metrics", None),
    ):
        resp = bare.request(method, path, json=body)
        assert resp.status_code == 401, (method, path)
        assert resp.json()["error"].startswith("authentication: this route needs an API key")
        assert resp.headers["www-authenticate"] == "Bearer"
    wrong = bare.get("/v1/recommendations/ua0", headers={"Authorization": "Bearer mk_tests_not-the-secret"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    assert bare.get("/v1/recommendations/ua0", headers={"X-API-Key": TEST_KEY}).status_code == 200
    assert bare.get("/v1/recommendations/ua0", params={"k": 0}).status_code == 401, "401 before any 422"


def test_scopes(tmp_path: Path, registry_dir: Path) -> None:
    reader, reader_rec = new_key("reader", ["recs:read"])
    shop, shop_rec = new_key("shop", ["events:write", "recs:read"])
    admin, admin_rec = new_key("ops", ["admin"])
    with app_with(tmp_path, registry_dir, KeyRing([reader_rec, shop_rec, admin_rec])) as client:

        def status(key: str, method: str, path: str, body: dict | None = None) -> int:
            return client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"}).status_code

        assert status(reader, "GET", "/v1/recommendations/ua0") == 200
        denied = client.post("/v1/events", json={"events": [EVENT]}, headers={"Authorization": f"Bearer {reader}"})
        assert denied.status_code == 403
        assert denied.json() == {
            "error": "authorization: key 'reader' lacks the scope 'events:write' this route needs (it has recs:read)"
        }
        assert status(shop, "POST", "/v1/events", {"events": [EVENT]}) == 202
        assert status(shop, "GET", "/metrics") == 403 and status(shop, "DELETE", "/v1/users/u") == 403
        assert status(admin, "GET", "/metrics") == 200 and status(admin, "GET", "/v1/recommendations/ua0") == 200
        text = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
        assert 'mercato_auth_failures_total{status="403"} 3.0' in text


def test_keys_are_stored_hashed_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "shop", ["events:write"])
    stored = path.read_text()
    key_id, secret = split_key(key) or ("", "")
    assert key_id == "shop" and secret not in stored and key not in stored
    (record,) = read_keys_file(path)
    assert record.sha256 == hash_secret(secret, record.salt) and oct(path.stat().st_mode & 0o777) == "0o600"
    ring = KeyRing(path=path)
    assert ring.verify(key) == record and ring.verify(key + "x") is None and ring.verify("garbage") is None
    with caplog.at_level(logging.DEBUG):
        ring.verify(key)
    assert secret not in caplog.text


def test_the_keys_file_is_reread_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.auth.RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "keys.json"
    first = add_key(path, "one", ["recs:read"])
    ring = KeyRing(path=path)
    assert ring.verify(first) is not None
    second = add_key(path, "two", ["recs:read"])
    assert ring.verify(second) is not None
    path.write_text("{broken")  # a bad edit keeps the keys that worked
    assert ring.verify(first) is not None


def test_keys_cli_creates_lists_and_revokes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    assert keys_cli.main(["create", "--id", "shop", "--scopes", "events:write,recs:read"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("mk_shop_") and key not in (tmp_path / "serving" / "api-keys.json").read_text()
    assert keys_cli.main(["list"]) == 0 and "shop\tevents:write,recs:read" in capsys.readouterr().out
    assert keys_cli.main(["create", "--id", "bad", "--scopes", "root"]) == 2
    assert keys_cli.main(["revoke", "--id", "shop"]) == 0
    assert json.loads((tmp_path / "serving" / "api-keys.json").read_text()) == {"keys": []}


def test_no_keys_configured_refuses_everything_and_disabling_is_loud(
    tmp_path: Path, registry_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RECSYS_API_KEYS")
    with TestClient(create_app(settings_for(tmp_path / "h1", registry_dir), cfg=live_cfg(), poll=False)) as client:
        resp = client.get("/v1/recommendations/ua0", headers=AUTH)
        assert resp.status_code == 401 and "python -m serving.keys create" in resp.json()["error"]
    monkeypatch.setenv("RECSYS_AUTH_DISABLED", "true")
    with caplog.at_level(logging.WARNING):
        app = create_app(settings_for(tmp_path / "h2", registry_dir), cfg=live_cfg(), poll=False)
        with TestClient(app) as client:
            assert client.get("/v1/recommendations/ua0").status_code == 200
            assert client.get("/health").json()["auth"] == "disabled"
    assert "AUTHENTICATION IS DISABLED" in caplog.text


def test_the_local_key_is_kept_for_this_machines_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.client import api_key, local_key_path
    from serving.keys import ensure_local_key

    keys_file, key_path = tmp_path / "api-keys.json", local_key_path(tmp_path)
    key = ensure_local_key(keys_file, key_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert KeyRing(path=keys_file).verify(key).scopes == frozenset(SCOPES)
    assert ensure_local_key(keys_file, key_path) == key, "kept while the keys file accepts it"
    monkeypatch.delenv("RECSYS_API_KEY", raising=False)
    assert api_key(tmp_path) == key
    monkeypatch.setenv("RECSYS_API_KEY", "mk_other_x")
    assert api_key(tmp_path) == "mk_other_x", "the environment wins"
    write_keys(keys_file, [])  # revoked: the next call makes a new one
    assert ensure_local_key(keys_file, key_path) != key
