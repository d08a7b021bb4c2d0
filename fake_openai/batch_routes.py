"""The HTTP face of the Batch API: ``/v1/batches`` routes over a `BatchService`.

Why apart: the lifecycle (``batches``) is plain state a test can drive without HTTP; this
module only reads requests and writes the real API's answers and errors (400 with ``param``,
404 for an unknown id, 409 for cancelling a finished batch), every route behind the server's
gate (recording, auth, scripted faults, latency). ``POST /_batch_script`` (a JSON list of batch
faults) scripts batches from another process.
"""

from __future__ import annotations

from aiohttp import web

from fake_openai.batch_files import Gate, api_error, json_ok
from fake_openai.batches import BatchService, Conflict
from fake_openai.jobs import BadRequest
from fake_openai.wire import loads


def add_batch_routes(app: web.Application, service: BatchService, gate: Gate) -> None:
    """``/v1/batches`` (create, list), ``/v1/batches/{batch_id}`` (get, cancel), the script."""

    async def create(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = loads(raw) if raw else None
        except ValueError:
            body = None
        early = await gate(request, body)
        if early is not None:
            return early
        try:
            return json_ok(service.create(body))
        except BadRequest as exc:
            return api_error(400, exc.message, exc.param)

    async def listing(request: web.Request) -> web.StreamResponse:
        early = await gate(request, None)
        if early is not None:
            return early
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return api_error(400, "Invalid 'limit': expected an integer in [1, 100].", "limit")
        return json_ok(service.listing(limit, request.query.get("after")))

    async def one(request: web.Request) -> web.StreamResponse:
        early = await gate(request, None)
        if early is not None:
            return early
        batch_id = request.match_info["batch_id"]
        found = service.get(batch_id)
        if found is None:
            return api_error(404, f"No batch found with id '{batch_id}'.", "batch_id")
        return json_ok(found)

    async def cancel(request: web.Request) -> web.StreamResponse:
        early = await gate(request, None)
        if early is not None:
            return early
        batch_id = request.match_info["batch_id"]
        try:
            found = service.cancel(batch_id)
        except Conflict as exc:
            return api_error(409, str(exc))
        if found is None:
            return api_error(404, f"No batch found with id '{batch_id}'.", "batch_id")
        return json_ok(found)

    async def script(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = loads(raw) if raw else None
            if not isinstance(body, list):
                raise ValueError("body must be a JSON list of batch faults")
            service.script(body)
        except (TypeError, ValueError) as exc:
            return api_error(400, str(exc))
        return json_ok({"scripted": len(body)})

    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", listing)
    app.router.add_get("/v1/batches/{batch_id}", one)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel)
    app.router.add_post("/_batch_script", script)
