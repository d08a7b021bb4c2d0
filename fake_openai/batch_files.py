"""The Files API of the fake: multipart uploads held in memory, their metadata and content.

Why: the Batch API reads its input from an uploaded file and writes its results to files the
client downloads, so the fake keeps a file store the way the real API does, with the real
API's objects (``OpenAIFile``, ``DeleteFileResponse``, a list) and its errors: 404 for an
unknown id; 400 for a missing part, a purpose the fake does not serve (only ``batch``), or a
batch file that is not ``.jsonl`` UTF-8 text or is over 200 MB. Every route goes through the
server's gate (recording, auth, scripted faults and latency), so a 429 can hit an upload.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from fake_openai.wire import JSON_HEADERS, dumps

Gate = Callable[[web.Request, Any], Awaitable[web.StreamResponse | None]]
"""The server's shared plumbing: records the request, checks the key, plays a scripted fault;
returns the response to send instead (401, a fault) or None to go on."""

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""What ``CreateFileRequest.purpose`` accepts in the official description."""
BATCH_FILE_MAX_BYTES = 200 * 1024 * 1024
"""The Batch API only supports .jsonl files up to 200 MB."""
FILE_TTL_SECONDS = 30 * 24 * 3600
"""Batch files expire after 30 days by default."""


def api_error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> web.Response:
    """An ``invalid_request_error`` with exactly this code (None stays null, unlike wire's)."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.Response(status=status, body=dumps({"error": error}), headers=JSON_HEADERS)


def json_ok(payload: Any) -> web.Response:
    return web.Response(body=dumps(payload), headers=JSON_HEADERS)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """An uploaded (or batch-written) file: its bytes and what ``GET /v1/files/{id}`` shows."""

    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.created_at + FILE_TTL_SECONDS,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Files by id, in memory, safe to read from a test thread while the server writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self.uploads = 0  # files received through POST /v1/files (not batch outputs)

    def add(self, data: bytes, filename: str, purpose: str, *, upload: bool = False) -> StoredFile:
        """Store a file; ``upload`` counts it as received through ``POST /v1/files``."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        stored = StoredFile(file_id, filename, purpose, int(time.time()), data)
        with self._lock:
            self._files[stored.id] = stored
            self.uploads += int(upload)
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def all(self) -> list[StoredFile]:
        """Every file, oldest first."""
        with self._lock:
            return list(self._files.values())

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self.uploads = 0


class _FormError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


async def _read_form(request: web.Request) -> tuple[dict[str, str], str, bytes | None]:
    """The multipart fields, the file part's name and bytes (None when there is no file)."""
    if not request.content_type.startswith("multipart/"):
        raise _FormError("Invalid Content-Type header; expected multipart/form-data.")
    fields: dict[str, str] = {}
    filename, data = "", None
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name != "file":
            fields[part.name] = await part.text()
            continue
        filename = part.filename or "upload"
        chunks, size = [], 0
        while chunk := await part.read_chunk():
            size += len(chunk)
            if size > BATCH_FILE_MAX_BYTES:
                raise _FormError("File is too large; the Batch API accepts up to 200 MB.", "file")
            chunks.append(chunk)
        data = b"".join(chunks)
    return fields, filename, data


def _check_upload(fields: dict[str, str], filename: str, data: bytes | None) -> None:
    purpose = fields.get("purpose")
    if purpose is None:
        raise _FormError("Missing required parameter: 'purpose'.", "purpose")
    if purpose not in PURPOSES:
        supported = ", ".join(f"'{p}'" for p in PURPOSES)
        raise _FormError(
            f"Invalid value for 'purpose': '{purpose}'. Supported values are: {supported}.",
            "purpose",
        )
    if purpose != "batch":
        raise _FormError(f"The fake stores only purpose 'batch' files, not '{purpose}'.", "purpose")
    if data is None:
        raise _FormError("Missing required parameter: 'file'.", "file")
    if not filename.endswith(".jsonl"):
        raise _FormError("Invalid file format for Batch API. Must be .jsonl", "file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise _FormError("Invalid file format for Batch API. Must be UTF-8 text.", "file") from None


def add_file_routes(app: web.Application, store: FileStore, gate: Gate) -> None:
    """``/v1/files`` (upload, list) and ``/v1/files/{file_id}`` (get, delete, content)."""

    async def upload(request: web.Request) -> web.StreamResponse:
        try:  # read the body first, as the online routes do, then gate, then judge it
            fields, filename, data = await _read_form(request)
            problem: _FormError | None = None
        except _FormError as exc:
            fields, filename, data, problem = {}, "", None, exc
        early = await gate(request, None)
        if early is not None:
            return early
        try:
            if problem is not None:
                raise problem
            _check_upload(fields, filename, data)
        except _FormError as exc:
            return api_error(400, exc.message, exc.param)
        assert data is not None
        return json_ok(store.add(data, filename, fields["purpose"], upload=True).meta())

    async def listing(request: web.Request) -> web.StreamResponse:
        early = await gate(request, None)
        if early is not None:
            return early
        purpose = request.query.get("purpose")
        files = [f.meta() for f in store.all() if purpose in (None, f.purpose)]
        if request.query.get("order", "desc") == "desc":
            files.reverse()
        after = request.query.get("after")
        ids = [f["id"] for f in files]
        if after in ids:
            files = files[ids.index(after) + 1 :]
        try:
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            return api_error(400, "Invalid 'limit': expected an integer.", "limit")
        page = files[: max(1, min(limit, 10000))]
        return json_ok(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(files) > len(page),
            }
        )

    async def stored_file(request: web.Request) -> StoredFile | web.StreamResponse:
        """The file a request names, or the answer when it ends there (a fault, a 404)."""
        early = await gate(request, None)
        if early is not None:
            return early
        file_id = request.match_info["file_id"]
        stored = store.get(file_id)
        if stored is None:
            return api_error(404, f"No such File object: {file_id}", "id")
        return stored

    async def one(request: web.Request) -> web.StreamResponse:
        stored = await stored_file(request)
        if not isinstance(stored, StoredFile):
            return stored
        file_id = stored.id
        if request.method == "DELETE":
            store.delete(file_id)
            return json_ok({"id": file_id, "object": "file", "deleted": True})
        return json_ok(stored.meta())

    async def content(request: web.Request) -> web.StreamResponse:
        stored = await stored_file(request)
        if not isinstance(stored, StoredFile):
            return stored
        headers = {"Content-Type": "application/octet-stream"}
        return web.Response(body=stored.data, headers=headers)

    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", listing)
    app.router.add_get("/v1/files/{file_id}", one)
    app.router.add_delete("/v1/files/{file_id}", one)
    app.router.add_get("/v1/files/{file_id}/content", content)
