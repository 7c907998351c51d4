"""A real, small trained BPR model over two item clusters, exported with fallback/history/items files;
the API served by real uvicorn in a thread; and the test suite's API key (every scope)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import Config, load_config
from core.settings import Settings
from evaluation.data import TrainData
from serving.auth import SCOPES, new_key
from training.train import write_serving_files

#: The test suite's API key (generated per run, every scope) and its stored record for RECSYS_API_KEYS.
TEST_KEY, TEST_KEY_RECORD = new_key("tests", SCOPES)
TEST_KEYS_JSON = json.dumps({"keys": [TEST_KEY_RECORD.to_json()]})
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}

N_PER_CLUSTER = 12
#: Item that items.json marks unavailable: it must never be recommended.
UNAVAILABLE = "a11"


def cluster_items() -> pd.DataFrame:
    rows = []
    for cat, prefix in (("alpha", "a"), ("beta", "b")):
        for i in range(N_PER_CLUSTER):
            rows.append(
                {
                    "item_id": f"{prefix}{i}",
                    "category": cat,
                    "brand": prefix,
                    "price": 10.0 + i,
                    "available": f"{prefix}{i}" != UNAVAILABLE,
                }
            )
    return pd.DataFrame(rows)


def cluster_events(n_users: int = 60, per_user: int = 7, seed: int = 0) -> pd.DataFrame:
    """Users ``ua*`` only touch alpha items, ``ub*`` only beta ones (a popular head in each)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_PER_CLUSTER + 1)
    weights /= weights.sum()
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = []
    for u in range(n_users):
        prefix = "a" if u % 2 == 0 else "b"
        picks = rng.choice(N_PER_CLUSTER, size=per_user, replace=False, p=weights)
        for n, i in enumerate(picks):
            rows.append(
                {
                    "user_id": f"u{prefix}{u}",
                    "item_id": f"{prefix}{i}",
                    "event_type": "view" if n % 3 else "purchase",
                    "ts": (start + dt.timedelta(hours=u * 10 + n)).isoformat(),
                }
            )
    return pd.DataFrame(rows)


def export_bpr(out: Path) -> Path:
    """Train BPR (quick profile, CPU) and export it with the serving side files."""
    from models.bpr import BPRRecommender

    items = cluster_items()
    data = TrainData.from_events(cluster_events(), items)
    model = BPRRecommender(profile="quick", epochs=40, dim=16, batch_size=32, lr=0.05, device="cpu").fit(data)
    art = model.export(out)
    write_serving_files(art, data, items)
    return art


def flipped_copy(src: Path, out: Path) -> Path:
    """A copy of an exported BPR artifact that ranks the other way round (item factors and biases negated):
    a second, different version of the same model class (loadable in any process)."""
    import shutil

    shutil.copytree(src, out)
    with np.load(out / "arrays.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["items"], arrays["bias"] = -arrays["items"], -arrays["bias"]
    with open(out / "arrays.npz", "wb") as fh:
        np.savez(fh, **arrays)
    return out


def settings_for(home: Path, registry: Path, state_uri: str = "memory://") -> Settings:
    return Settings(home=home, registry_uri=str(registry), lake_uri=str(home / "lake"), state_uri=state_uri)


@contextmanager
def served(app: object) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) in a thread of this process; yields its base URL."""
    import uvicorn

    from tests.services import free_ports

    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def live_cfg(**serving: object) -> Config:
    """The project config with a slow poll (tests refresh by hand) and any ``[serving]`` keys changed."""
    return load_config().replace(serving={"poll_seconds": 60.0, **serving})
