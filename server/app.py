"""The Litestar app: one plugin wires the runtime's services into thin controllers.

``create_app(runtime, config)`` builds the app for an open runtime (tests, embedding);
``serve(home, host, port, workers)`` opens a runtime and runs it under uvicorn on loopback.
Every request gets a trace span (``server.observability``); with ``config.auth`` every request
needs a bearer token and may only touch its projects (``server.auth``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins import InitPluginProtocol
from litestar.static_files import create_static_files_router

from dagster_defs.runtime import Runtime, open_runtime
from graph_runtime.errors import ProjectNotFoundError
from server.api import CONTROLLERS
from server.auth import AuthMiddleware, ProjectAccess, TokenStore, needs_auth
from server.config import DEFAULT_PORT, ServerConfig, add_serve_options, serve_options
from server.docs_page import OfflineDocsPlugin
from server.errors import EXCEPTION_HANDLERS, document_errors
from server.health import HealthChecks, TemplateFaults
from server.live import LiveEvents
from server.observability import TracingMiddleware, configure_tracing, metrics
from server.submissions import Submissions
from server.websocket import events_socket

log = logging.getLogger(__name__)
DEMO_PROJECT = "demo"


class TakeflowPlugin(InitPluginProtocol):
    """Registers the runtime's services as dependencies and ties the live fan-out to the app."""

    def __init__(self, runtime: Runtime, config: ServerConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.hub = LiveEvents(runtime.state, runtime.runner.metrics)
        self.submissions = Submissions(runtime, config.max_batch_size, config.max_graph_nodes)
        self.template_faults = TemplateFaults(config.template_fault_window_s)
        self.health = HealthChecks(
            runtime,
            config.health_timeout_s,
            connections=lambda: self.hub.connections,
            template_faults=self.template_faults,
        )
        self.tokens = TokenStore(runtime.home.path)
        for name in config.plugins:
            log.warning("loading server plugin %s", name)
            importlib.import_module(name).install(runtime)

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        self.hub.start(asyncio.get_running_loop())
        # distributed mode: the feed carries every process's events (workers, other replicas)
        live = self.runtime.feed or self.runtime.runner
        live.add_sink(self.hub)
        if self.runtime.feed is not None:
            self.runtime.feed.start()
        self.runtime.runner.add_sink(self.template_faults)
        try:
            yield
        finally:
            self.runtime.runner.remove_sink(self.template_faults)
            live.remove_sink(self.hub)
            self.hub.stop()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        services: dict[str, Any] = {
            "runtime": self.runtime,
            "config": self.config,
            "hub": self.hub,
            "submissions": self.submissions,
            "health_checks": self.health,
        }
        for name, value in services.items():
            app_config.dependencies[name] = Provide(
                _constant(value), use_cache=True, sync_to_thread=False
            )
        app_config.route_handlers.extend([*CONTROLLERS, events_socket, metrics])
        app_config.middleware.insert(0, DefineMiddleware(TracingMiddleware))
        if self.config.auth:
            app_config.middleware.insert(1, DefineMiddleware(AuthMiddleware, tokens=self.tokens))
            app_config.guards.append(ProjectAccess(self.runtime.state))
        app_config.lifespan.append(self.lifespan)
        app_config.on_startup.append(document_errors)
        app_config.exception_handlers.update(EXCEPTION_HANDLERS)
        return app_config


def _constant(value: Any) -> Any:
    def provide() -> Any:
        return value

    return provide


def create_app(runtime: Runtime, config: ServerConfig | None = None) -> Litestar:
    """The Takeflow server for an open runtime (the caller closes the runtime)."""
    config = config or ServerConfig()
    web_dist = config.web_dist if config.web_dist is not None else ServerConfig.default_web_dist()
    handlers: list[Any] = []
    if web_dist is not None and (web_dist / "index.html").exists():
        handlers.append(
            create_static_files_router(path="/", directories=[web_dist], html_mode=True, name="web")
        )
    return Litestar(
        route_handlers=handlers,
        plugins=[TakeflowPlugin(runtime, config)],
        openapi_config=OpenAPIConfig(
            title="Takeflow",
            version="1",
            description=(
                "Run canvas graphs and single templates, follow them on the WebSocket "
                "`/ws/{user_id}`, and read takes, files and commits. See docs/integration.md."
            ),
            path="/schema",
            render_plugins=[OfflineDocsPlugin()],
            use_handler_docstrings=True,
        ),
        request_max_body_size=config.max_body_bytes,
        debug=False,
    )


def ensure_demo(runtime: Runtime) -> None:
    """The quick-start setup: a ``demo`` project and, when available, the demo diffusion model."""
    try:
        runtime.projects.get(DEMO_PROJECT)
    except ProjectNotFoundError:
        runtime.projects.create(DEMO_PROJECT, "Demo project")
        log.info("created project '%s'", DEMO_PROJECT)
    try:
        from nodes.diffusion.demo import ensure_demo_model
    except (ImportError, AttributeError):
        return
    try:
        ensure_demo_model(runtime.home)
    except Exception:  # the server is useful without the demo model
        log.exception("could not prepare the demo diffusion model")


def serve(
    home: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 2,
    demo: bool = False,
    config: ServerConfig | None = None,
) -> int:
    """Open the Takeflow home and serve it with uvicorn until interrupted."""
    import uvicorn

    config = config or ServerConfig(host=host, port=port)
    config = dataclasses.replace(config, auth=needs_auth(host, config.auth))
    configure_tracing(config.trace_exporter)
    runtime = open_runtime(home, workers=workers)
    try:
        if demo:
            ensure_demo(runtime)
        app = create_app(runtime, config)
        access = "bearer tokens required" if config.auth else "no tokens (loopback only)"
        print(
            f"Takeflow serving {runtime.home.path} on http://{host}:{port} "
            f"(docs: /schema; {access})",
            flush=True,
        )
        if config.auth and not TokenStore(runtime.home.path).list():
            print(
                "no tokens yet: create one with "
                "`takeflow token create --user NAME --project PROJECT`",
                flush=True,
            )
        uvicorn.run(app, host=host, port=port, log_level="warning", ws_ping_interval=20.0)
    finally:
        runtime.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m server.app``: the same as ``takeflow serve`` (used by tests and benches)."""
    parser = argparse.ArgumentParser(prog="python -m server.app")
    parser.add_argument("--home")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--max-upload-bytes", type=int, default=ServerConfig.max_upload_bytes)
    parser.add_argument("--heartbeat", type=float, default=ServerConfig.heartbeat_s)
    parser.add_argument("--ws-queue-size", type=int, default=ServerConfig.ws_queue_size)
    add_serve_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        max_upload_bytes=args.max_upload_bytes,
        heartbeat_s=args.heartbeat,
        ws_queue_size=args.ws_queue_size,
        **serve_options(args),
    )
    return serve(args.home, args.host, args.port, args.workers, args.demo, config)


if __name__ == "__main__":
    raise SystemExit(main())
