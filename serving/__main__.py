"""``python -m serving``: run the scoring API with uvicorn on ``RECSYS_HOST``:``RECSYS_PORT``."""

from __future__ import annotations

import logging

import uvicorn

from serving.app import create_app
from serving.settings import serving_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = serving_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
