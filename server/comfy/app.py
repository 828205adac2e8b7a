"""The compat listener (``takeflow serve --comfy-port 8188``) and the hook for the main app.

``ComfyPlugin`` mounts the ComfyUI routes under ``/api`` of the main app and ties the shared
``ComfyService`` to the app's lifespan; ``create_comfy_app`` is the second app, with the routes
at ``/`` and ``/api``, in the same process over the same runtime. With auth on, every request to
the compat app needs a token (``Authorization: Bearer``, or ``?token=`` on GET and ``/ws``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp, Receive, Scope, Send

from server.auth import TokenStore, UnauthorizedError, deny, token_from_scope
from server.comfy.routes import make_router
from server.comfy.service import ComfyService
from server.errors import EXCEPTION_HANDLERS
from server.guard import GuardPolicy, RequestGuard
from server.logging_once import logging_config


class ComfyPlugin(InitPluginProtocol):
    """Adds the ComfyUI routes (under ``prefix``) and the service's lifespan to an app."""

    def __init__(self, service: ComfyService, prefixes: tuple[str, ...] = ("/api",)) -> None:
        self.service = service
        self.prefixes = prefixes

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        await self.service.start()
        try:
            yield
        finally:
            await self.service.stop()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(make_router(p, self.service) for p in self.prefixes)
        app_config.lifespan.append(self.lifespan)
        return app_config


class CompatAuthMiddleware:
    """Every request to the compat listener needs a token (there are no public paths)."""

    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            scope["user"] = self.tokens.authenticate(token_from_scope(scope))
        except UnauthorizedError as exc:
            await deny(scope, send, exc)
            return
        await self.app(scope, receive, send)


def create_comfy_app(
    service: ComfyService,
    auth: bool = False,
    max_body_bytes: int = 16 * 1024 * 1024,
    guard: GuardPolicy | None = None,
) -> Litestar:
    """The compat listener's app: the ComfyUI API at ``/`` and ``/api``, nothing else; the
    ``Host``/``Origin``/JSON-depth checks (``server.guard``) run before auth."""
    middleware: list[Any] = [DefineMiddleware(RequestGuard, policy=guard or GuardPolicy())]
    if auth:
        middleware.append(
            DefineMiddleware(CompatAuthMiddleware, tokens=TokenStore(service.bridge.home))
        )
    return Litestar(
        route_handlers=[],
        plugins=[ComfyPlugin(service, ("/", "/api"))],
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
        request_max_body_size=max_body_bytes,
        openapi_config=None,
        logging_config=logging_config(),
        debug=False,
    )


def run_servers(
    app: Litestar, comfy_app: Litestar, host: str, port: int, comfy_port: int, **options: Any
) -> None:
    """Serve the main app and the compat app in one process and one event loop.

    The main server owns the signal handlers; the compat server stops when it does."""
    import asyncio

    import uvicorn

    class _Quiet(uvicorn.Server):
        def capture_signals(self) -> Any:  # the main server handles SIGINT/SIGTERM
            import contextlib

            return contextlib.nullcontext()

    main = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    compat = _Quiet(uvicorn.Config(comfy_app, host=host, port=comfy_port, **options))

    async def follow_main() -> None:
        while not main.should_exit:
            await asyncio.sleep(0.1)
        compat.should_exit = True

    async def both() -> None:
        await asyncio.gather(main.serve(), compat.serve(), follow_main())

    asyncio.run(both())
