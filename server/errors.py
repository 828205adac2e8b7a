"""One error shape for the whole API: ``{"code", "message", ...details}`` with a stable code.

Takeflow's own errors carry their code and HTTP status; Litestar's (malformed JSON, a body of
the wrong shape, an unknown route) are mapped to the same shape here, so no client ever has to
parse a framework's error page, and nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from pydantic import ValidationError as PydanticValidationError

from dagster_defs.intake import QueueFullError
from graph_runtime.errors import GraphIssue, TakeflowError

log = logging.getLogger(__name__)


class RequestError(TakeflowError):
    """A request the API cannot accept as sent (fields, sizes, states)."""

    code = "invalid_request"
    http_status = 422


class UploadTooLargeError(RequestError):
    code = "upload_too_large"
    http_status = 413


class UnsupportedVideoError(RequestError):
    """A video upload in a format Takeflow does not take (mp4, webm and mov only)."""

    code = "unsupported_video"
    http_status = 415


class ProjectExistsError(RequestError):
    code = "project_exists"
    http_status = 409


class NotCancellableError(RequestError):
    code = "not_cancellable"
    http_status = 409


class BatchNotFoundError(RequestError):
    code = "batch_not_found"
    http_status = 404


class FileNotFoundInProjectError(RequestError):
    code = "file_not_found"
    http_status = 404


class InvalidWaitError(RequestError):
    """``?wait=`` is not a number of seconds in (0, max]."""

    code = "invalid_wait"
    http_status = 400


class InvalidIdempotencyKeyError(RequestError):
    code = "invalid_idempotency_key"
    http_status = 400


class IdempotencyKeyReusedError(RequestError):
    """An ``Idempotency-Key`` already used by this user for another request body."""

    code = "idempotency_key_reused"
    http_status = 422


class InvalidCallbackUrlError(RequestError):
    code = "invalid_callback_url"
    http_status = 422


class CallbackUrlRefusedError(RequestError):
    """A ``callback_url`` on loopback, private or reserved addresses (not allowed in config)."""

    code = "callback_url_refused"
    http_status = 422


class CallbackSecretMissingError(RequestError):
    """A callback with no signing secret for its project in ``config.json``."""

    code = "callback_secret_missing"
    http_status = 422


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def field_issue(
    code: str, loc: Sequence[Any], message: str, document: Any = None, **extra: Any
) -> GraphIssue:
    """One refused field as an API issue: ``code``, ``field`` (dotted location), a message that
    names the field, and, inside a graph document's ``nodes``, the node id and port."""
    where = ".".join(str(p) for p in loc)
    node_id = port = None
    raw_nodes = document.get("nodes") if isinstance(document, Mapping) else None
    nodes: list[Any] = raw_nodes if isinstance(raw_nodes, list) else []
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int) and loc[1] < len(nodes):
        raw = nodes[loc[1]]
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            node_id = raw["id"]
        if len(loc) >= 4 and loc[2] == "inputs":
            port = str(loc[3])
    text = f"{where}: {message}" if where else message
    return GraphIssue(code, text, node_id=node_id, port=port, extra={"field": where, **extra})


def document_issues(
    exc: PydanticValidationError, document: Any = None, code: str = "invalid_document"
) -> list[GraphIssue]:
    """The one mapping from pydantic's errors to API issues (see ``field_issue``)."""
    return [
        field_issue(code, list(err["loc"]), err["msg"], document)
        for err in exc.errors(include_url=False)
    ]


def error_body(exc: TakeflowError) -> dict[str, Any]:
    return exc.to_dict()


def takeflow_error_handler(request: Request[Any, Any, Any], exc: TakeflowError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFullError) else None
    return Response(error_body(exc), status_code=exc.http_status, headers=headers)


def validation_error_handler(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Any]:
    issues = [
        field_issue(
            "invalid_request",
            str(item["key"]).split(".") if item.get("key") else [],
            str(item.get("message", "")),
            **({"source": str(item["source"])} if item.get("source") else {}),
        )
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    body = {
        "code": "invalid_request",
        "message": "; ".join(i.message for i in issues) or "the request is invalid",
        "errors": [i.to_dict() for i in issues],
    }
    return Response(body, status_code=422)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = str(exc.detail or "")
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        code = "invalid_json"
        detail = f"the body is not valid JSON: {detail}"
    elif status == 413:
        code = "upload_too_large" if request.url.path.endswith("/assets") else "request_too_large"
    else:
        code = _HTTP_CODES.get(status, "http_error" if status < 500 else "internal_error")
    return Response({"code": code, "message": detail or code.replace("_", " ")}, status_code=status)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        {"code": "internal_error", "message": f"{type(exc).__name__}: the server failed"},
        status_code=500,
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    TakeflowError: takeflow_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}


def document_errors(app: Any) -> None:
    """Make the OpenAPI document say what errors look like: every operation may answer a
    ``4XX`` with ``{"code", "message", ...}`` (replacing Litestar's own 400 shape, which this
    API never sends), and ``503`` when storage or git is unavailable."""
    from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference
    from litestar.openapi.spec import Schema as OpenAPISchema

    openapi = app.openapi_schema
    string = OpenAPISchema(type=OpenAPIType.STRING)
    schemas = openapi.components.schemas
    schemas["TakeflowError"] = OpenAPISchema(
        type=OpenAPIType.OBJECT,
        required=["code", "message"],
        properties={"code": string, "message": string},
        description="Every error: a stable machine code, a message, and details by code.",
    )
    body = {
        "application/json": OpenAPIMediaType(
            schema=Reference(ref="#/components/schemas/TakeflowError")
        )
    }
    for item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses = dict(operation.responses or {})
            for status in [s for s in responses if s[:1] in ("4", "5")]:
                del responses[status]
            responses["4XX"] = OpenAPIResponse(
                description="The request was refused: a stable `code` says why.", content=body
            )
            responses["503"] = OpenAPIResponse(
                description="Storage or git is unavailable (`storage_error`, `git_error`).",
                content=body,
            )
