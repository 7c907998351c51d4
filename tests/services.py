"""Real service fixtures: a SeaweedFS ``weed mini`` S3 server and a ``redis-server``, one per test session.

Use from a test module with ``from tests.services import s3_server, s3_env  # noqa: F401`` (or list
``tests.services`` in ``pytest_plugins``). Mark the tests ``services``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_binary

S3_ACCESS_KEY = "mercato-test"
S3_SECRET_KEY = "mercato-test-secret"
S3_REGION = "us-east-1"
S3_BUCKET = "mercato-tests"
#: weed mini answers S3 within a few seconds on a quiet machine; a loaded 2-core box needs more.
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    data_dir: Path
    log_path: Path

    def client(self):
        """A boto3 S3 client with this server's credentials (explicit, not from the environment)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def fresh_prefix(self) -> str:
        """A unique ``s3://bucket/prefix`` so that tests sharing the server never see each other's keys."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:10]}"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate ``proc``, kill it if it outlives ``timeout`` seconds, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def weed_mini_command(weed: str, data_dir: Path, s3_config: Path, ports: list[int]) -> list[str]:
    """``weed mini`` bound to 127.0.0.1 with every listening port chosen explicitly (no fixed defaults)."""
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = ports
    return [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={s3_config}",
    ]


def _wait_for_s3(server: S3Server, proc: subprocess.Popen, timeout_s: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {proc.returncode}; log: {server.log_path}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.5)
    raise TimeoutError(
        f"weed mini S3 endpoint {server.endpoint_url} not ready in {timeout_s}s ({last}); log: {server.log_path}"
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint (SeaweedFS ``weed mini``) with one bucket, for the whole test session."""
    weed = require_binary("weed")
    root = tmp_path_factory.mktemp("weed")
    data_dir = root / "data"
    data_dir.mkdir()
    s3_config = root / "s3.json"
    identity = {
        "name": "mercato",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    s3_config.write_text(json.dumps({"identities": [identity]}))
    ports = free_ports(10)
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports[6]}",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=S3_REGION,
        bucket=S3_BUCKET,
        data_dir=data_dir,
        log_path=root / "weed.log",
    )
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(
            weed_mini_command(weed, data_dir, s3_config, ports),
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_s3(server, proc, STARTUP_TIMEOUT_S)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """Standard AWS env vars (and ``RECSYS_S3_*``) pointing at ``s3_server``, no shared config files."""
    from core.settings import get_settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("RECSYS_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("RECSYS_S3_REGION", s3_server.region)
    get_settings.cache_clear()
    yield s3_server
    get_settings.cache_clear()


@dataclass(frozen=True)
class RedisServer:
    port: int
    log_path: Path

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port, no persistence, for the whole test session."""
    binary = require_binary("redis-server")
    root = tmp_path_factory.mktemp("redis")
    (port,) = free_ports(1)
    server = RedisServer(port=port, log_path=root / "redis.log")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    with open(server.log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}; log: {server.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"redis-server not ready on port {port} in {STARTUP_TIMEOUT_S}s; log: {server.log_path}"
                )
            time.sleep(0.1)
        yield server
    finally:
        stop_process(proc)
