"""Bearer tokens: who is calling, and which projects they may use.

Tokens live hashed in ``<home>/tokens.json`` (``takeflow token create --user ana --project
demo`` prints a new one once). With auth on (``takeflow serve --auth``, and always when the
server binds beyond loopback) every API, WebSocket, health, metrics and schema request needs a
token: ``Authorization: Bearer <token>``, or ``?token=`` on WebSocket and GET requests (for
``<img src>`` and browsers' WebSocket API, which cannot send headers). Without a token, or with
an unknown one, the answer is 401 ``unauthorized``; another project's resources (its tasks,
takes, files, events, uploads, canvases, batches) answer 403 ``forbidden``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import (
    ASGIApp,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
    WebSocketResponseStartEvent,
)

from graph_runtime.errors import TakeflowError
from graph_runtime.takes import check_project_id
from graph_runtime.tasks import TaskStore

TOKENS_FILE = "tokens.json"
ALL_PROJECTS = "*"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Paths that need a token when auth is on; everything else is the editor's static files.
PROTECTED_PREFIXES = ("/api/", "/ws/", "/health", "/metrics", "/schema")


class UnauthorizedError(TakeflowError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(TakeflowError):
    code = "forbidden"
    http_status = 403


@dataclass(frozen=True)
class Principal:
    """The caller behind a token: a user and the projects it may use (``*``: all)."""

    user: str
    projects: frozenset[str]
    token_id: str = ""

    @property
    def all_projects(self) -> bool:
        return ALL_PROJECTS in self.projects

    def allows(self, project_id: str | None) -> bool:
        return project_id is not None and (self.all_projects or project_id in self.projects)

    def require(self, project_id: str | None, what: str = "project") -> None:
        """Raise ``ForbiddenError`` unless the project is one of this caller's."""
        if not self.allows(project_id):
            raise ForbiddenError(
                f"user '{self.user}' may not use {what} '{project_id}'",
                project_id=project_id,
            )

    def require_task(self, project_id: str | None, owner: str | None, task_id: str) -> None:
        """Tasks of a project need that project; project-less tasks belong to their user."""
        if project_id is None and owner == self.user:
            return
        if not self.allows(project_id):
            raise ForbiddenError(
                f"user '{self.user}' may not use task '{task_id}'", task_id=task_id
            )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """``<home>/tokens.json``: token hashes with their user and projects (file mode 0600)."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / TOKENS_FILE
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Principal]] | None = None

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        tokens: list[dict[str, Any]] = json.loads(self.path.read_text()).get("tokens", [])
        return tokens

    def create(self, user: str, projects: list[str]) -> tuple[str, dict[str, Any]]:
        """A new token for ``user``; returns the token (shown once) and its stored entry."""
        if not user or len(user) > 128:
            raise TakeflowError("a token needs a user name (at most 128 characters)")
        if not projects:
            raise TakeflowError("a token needs at least one project (or '*' for all)")
        for project in projects:
            if project != ALL_PROJECTS:
                check_project_id(project)
        token_id = secrets.token_hex(4)
        token = f"tf_{token_id}_{secrets.token_urlsafe(32)}"
        entry = {
            "id": token_id,
            "user": user,
            "projects": sorted(set(projects)),
            "sha256": _hash(token),
            "created": time.time(),
        }
        with self._lock:
            tokens = [*self._read(), entry]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"tokens": tokens}, handle, indent=2)
            os.replace(tmp, self.path)
            self._cache = None
        return token, entry

    def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.items() if k != "sha256"} for t in self._read()]

    def revoke(self, token_id: str) -> bool:
        with self._lock:
            tokens = self._read()
            kept = [t for t in tokens if t.get("id") != token_id]
            if len(kept) == len(tokens):
                return False
            self.path.write_text(json.dumps({"tokens": kept}, indent=2))
            self._cache = None
            return True

    def _principals(self) -> dict[str, Principal]:
        """Principals by token hash, re-read when the file changes (tokens added while serving)."""
        mtime = self.path.stat().st_mtime if self.path.exists() else 0.0
        with self._lock:
            if self._cache is None or self._cache[0] != mtime:
                found = {
                    t["sha256"]: Principal(t["user"], frozenset(t["projects"]), t.get("id", ""))
                    for t in self._read()
                }
                self._cache = (mtime, found)
            return self._cache[1]

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise UnauthorizedError("this server needs a bearer token (Authorization: Bearer …)")
        digest = _hash(token)
        for known, principal in self._principals().items():
            if hmac.compare_digest(known, digest):
                return principal
        raise UnauthorizedError("the token is not valid on this server")


def token_from_scope(scope: Scope) -> str | None:
    """``Authorization: Bearer``, or ``?token=`` on WebSocket and GET requests."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    if scope["type"] == "websocket" or scope.get("method") in ("GET", "HEAD"):
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if values:
            return values[-1]
    return None


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The caller of a request (``None`` when auth is off)."""
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else None


class AuthMiddleware:
    """Authenticates every protected request before routing; 401 as JSON (HTTP) or as the
    WebSocket handshake's answer."""

    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(
            PROTECTED_PREFIXES
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.tokens.authenticate(token_from_scope(scope))
        except UnauthorizedError as exc:
            await deny(scope, send, exc)
            return
        scope["user"] = principal
        await self.app(scope, receive, send)


async def deny(scope: Scope, send: Send, exc: TakeflowError) -> None:
    """Answer an HTTP request, or refuse a WebSocket handshake, with the error's JSON body."""
    body = json.dumps(exc.to_dict()).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if exc.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="takeflow"'))
    if scope["type"] == "http":
        start: HTTPResponseStartEvent = {
            "type": "http.response.start", "status": exc.http_status, "headers": headers
        }  # fmt: skip
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        ws_start: WebSocketResponseStartEvent = {
            "type": "websocket.http.response.start", "status": exc.http_status,
            "headers": headers,
        }  # fmt: skip
        await send(ws_start)
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        return
    await send({"type": "websocket.close", "code": 4000 + exc.http_status, "reason": exc.code})


class ProjectAccess:
    """A guard on every route: path parameters naming a project, task or batch must be the
    caller's. Body contents (submitted project ids, subscriptions) are checked where read."""

    def __init__(self, state: TaskStore) -> None:
        self.state = state

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if principal is None:
            return
        params = connection.path_params
        if "project_id" in params:
            principal.require(params["project_id"])
        if "task_id" in params:
            self.check_task(principal, str(params["task_id"]))
        if "batch_id" in params:
            for record in self.state.list(batch_id=str(params["batch_id"])):
                principal.require_task(record.project_id, record.user, record.task_id)
        if "user_id" in params and params["user_id"] != principal.user:
            raise ForbiddenError(
                f"this token belongs to user '{principal.user}', not '{params['user_id']}'"
            )

    def check_task(self, principal: Principal, task_id: str) -> None:
        """Unknown tasks pass (the route answers 404); other projects' tasks are forbidden."""
        record = self.state.get(task_id)
        if record is not None:
            principal.require_task(record.project_id, record.user, task_id)


def needs_auth(host: str, auth: bool) -> bool:
    """Auth is on when asked for, and always when the server listens beyond loopback."""
    return auth or host not in LOOPBACK
