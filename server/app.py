"""The Litestar app: one plugin wires the runtime's services into thin controllers.

``create_app(runtime, config)`` builds the app for an open runtime (tests, embedding);
``serve(home, options)`` opens a runtime and runs it under uvicorn on loopback.
Every request gets a trace span (``server.observability``) and passes the ``Host``/``Origin``/JSON
checks (``server.guard``); with ``config.auth`` every request needs a bearer token and may only
touch its projects (``server.auth``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins import InitPluginProtocol
from litestar.static_files import create_static_files_router

from dagster_defs.runtime import Runtime, open_runtime
from dagster_defs.ticker import open_ticker
from server.api import CONTROLLERS
from server.auth import AuthMiddleware, ProjectAccess, TokenStore, needs_auth
from server.callbacks import CallbackSender
from server.comfy.app import ComfyPlugin, create_comfy_app, run_servers
from server.comfy.service import ComfyService
from server.config import ServeOptions, ServerConfig, add_serve_options
from server.demo import ensure_demo
from server.docs_page import OfflineDocsPlugin
from server.errors import EXCEPTION_HANDLERS, document_errors
from server.guard import RequestGuard
from server.health import HealthChecks, TemplateFaults
from server.live import LiveEvents
from server.logging_once import configure_logging, logging_config
from server.observability import TracingMiddleware, configure_tracing, metrics
from server.submissions import Submissions
from server.websocket import events_socket

log = logging.getLogger(__name__)


class TakeflowPlugin(InitPluginProtocol):
    """Registers the runtime's services as dependencies and ties the live fan-out to the app."""

    def __init__(self, runtime: Runtime, config: ServerConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.hub = LiveEvents(runtime.state, runtime.runner.metrics)
        self.submissions = Submissions(runtime, config.max_batch_size, config.max_graph_nodes)
        self.callback_sender = CallbackSender(
            self.submissions.callbacks, self.submissions.task_status
        )
        self.template_faults = TemplateFaults(config.template_fault_window_s)
        self.ticker = open_ticker(runtime) if config.schedules else None  # saved schedules
        self.health = HealthChecks(
            runtime,
            config.health_timeout_s,
            connections=lambda: self.hub.connections,
            template_faults=self.template_faults,
            ticker=self.ticker,
        )
        self.tokens = TokenStore(runtime.home.path)
        for name in config.plugins:
            log.warning("loading server plugin %s", name)
            importlib.import_module(name).install(runtime)

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        self.hub.start(asyncio.get_running_loop())
        # distributed mode: the events carry every process's (workers, other replicas)
        live = self.runtime.events
        live.add_sink(self.hub)
        live.start()
        self.runtime.runner.add_sink(self.template_faults)
        if self.ticker is not None:
            self.ticker.start()
        self.callback_sender.start()  # also the deliveries a previous server left undone
        try:
            yield
        finally:
            await self.callback_sender.stop()
            self.submissions.callbacks.close()
            if self.ticker is not None:
                await asyncio.to_thread(self.ticker.stop)
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
        guard = DefineMiddleware(RequestGuard, policy=self.config.guard_policy())
        app_config.middleware.insert(1, guard)
        if self.config.auth:
            app_config.middleware.insert(2, DefineMiddleware(AuthMiddleware, tokens=self.tokens))
            app_config.guards.append(ProjectAccess(self.runtime.state))
        app_config.lifespan.append(self.lifespan)
        app_config.on_startup.append(document_errors)
        app_config.exception_handlers.update(EXCEPTION_HANDLERS)
        return app_config


def _constant(value: Any) -> Any:
    def provide() -> Any:
        return value

    return provide


EDITOR_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Takeflow: the editor is not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Takeflow is running, but the canvas editor is not built</h1>
<p>Build it once, then reload this page:</p>
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>(or run <code>./scripts/install</code>, which also builds it). A build elsewhere can be served
with <code>takeflow serve --web-dist DIR</code>.</p>
<p>The API works without it: see <a href="/schema">/schema</a>.</p>
</body></html>
"""


@get("/", include_in_schema=False, sync_to_thread=False)
def editor_not_built() -> Response[str]:
    """``/`` when there is no built editor: how to build it (HTML), instead of a JSON 404."""
    return Response(EDITOR_NOT_BUILT, status_code=404, media_type=MediaType.HTML)


def create_app(
    runtime: Runtime, config: ServerConfig | None = None, comfy: ComfyService | None = None
) -> Litestar:
    """The Takeflow server for an open runtime (the caller closes the runtime); the ComfyUI
    API is mounted under ``/api`` (``comfy``: a service shared with a compat listener)."""
    config = config or ServerConfig()
    comfy = comfy or ComfyService(runtime, auth=config.auth)
    web_dist = config.web_dist if config.web_dist is not None else ServerConfig.default_web_dist()
    handlers: list[Any] = []
    if web_dist is not None and (web_dist / "index.html").exists():
        handlers.append(
            create_static_files_router(path="/", directories=[web_dist], html_mode=True, name="web")
        )
    else:
        handlers.append(editor_not_built)
    return Litestar(
        route_handlers=handlers,
        plugins=[TakeflowPlugin(runtime, config), ComfyPlugin(comfy)],
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
        logging_config=logging_config(),
        debug=False,
    )


@contextmanager
def _stop_signals_caught() -> Iterator[None]:
    """Uvicorn shuts down on SIGTERM/SIGINT and then raises the signal again; with the default
    handlers SIGTERM would end the process before the runtime could stop its tasks. Here the
    signal only ends serving; ``serve`` then closes the runtime and returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda sig, _frame: caught.append(sig)) for sig in stops}
    try:
        yield
    finally:
        if caught:
            log.warning("stopping on %s", signal.Signals(caught[0]).name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(home: str | Path | None = None, options: ServeOptions | None = None) -> int:
    """Open the Takeflow home and serve it with uvicorn until interrupted."""
    import uvicorn

    options = options or ServeOptions()
    config = options.config
    config = dataclasses.replace(config, auth=needs_auth(config.host, config.auth))
    configure_tracing(config.trace_exporter)
    configure_logging()  # before the runtime's threads: see server.logging_once
    runtime = open_runtime(home, workers=options.workers)
    config = config.with_home_settings(runtime.home.config())
    demo_model: threading.Thread | None = None
    try:
        if options.demo:  # embedded: the model is built while serving (its lookups wait for it)
            demo_model = ensure_demo(runtime, wait=runtime.cluster is not None)
        comfy = ComfyService(runtime, auth=config.auth)
        app = create_app(runtime, config, comfy)
        access = "bearer tokens required" if config.auth else "no tokens (loopback only)"
        print(
            f"Takeflow serving {runtime.home.path} on http://{config.host}:{config.port} "
            f"(docs: /schema; {access})",
            flush=True,
        )
        if config.auth and not TokenStore(runtime.home.path).list():
            print(
                "no tokens yet: create one with "
                "`takeflow token create --user NAME --project PROJECT`",
                flush=True,
            )
        uv_options: dict[str, Any] = {
            "log_level": "warning",
            "log_config": None,  # configured above, before the runtime's threads
            "ws_ping_interval": 20.0,
            "ws_per_message_deflate": config.ws_compression,
        }
        with _stop_signals_caught():
            if config.comfy_port:
                print(
                    f"ComfyUI API on http://{config.host}:{config.comfy_port} (and under /api/)",
                    flush=True,
                )
                comfy_app = create_comfy_app(comfy, config.auth, guard=config.guard_policy())
                run_servers(
                    app, comfy_app, config.host, config.port, config.comfy_port, **uv_options
                )
            else:
                uvicorn.run(app, host=config.host, port=config.port, **uv_options)
    finally:  # after SIGTERM/SIGINT: running tasks get the grace period, then are interrupted
        if demo_model is not None:
            demo_model.join()  # seconds: the server ends after the build it started
        runtime.close(config.shutdown_grace_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m server.app``: the same as ``takeflow serve`` (used by tests and benches)."""
    parser = argparse.ArgumentParser(prog="python -m server.app")
    parser.add_argument("--home")
    add_serve_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return serve(args.home, ServeOptions.from_args(args))


if __name__ == "__main__":
    raise SystemExit(main())
