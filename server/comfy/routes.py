"""ComfyUI's HTTP routes and ``/ws``, as a router mountable at ``/`` and at ``/api``.

Bodies are read as JSON whatever their Content-Type (ComfyUI's example clients post JSON as
``application/x-www-form-urlencoded``). Answers follow ComfyUI's shapes; ``/history/{id}``
answers ``{}`` while a prompt is queued or running, as ComfyUI does. Refusals outside
``/prompt`` are Takeflow's ``{"code", "message", "field"}``. With auth on, files, history and
``clientId`` are each user's own.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from typing import Any

from litestar import Request, Response, Router, WebSocket, get, post, websocket
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, FromQuery
from litestar.response import File

from nodes.images import ImageTooLargeError, check_image_header
from server.auth import principal_of
from server.comfy.errors import PromptRejected
from server.comfy.files import FOLDER_TYPES, PathRefused
from server.comfy.hub import SERVER_FEATURES
from server.comfy.idempotency import submit_once
from server.comfy.service import ComfyService
from server.media_ranges import ACCEPT_RANGES, ranged

Comfy = NamedDependency[ComfyService]
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # ComfyUI's default --max-upload-size
MAX_QUERY_INT = 2**63 - 1  # SQLite's INTEGER
WS_FORBIDDEN = 4403  # closing before the accept: the handshake is answered 403


def _error(
    status: int, code: str, message: str, field: str | None = None
) -> Response[dict[str, Any]]:
    body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return Response(body, status_code=status)


def _user(connection: Request[Any, Any, Any] | WebSocket[Any, Any, Any]) -> str | None:
    principal = principal_of(connection)
    return principal.user if principal is not None else None


async def _json(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return json.loads(raw)


def _empty() -> Response[bytes]:
    return Response(b"", status_code=200, media_type="text/plain")


def make_router(path: str, comfy: ComfyService) -> Router:
    """The ComfyUI API under ``path`` (``/`` on the compat listener, ``/api`` on both)."""

    @post("/prompt", status_code=200)
    async def post_prompt(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        try:
            body = await _json(request)
        except ValueError as exc:
            rejected = PromptRejected("invalid_prompt", "Invalid prompt: the body is not JSON",
                                      str(exc))  # fmt: skip
            return Response(rejected.body(), status_code=400)
        try:
            key = request.headers.get("idempotency-key")
            answer, replayed = await asyncio.to_thread(
                submit_once, comfy, body, principal_of(request), key
            )
        except PromptRejected as rejected:
            return Response(rejected.body(), status_code=rejected.status, headers=rejected.headers)
        return Response(answer, headers={"Idempotent-Replayed": "true"} if replayed else None)

    @get("/prompt")
    async def get_prompt(comfy: Comfy) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": await asyncio.to_thread(comfy.queue_remaining)}}

    @get("/queue", sync_to_thread=True)
    def get_queue(request: Request[Any, Any, Any], comfy: Comfy) -> dict[str, Any]:
        return comfy.queue(principal_of(request))

    @post("/queue", status_code=200)
    async def post_queue(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        try:
            body = await _json(request)
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        principal = principal_of(request)
        if isinstance(body, dict) and body.get("clear"):
            await asyncio.to_thread(comfy.delete, None, principal)
        if isinstance(body, dict) and isinstance(body.get("delete"), list):
            ids = [str(i) for i in body["delete"]]
            await asyncio.to_thread(comfy.delete, ids, principal)
        return _empty()

    @post("/interrupt", status_code=200)
    async def interrupt(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        try:
            body = await _json(request)
        except ValueError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        await asyncio.to_thread(comfy.interrupt, prompt_id, principal_of(request))
        return _empty()

    @post("/free", status_code=200)
    async def free(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        """``{unload_models?, free_memory?}``: either unloads the diffusion pipelines."""
        try:
            body = await _json(request)
        except ValueError:
            body = {}
        if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
            await asyncio.to_thread(comfy.bridge.unload_models)
        return _empty()

    @get("/history", sync_to_thread=True)
    def history(
        request: Request[Any, Any, Any],
        comfy: Comfy,
        max_items: FromQuery[int | None] = None,
        offset: FromQuery[int] = 0,
    ) -> Response[Any]:
        for field, value in (("max_items", max_items), ("offset", offset)):
            if value is not None and abs(value) > MAX_QUERY_INT:
                return _error(
                    400,
                    f"invalid_{field}",
                    f"{field} is out of range (at most {MAX_QUERY_INT})",
                    field,
                )
        return Response(comfy.history(principal_of(request), max_items, max(0, offset)))

    @get("/history/{prompt_id:str}", sync_to_thread=True)
    def history_of(
        prompt_id: FromPath[str], request: Request[Any, Any, Any], comfy: Comfy
    ) -> dict[str, Any]:
        return comfy.history_of(prompt_id, principal_of(request))

    @post("/history", status_code=200)
    async def post_history(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        try:
            body = await _json(request)
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        principal = principal_of(request)
        if isinstance(body, dict) and body.get("clear"):
            await asyncio.to_thread(comfy.hide_history, None, principal)
        if isinstance(body, dict) and isinstance(body.get("delete"), list):
            ids = [str(i) for i in body["delete"]]
            await asyncio.to_thread(comfy.hide_history, ids, principal)
        return _empty()

    @get("/view", sync_to_thread=True)
    def view(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any] | File:
        query = request.query_params
        filename = str(query.get("filename") or "")
        folder_type = str(query.get("type") or "output")
        subfolder = str(query.get("subfolder") or "")
        name, _, tag = filename.partition(" [")
        if tag.endswith("]") and tag[:-1] in FOLDER_TYPES:  # "name.png [output]"
            filename, folder_type = name, tag[:-1]
        principal, owner = principal_of(request), query.get("user")
        if owner is not None and comfy.auth and principal is not None:
            if not principal.all_projects:  # another user's files: for '*' tokens only
                return _error(
                    403, "forbidden", "user= needs a token for every project ('*')", "user"
                )
            folders = comfy.folders_of(str(owner), create=False)
        else:
            folders = comfy.folders_of(_user(request))
        try:
            path = folders.find(folder_type, subfolder, filename)
        except PathRefused as refused:
            return Response(refused.body(), status_code=refused.status)
        if path is None:
            return _error(404, "file_not_found", "file not found", "filename")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        partial = ranged(request.headers.get("range"), path.stat().st_size,
                         lambda: path.open("rb"), media_type)  # fmt: skip
        if partial is not None:  # 206 (a video seeking) or 416
            return partial
        return File(path, filename=path.name, media_type=media_type,
                    content_disposition_type="inline", headers=ACCEPT_RANGES)  # fmt: skip

    @post("/upload/image", status_code=200, request_max_body_size=MAX_UPLOAD_BYTES)
    async def upload_image(request: Request[Any, Any, Any], comfy: Comfy) -> Response[Any]:
        form = await request.form()
        image = form.get("image")
        if not isinstance(image, UploadFile) or not image.filename:
            return _error(
                400, "invalid_image", "send the image as multipart/form-data field 'image'", "image"
            )
        folder_type = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        data = await image.read()
        try:  # a decompression bomb is refused before it is stored (header only)
            check_image_header(data[: 1 << 20], image.filename)
        except ImageTooLargeError as exc:
            return _error(exc.http_status, exc.code, exc.message, "image")
        folders = comfy.folders_of(_user(request))
        try:
            name = await asyncio.to_thread(folders.store_upload, folder_type, subfolder,
                                           image.filename, data, overwrite)  # fmt: skip
        except PathRefused as refused:
            return Response(refused.body(), status_code=refused.status)
        return Response({"name": name, "subfolder": subfolder, "type": folder_type})

    @get("/object_info", sync_to_thread=True)
    def object_info(request: Request[Any, Any, Any], comfy: Comfy) -> dict[str, Any]:
        return comfy.catalog_of(_user(request)).object_info()

    @get("/object_info/{class_type:str}", sync_to_thread=True)
    def object_info_of(
        class_type: FromPath[str], request: Request[Any, Any, Any], comfy: Comfy
    ) -> dict[str, Any]:
        catalog = comfy.catalog_of(_user(request))
        node = catalog.get(class_type)
        return {} if node is None else {class_type: catalog.describe(node)}

    @get("/system_stats", sync_to_thread=True)
    def system_stats(comfy: Comfy) -> dict[str, Any]:
        return comfy.system_stats()

    @get("/models", sync_to_thread=False)
    def models() -> list[str]:
        return ["checkpoints"]

    @get("/models/{folder:str}", sync_to_thread=True)
    def models_in(folder: FromPath[str], comfy: Comfy) -> list[str]:
        return comfy.bridge.model_names() if folder == "checkpoints" else []

    @get(["/embeddings", "/extensions"], sync_to_thread=False)
    def nothing() -> list[str]:
        return []

    @get("/features", sync_to_thread=False)
    def features() -> dict[str, Any]:
        return dict(SERVER_FEATURES)

    @websocket("/ws")
    async def socket(socket: WebSocket[Any, Any, Any], comfy: Comfy) -> None:
        client_id = socket.query_params.get("clientId") or uuid.uuid4().hex
        user = _user(socket)
        if comfy.auth and user is not None:  # a clientId is the first user's to connect with it
            owner = await asyncio.to_thread(comfy.store.claim_client, client_id, user)
            if owner != user:
                await socket.close(code=WS_FORBIDDEN, reason="clientId is another user's")
                return
        await socket.accept()

        async def receive() -> Any:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(detail="client left")
            return message

        await comfy.hub.serve(
            client_id,
            user,
            socket.send_text,
            socket.send_bytes,
            socket.close,
            receive,
        )

    def provide() -> ComfyService:
        return comfy

    return Router(
        path=path,
        route_handlers=[
            post_prompt, get_prompt, get_queue, post_queue, interrupt, free, history, history_of,
            post_history, view, upload_image, object_info, object_info_of, system_stats,
            models, models_in, nothing, features, socket,
        ],
        dependencies={"comfy": Provide(provide, use_cache=True, sync_to_thread=False)},
        include_in_schema=False,
    )  # fmt: skip
