"""Real processes for the serving fault tests: the API (``python -m serving``), a private ``redis-server`` and a
private ``weed mini`` that a test may stop, hang, kill and restart (the session fixtures of ``tests.services``
are shared, so no test may break them), a TCP listener that never answers, and a config file with changed
``[serving]`` keys."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.config import DEFAULT_CONFIG_PATH
from tests.conftest import PROJECT_ROOT, require_binary
from tests.services import (
    S3_ACCESS_KEY,
    S3_BUCKET,
    S3_REGION,
    S3_SECRET_KEY,
    STARTUP_TIMEOUT_S,
    S3Server,
    _wait_for_s3,
    free_ports,
    stop_process,
    weed_mini_command,
)
from tests.serving.clusters import AUTH, TEST_KEYS_JSON

#: A loaded 2-core machine starts the API (torch import, model load, smoke test) in 5-30 s.
API_START_TIMEOUT_S = 180.0


def serving_config(folder: Path, **serving: object) -> Path:
    """A copy of the project's config with these ``[serving]`` keys changed (each must exist there)."""
    text = DEFAULT_CONFIG_PATH.read_text()
    head, _, rest = text.partition("\n[serving]\n")
    section, nxt, tail = rest.partition("\n[")
    for key, value in serving.items():
        literal = (
            json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        )
        section, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {literal}", section)
        assert n == 1, f"[serving] {key} is not in {DEFAULT_CONFIG_PATH}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"recsys-{time.monotonic_ns()}.toml"
    path.write_text(f"{head}\n[serving]\n{section}{nxt}{tail}")
    return path


@dataclass
class Api:
    """One ``python -m serving`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def health(self, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(f"{self.base}/health", timeout=timeout)

    def wait_healthy(self, timeout: float = API_START_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited with {self.proc.returncode} before it was healthy:\n{self.log()}")
            try:
                resp = self.health(timeout=2.0)
                if resp.status_code == 200:
                    return resp.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the API was not healthy within {timeout:.0f}s:\n{self.log()}")

    def metric(self, name: str) -> float:
        """One unlabelled sample of ``/metrics`` (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", headers=AUTH, timeout=5).text
        for line in text.splitlines():
            got, _, value = line.rpartition(" ")
            if got == name:
                return float(value)
        return 0.0

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: uvicorn's graceful shutdown flushes every accepted event."""
        if self.proc.poll() is None:
            stop_process(self.proc, timeout=30)


def start_api(home: Path, registry_uri: str, config: Path | None = None, **env: str) -> Api:
    """Start the API on a free port over ``home`` and ``registry_uri`` (not waiting for it: see ``wait_healthy``)."""
    (port,) = free_ports(1)
    home.mkdir(parents=True, exist_ok=True)
    full = {
        **os.environ,
        "RECSYS_HOME": str(home),
        "RECSYS_REGISTRY_URI": registry_uri,
        "RECSYS_PORT": str(port),
        "RECSYS_HOST": "127.0.0.1",
        "RECSYS_API_KEYS": TEST_KEYS_JSON,
        "PYTHONPATH": str(PROJECT_ROOT),
        **env,
    }
    full.pop("RECSYS_AUTH_DISABLED", None)
    if config is not None:
        full["RECSYS_CONFIG"] = str(config)
    log_path = home / f"api-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving"], cwd=PROJECT_ROOT, env=full, stdout=log, stderr=subprocess.STDOUT
        )
    return Api(proc, port, log_path)


@contextmanager
def running_api(home: Path, registry_uri: str, config: Path | None = None, **env: str) -> Iterator[Api]:
    api = start_api(home, registry_uri, config, **env)
    try:
        api.wait_healthy()
        yield api
    finally:
        if api.proc.poll() is None:
            api.proc.kill()
            api.proc.wait(timeout=30)


# ---- redis ----------------------------------------------------------------------------------------------
@dataclass
class PrivateRedis:
    """A ``redis-server`` of one test: may be stopped (SIGSTOP), killed and started again on the same port."""

    root: Path
    port: int = field(default_factory=lambda: free_ports(1)[0])
    proc: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--dir", str(self.root)], cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"redis-server exited: {(self.root / 'redis.log').read_text()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=30)


@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers a byte (a hung peer); yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


# ---- weed (S3) ------------------------------------------------------------------------------------------
@dataclass
class PrivateWeed:
    """A ``weed mini`` of one test over one data folder: may be stopped and started again on the same ports."""

    root: Path
    ports: list[int] = field(default_factory=lambda: free_ports(10))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> S3Server:
        return S3Server(
            endpoint_url=f"http://127.0.0.1:{self.ports[6]}",
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
            region=S3_REGION,
            bucket=S3_BUCKET,
            data_dir=self.root / "data",
            log_path=self.root / "weed.log",
        )

    def env(self) -> dict[str, str]:
        """The S3 variables a process needs to reach this server (explicit, no shared config files)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "RECSYS_S3_ENDPOINT_URL": self.server.endpoint_url,
            "RECSYS_S3_REGION": S3_REGION,
        }

    def start(self) -> None:
        weed = require_binary("weed")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        identity = {
            "name": "mercato",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        with open(self.server.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                weed_mini_command(weed, self.root / "data", config, self.ports),
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_s3(self.server, self.proc, STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)
