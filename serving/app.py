"""FastAPI scoring API: ``create_app`` (the uvicorn factory ``serving.app:create_app``) and ``build_store``.

Routes (``serving/api/routes``): ``GET /health``; ``POST /v1/events`` (validate, update the real-time
user state, append to the landing zone in micro-batches; 202); ``GET /v1/recommendations/{user_id}``
(model + live state); ``POST /v1/recommendations`` (anonymous session from its recent items); ``GET
/v1/items/{item_id}/similar`` (cosine of the model's item vectors); ``GET /metrics`` (Prometheus).

``create_app`` builds everything (settings, registry, model store, experiment store, state, the
write-ahead log and the landing writers for events and exposures, the API keys: a ``ServingRuntime``)
and starts nothing: the WAL replay, the first polls, the polling threads and the landing timers start
with the app's lifespan, and its shutdown flushes every accepted event and exposure. Every route but
``/health`` needs an API key with the route's scope (``serving.auth``). Every client error is a 4xx
JSON ``{"error": ...}`` that names the field; unexpected ones a 500 without a stack trace; overload and
unavailable dependencies a 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.config import Config, load_config
from core.registry import ServingRegistry
from core.settings import Settings
from serving.api.errors import install_error_handlers
from serving.api.middleware import MetricsMiddleware
from serving.api.routes import events, health, items, recommendations, users
from serving.auth import KeyRing
from serving.erasure import Erasure
from serving.events import LandingWriter
from serving.experiments import ExperimentStore
from serving.runtime import ServingRuntime
from serving.settings import ServingSettings, serving_settings
from serving.state import StateStore, open_state
from serving.store import ModelStore
from serving.wal import WriteAheadLog


def build_store(settings: Settings | None = None, cfg: Config | None = None) -> ModelStore:
    """The model store for these settings: registry from ``Settings.registry``, cache under home."""
    server_settings = serving_settings(settings)
    config = (cfg or load_config()).serving
    return ModelStore(
        ServingRegistry.from_settings(server_settings, timeout_seconds=config.registry_timeout_seconds),
        server_settings.cache_dir,
        config.poll_seconds,
        scorer_options={"index_kind": config.index, "index_exact_max_items": config.index_exact_max_items},
        max_backoff=config.registry_retry_max_seconds,
    )


def build_experiments(settings: ServingSettings, cfg: Config, store: ModelStore) -> ExperimentStore:
    """The experiment store: same registry as the champion, its own cache (``<cache dir>-experiments``)."""
    config = cfg.serving
    return ExperimentStore(
        store.registry,
        Path(f"{settings.cache_dir}-experiments"),
        config.poll_seconds,
        scorer_options=store.scorer_options,
        champion=lambda: store.current,
    )


def create_app(
    settings: Settings | None = None,
    cfg: Config | None = None,
    store: ModelStore | None = None,
    poll: bool = True,
    state: StateStore | None = None,
    landing: LandingWriter | None = None,
    experiments: ExperimentStore | None = None,
    exposures: LandingWriter | None = None,
    keys: KeyRing | None = None,
) -> FastAPI:
    """The scoring API. ``store``/``state``/``landing``/``experiments``/``exposures``/``keys`` may be given
    (tests, embedding); ``poll=False`` skips the poll threads. Exposures are logged unless ``[serving]
    log_exposures`` is false (or ``exposures`` is given). Accepted events and exposures go through the
    write-ahead log in ``RECSYS_WAL_DIR`` unless ``[serving] durable_events`` is false (or ``landing`` is
    given)."""
    server_settings = serving_settings(settings)
    full = cfg or load_config()
    config = full.serving
    if store is None:
        store = build_store(server_settings, cfg)
    if experiments is None:
        experiments = build_experiments(server_settings, full, store)
    if state is None:
        state = open_state(
            server_settings.state_uri,
            config.state_max_users,
            config.state_max_recent,
            config.state_ttl_seconds,
            full.attribution.memory_max_requests,
            config.state_timeout_seconds,
            config.state_connect_timeout_seconds,
        )
    wal = WriteAheadLog(server_settings.wal_path).open() if config.durable_events and landing is None else None
    if landing is None:
        landing = LandingWriter(
            server_settings.lake,
            config.landing_flush_events,
            config.landing_flush_seconds,
            config.landing_source,
            max_pending=config.landing_max_pending,
            when_full="refuse",
            wal=None if wal is None else wal.stream("events"),
        )
    if exposures is None and config.log_exposures:
        exposures = LandingWriter(
            server_settings.lake,
            config.exposure_flush_events,
            config.exposure_flush_seconds,
            config.landing_source,
            dataset="exposures",
            flush_inline=False,
            max_pending=config.exposure_max_pending,
            when_full="drop",
            wal=None if wal is None else wal.stream("exposures"),
        )
    if keys is None:
        keys = KeyRing.from_settings(
            server_settings.keys_file, server_settings.api_keys or None, server_settings.auth_disabled
        )
    erasure = Erasure(server_settings.lake, server_settings.erasure_salt or None)
    runtime = ServingRuntime(
        config, store, state, landing, experiments, exposures, full.attribution, keys=keys, wal=wal, erasure=erasure
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start(poll=poll)
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(title="Mercato scoring API", version="1", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.store = runtime.store
    app.state.user_state = runtime.user_state
    app.state.landing = runtime.landing
    app.state.exposures = runtime.exposures
    app.state.experiments = runtime.experiments
    app.state.metrics = runtime.metrics
    app.state.batcher = runtime.batcher
    app.state.serving_config = config
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics, max_body_bytes=config.max_body_bytes)
    install_error_handlers(app, config.max_k, config.retry_after_seconds)
    for router in (health.router, events.router, recommendations.router, items.router, users.router):
        app.include_router(router)
    return app
