"""Naive scoring API: the baseline ``bench/serving_load.py`` measures the real API against.

One FastAPI worker, no batching, no caching, no index: each request encodes the user with the model,
scores every item (``Recommender.score``, which rebuilds the item matrix) and ``np.argsort``s all of them.

``python -m bench.naive_api ARTIFACT_DIR --port 8011``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException

from models.base import UNKNOWN_USER, Recommender


def create_naive_app(artifact_dir: str | Path) -> FastAPI:
    """``GET /v1/recommendations/{user_id}?k=`` and ``GET /health`` over one exported artifact folder."""
    src = Path(artifact_dir)
    model = Recommender.load(src)
    users = {str(u): i for i, u in enumerate(model.user_ids)}
    indptr, indices = np.zeros(len(users) + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if (src / "history.npz").is_file():
        with np.load(src / "history.npz") as npz:
            indptr, indices = npz["indptr"], npz["indices"]
    app = FastAPI(title="naive baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/recommendations/{user_id}")
    def recommend(user_id: str, k: int = 10) -> dict[str, Any]:
        user = users.get(user_id)
        if user is None:
            raise HTTPException(404, f"user_id {user_id!r} unknown to the naive baseline")
        history = indices[indptr[user] : indptr[user + 1]]
        scores = model.score(np.asarray([user if user is not None else UNKNOWN_USER]), [history])[0]
        scores[history] = -np.inf
        order = np.argsort(-scores)[:k]
        return {
            "user_id": user_id,
            "items": [{"item_id": str(model.item_ids[i]), "score": float(scores[i])} for i in order],
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("artifact_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args(argv)
    uvicorn.run(create_naive_app(args.artifact_dir), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
