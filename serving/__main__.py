"""``python -m serving``: run the scoring API with uvicorn on ``RECSYS_HOST``:``RECSYS_PORT``.

Each request is scored on one thread (numpy/OpenBLAS, torch and faiss are pinned to one thread
before they load): concurrent requests already run on the server's thread pool, and nested thread
pools on a small machine multiply contention (measured by ``bench/serving_load.py``: 8 connections
went from 14 to 330 req/s). Scale out with ``RECSYS_WORKERS`` processes, which needs shared user
state (``RECSYS_STATE_URI=redis://…``) so that every worker sees every user's latest events.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402

import uvicorn  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    from serving.settings import serving_settings

    settings = serving_settings()
    workers = int(os.environ.get("RECSYS_WORKERS", "1"))
    if workers > 1 and not settings.state_uri.startswith("redis://"):
        raise SystemExit(
            f"RECSYS_WORKERS={workers} needs shared user state: set RECSYS_STATE_URI=redis://host:6379/0 "
            "(with the in-memory state each worker would see only its own events)"
        )
    if workers > 1:
        uvicorn.run("serving.app:create_app", factory=True, host=settings.host, port=settings.port, workers=workers)
    else:
        from serving.app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
