"""The API key a command-line client presents to the scoring API (``serving.auth``).

``RECSYS_API_KEY`` when set; else the local development key that ``make run`` creates
(``python -m serving.keys local``) in ``<home>/serving/local-api-key`` (mode 0600). ``None`` when
neither exists: the client then says how to get one instead of collecting 401s.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RECSYS_API_KEY"
LOCAL_KEY_FILE = ("serving", "local-api-key")
HOW_TO_GET_ONE = (
    "no API key: set RECSYS_API_KEY (create one with python -m serving.keys create --id NAME "
    "--scopes events:write,recs:read), or run python -m serving.keys local for a local development key"
)


def local_key_path(home: Path | None = None) -> Path:
    if home is None:
        from core.settings import get_settings

        home = get_settings().home
    return Path(home).joinpath(*LOCAL_KEY_FILE)


def api_key(home: Path | None = None) -> str | None:
    """``RECSYS_API_KEY``, else the local development key, else ``None``."""
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return from_env
    path = local_key_path(home)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def auth_headers(key: str | None) -> dict[str, str]:
    return {} if not key else {"Authorization": f"Bearer {key}"}
