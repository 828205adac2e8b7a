"""Browser-facing checks that run before any route: ``Host``, ``Origin``, JSON content types
and JSON nesting depth, on the main listener and on the ComfyUI listener.

A server on loopback without tokens trusts whoever can reach the port, and a web page the user
has open can reach it too. ``RequestGuard`` closes what a browser can do from another site:

* **DNS rebinding**: ``Host`` must be a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``),
  the address the connection came in on, or a configured allowed host; else 421
  ``host_not_allowed``.
* **CSRF and cross-site WebSockets**: a state-changing request (not GET/HEAD/OPTIONS) or a
  WebSocket handshake whose ``Origin`` is not the server's own (the host and port of ``Host``)
  nor a configured allowed origin is refused with 403 ``origin_not_allowed`` (``Origin: null``
  included). Requests without ``Origin`` (curl, scripts, ComfyUI's example clients) pass.
* **JSON as a "simple" body**: Takeflow's own JSON routes need ``application/json`` (415
  ``unsupported_media_type``); the ComfyUI routes read JSON whatever the content type, as
  ComfyUI does, and rely on the ``Origin`` check.
* **Deep JSON**: a body or WebSocket message nested deeper than ``max_json_depth`` is refused
  (400 ``json_too_deep``) by a linear scan of the bytes, before any recursive parser sees it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send, WebSocketSendEvent

from graph_runtime.errors import TakeflowError
from server.auth import deny

DEFAULT_MAX_JSON_DEPTH = 256
MAX_SCANNED_BYTES = 32 * 1024 * 1024  # above the default JSON body limits (1 MiB, 16 MiB)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ANY = "*"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")
_BLOCK = 64  # brackets walked per step: a block of openers alone can pass the limit


class HostNotAllowedError(TakeflowError):
    code = "host_not_allowed"
    http_status = 421


class OriginNotAllowedError(TakeflowError):
    code = "origin_not_allowed"
    http_status = 403


class JSONContentTypeError(TakeflowError):
    code = "unsupported_media_type"
    http_status = 415


class JSONTooDeepError(TakeflowError):
    code = "json_too_deep"
    http_status = 400


def host_name(host: str) -> str:
    """The name of a ``Host`` value without its port: ``[::1]:80`` -> ``::1``, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.hostname or "").rstrip("."), port or _DEFAULT_PORTS.get(scheme)


def normalize_origin(origin: str) -> str:
    """``scheme://host:port`` (default port filled in, lower case); ``""`` when not a URL."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return ""
    host, port = _host_and_port(parts.netloc, parts.scheme)
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}" if host and port != -1 else ""


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard accepts. ``allowed_hosts``: extra ``Host`` names (``*``: any host, no
    check); ``allowed_origins``: extra origins (``https://studio.example:443``; ``*``: any);
    ``max_json_depth``: the deepest nesting of arrays and objects a JSON body may have."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    check_host: bool = True
    json_content_type: bool = field(default=True)
    max_scanned_bytes: int = MAX_SCANNED_BYTES

    @classmethod
    def for_server(
        cls,
        bind_host: str,
        auth: bool,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        json_content_type: bool = True,
        max_body_bytes: int = 0,
    ) -> GuardPolicy:
        """The policy of a server bound to ``bind_host``: a named bind host is allowed; bound
        to every interface with tokens required (and no allowed hosts configured), ``Host``
        is not checked (tokens, not the network, protect it; see docs/security.md)."""
        hosts = {host_name(h) if h != ANY else ANY for h in allowed_hosts}
        bind = host_name(bind_host)
        if bind not in WILDCARD_BINDS:
            hosts.add(bind)
        check_host = ANY not in hosts and not (auth and bind in WILDCARD_BINDS and not hosts)
        origins = {o.strip() if o.strip() == ANY else normalize_origin(o) for o in allowed_origins}
        return cls(
            allowed_hosts=frozenset(hosts),
            allowed_origins=frozenset(o for o in origins if o),
            max_json_depth=max_json_depth,
            check_host=check_host,
            json_content_type=json_content_type,
            max_scanned_bytes=max(MAX_SCANNED_BYTES, max_body_bytes),
        )

    def host_allowed(self, host: str | None, scope: Scope) -> bool:
        if not self.check_host or host is None:  # no browser leaves Host out
            return True
        name = host_name(host)
        if name in LOOPBACK_HOSTS or name in self.allowed_hosts:
            return True
        server = scope.get("server")
        return server is not None and _same_address(name, str(server[0]))

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """The server's own origin: the host of ``Host`` and its port (without a port in
        ``Host``: the default port of the origin's scheme, so a TLS proxy in front keeps
        working), or a configured one. ``null`` (sandboxed frames, ``file:`` pages) never is."""
        normal = normalize_origin(origin)
        if not normal:
            return False
        if ANY in self.allowed_origins or normal in self.allowed_origins:
            return True
        if host is None:
            return False
        own = urlsplit(f"//{host.strip().lower()}")
        theirs = urlsplit(normal)
        try:
            own_port = own.port
        except ValueError:
            return False
        if (own.hostname or "").rstrip(".") != theirs.hostname:
            return False
        return theirs.port == (own_port or _DEFAULT_PORTS[theirs.scheme])


def _same_address(name: str, address: str) -> bool:
    """``name`` is the literal IP the connection reached (never a DNS name)."""
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(address)
    except ValueError:
        return name == address.lower()


def json_depth_exceeds(data: bytes, limit: int) -> bool:
    """Whether arrays/objects in the JSON text ``data`` nest deeper than ``limit``, without
    recursion and mostly in C: escapes and strings are cut out, then the brackets left are
    walked in blocks, byte by byte only in a block that could pass the limit."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes pair left to right
    brackets = b"".join(text.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), _BLOCK):
        block = brackets[start : start + _BLOCK]
        opens = block.count(b"[") + block.count(b"{")
        if depth + opens <= limit:
            depth += 2 * opens - len(block)
            continue
        for byte in block:
            depth += 1 if byte in _OPENERS else -1
            if depth > limit:
                return True
    return False


def check_json_depth(data: bytes | str, limit: int = DEFAULT_MAX_JSON_DEPTH) -> None:
    """Raise ``JSONTooDeepError`` when ``data`` nests arrays/objects deeper than ``limit``."""
    if json_depth_exceeds(data.encode() if isinstance(data, str) else data, limit):
        raise JSONTooDeepError(f"the JSON is nested deeper than {limit} levels", limit=limit)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _takes_json_body(scope: Scope) -> bool:
    """The route declares a JSON ``data`` body (Takeflow's own API; the ComfyUI routes read
    their bodies themselves, whatever the content type)."""
    handler = scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    data = signature.parameters.get("data") if signature is not None else None
    if data is None:
        return False
    media_type = getattr(data.kwarg_definition, "media_type", None)
    return media_type is None or str(getattr(media_type, "value", media_type)) == "application/json"


def _is_json_type(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


class RequestGuard:
    """ASGI middleware applying a ``GuardPolicy`` to every routed HTTP request and WebSocket."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or GuardPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        policy = self.policy
        host = _header(scope, b"host")
        if not policy.host_allowed(host, scope):
            await deny(scope, send, HostNotAllowedError(
                f"this server does not answer for host '{host_name(host or '')}' (add it with "
                "--allowed-host or server.allowed_hosts in the home's config.json)",
                host=host_name(host or ""),
            ))  # fmt: skip
            return
        origin = _header(scope, b"origin")
        if (
            origin is not None
            and (kind == ScopeType.WEBSOCKET or scope.get("method") not in SAFE_METHODS)
            and not policy.origin_allowed(origin, host)
        ):
            await deny(scope, send, OriginNotAllowedError(
                f"cross-origin request from '{origin}' refused (allow it with --allowed-origin "
                "or server.allowed_origins in the home's config.json)",
                origin=origin,
            ))  # fmt: skip
            return
        if kind == ScopeType.WEBSOCKET:
            await self.app(scope, self._websocket_receive(receive, send), send)
            return
        content_type = _header(scope, b"content-type") or ""
        mime = content_type.partition(";")[0].strip().lower()
        if (
            policy.json_content_type
            and scope.get("method") not in SAFE_METHODS
            and _has_body(scope)
            and not _is_json_type(content_type)
            and _takes_json_body(scope)
        ):
            await deny(scope, send, JSONContentTypeError(
                f"this route takes a JSON body: send it as 'Content-Type: application/json', "
                f"not {mime or 'no content type'!r}",
                content_type=mime,
            ))  # fmt: skip
            return
        if mime.startswith("multipart/"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._http_receive(receive), send)

    def _http_receive(self, receive: Receive) -> Receive:
        """The body's depth is checked when its last chunk arrives: before the app, which
        reads the whole body before parsing it, can parse any of it."""
        limit, most = self.policy.max_json_depth, self.policy.max_scanned_bytes
        chunks: list[bytes] = []
        size = 0

        async def scanned() -> ReceiveMessage:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request" and size <= most:
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
                if size > most:  # over every JSON body limit: not parsed as JSON
                    chunks.clear()
                elif not message.get("more_body", False):
                    check_json_depth(b"".join(chunks), limit)
                    chunks.clear()
            return message

        return scanned

    def _websocket_receive(self, receive: Receive, send: Send) -> Receive:
        """Too-deep messages never reach the app: the client gets an ``error`` message."""
        limit = self.policy.max_json_depth

        async def scanned() -> ReceiveMessage:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                text = message.get("text")
                data: str | bytes = text if text is not None else message.get("bytes") or b""
                try:
                    check_json_depth(data, limit)
                except JSONTooDeepError as exc:
                    error: dict[str, Any] = {"type": "error", **exc.to_dict()}
                    answer: WebSocketSendEvent = {
                        "type": "websocket.send", "text": json.dumps(error), "bytes": None
                    }  # fmt: skip
                    await send(answer)
                    continue
                return message

        return scanned


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None
