"""``make run``'s last step: start the scoring API, print two example calls with their real output, stay up.

The API runs as a child process (``python -m serving``) in the foreground of this command; Ctrl-C
stops both. The first example is a known user whose recommendations differ from the popularity list;
the second an unknown user, who gets the popularity fallback. Every route but ``/health`` needs an
API key: the demo makes sure the local development key exists (``python -m serving.keys local``) and
shows it in the examples as ``$(cat <home>/serving/local-api-key)``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.client import auth_headers, local_key_path
from core.settings import get_settings
from serving.keys import ensure_local_key
from serving.settings import serving_settings


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the scoring API exited with status {proc.returncode} before becoming healthy:\n{tail}")
        try:
            resp = httpx.get(f"{base}/health", timeout=2.0)
            if resp.status_code == 200:
                return resp.json()
            last = resp.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"the scoring API did not become healthy within {timeout:.0f}s: {last} (logs: {log_path})")


def _known_users(limit: int = 200) -> list[str]:
    """User ids the champion was trained on (from the registry's champion artifact)."""
    from core.registry import ServingRegistry

    settings = get_settings()
    registry = ServingRegistry(settings.registry, endpoint_url=settings.s3_endpoint_url)
    champion = registry.champion()
    if not champion:
        return []
    local = registry.fetch(champion["model_name"], champion["version"], settings.home / "cache" / "demo")
    ids = json.loads((local / "ids.json").read_text())
    return [str(u) for u in ids["user_ids"][:limit]]


def pick_example_user(base: str, k: int, headers: dict[str, str]) -> tuple[str, dict] | None:
    """A known user whose top-k differs from the popularity fallback's top-k."""
    popular = httpx.get(f"{base}/v1/recommendations/__unknown_demo_user__", params={"k": k}, headers=headers).json()
    popular_ids = [it["item_id"] for it in popular["items"]]
    for user in _known_users():
        body = httpx.get(f"{base}/v1/recommendations/{user}", params={"k": k}, headers=headers).json()
        if not body.get("fallback") and [it["item_id"] for it in body.get("items", [])] != popular_ids:
            return user, body
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=get_settings().port)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "RECSYS_PORT": str(args.port)}
    log_path = get_settings().home.absolute() / "logs" / f"serving-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    key_path = local_key_path(get_settings().home.absolute())
    headers = auth_headers(ensure_local_key(serving_settings().keys_file, key_path))
    curl_key = f'-H "Authorization: Bearer $(cat {key_path})"'
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = _wait_healthy(base, proc, log_path)
        print(f"\nScoring API up on {base} serving {json.dumps(health.get('model', health))}")
        print(f"API logs: {log_path}\n")
        print(f"API key (every scope, this machine only): {key_path}\n")
        example = pick_example_user(base, args.k, headers)
        if example:
            user, body = example
            print(f"$ curl {curl_key} '{base}/v1/recommendations/{user}?k={args.k}'")
            print(json.dumps(body, indent=2))
        unknown = "new-visitor-42"
        print(f"\n$ curl {curl_key} '{base}/v1/recommendations/{unknown}?k={args.k}'   # unknown user: popularity")
        fallback = httpx.get(f"{base}/v1/recommendations/{unknown}", params={"k": args.k}, headers=headers)
        print(json.dumps(fallback.json(), indent=2))
        print(f"\nServing in the foreground on port {args.port}; Ctrl-C to stop.", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
