"""``POST /v1/responses``: the Responses API, validated like the real one, answered like chat.

Why: evalkit's Responses bodies must meet the 400s the real API gives (``max_tokens`` is not
a parameter there, a reasoning model takes no temperature but 1, ``model`` and ``input`` are
required), and its parsing must meet the real shapes: output items, ``status`` with
``incomplete_details``, usage with cached and reasoning details, and typed stream events.

What it answers follows ``fake_openai.answers`` (``ANSWER:``, ``LENGTH_UNTIL_MAX=``,
``FILTER_ME``, ``CALL:`` with tools) on the last user message; besides:

* ``max_output_tokens`` cuts the output (status ``incomplete``, reason ``max_output_tokens``);
  ``FILTER_ME`` is ``incomplete`` with reason ``content_filter``.
* A reasoning model (o1, o3, o4, gpt-5) reasons ``REASONING_TOKENS`` hidden tokens first,
  counted in ``output_tokens`` and within ``max_output_tokens``.
* ``FAIL_ME`` in the message: status ``failed`` (code ``invalid_prompt``).
* Scripted faults apply as on chat (``{"usage": {...}}`` replaces keys of its usage).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fake_openai import answers
from fake_openai.faults import misreport_usage, truncated
from fake_openai.jobs import BadRequest, Job, is_reasoning_model
from fake_openai.wire import SSE_HEADERS, dumps, error_body, error_response, loads

if TYPE_CHECKING:
    from fake_openai.server import FakeOpenAI

REASONING_TOKENS = 8
"""Hidden tokens a reasoning model spends before it answers."""

# CreateResponse's parameters; anything else is refused as the real API does
KNOWN = frozenset(
    {
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
_MOVED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}


async def handle(server: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    """One Responses API request, through the server's recording, auth, faults and latency."""
    body = await server._read_json(request)
    ended, fault, request_id = await server.admit(request, body)
    if ended is not None:
        return ended
    try:
        job = parse_response_job(body, server.tokenizer)
    except BadRequest as exc:
        return error_response(400, error_body(400, message=exc.message, param=exc.param))
    kind = fault.kind if fault is not None else "ok"
    payload = response_object(job, body, request_id, empty=kind == "no_choices")
    misreport_usage(payload, fault)
    if not job.stream and kind != "truncated_sse":
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        return web.Response(body=dumps(payload), headers=headers)
    events = stream_events(payload)
    if kind == "truncated_sse":
        events = truncated(events)
    resp = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request_id})
    await resp.prepare(request)
    try:
        for event in events:
            await resp.write(event)
    except ConnectionError:  # the client went away
        pass
    return resp


def answer(
    body: Any, tokenizer: Callable[[str], int] | None, request_id: str
) -> tuple[int, dict[str, Any]]:
    """A non-streamed Responses body's answer, ``(200, response)`` or ``(400, error)``: what
    the online route and a Batch API line both give."""
    try:
        job = parse_response_job(body, tokenizer)
    except BadRequest as exc:
        return 400, loads(error_body(400, message=exc.message, param=exc.param))
    return 200, response_object(job, body, request_id)


def parse_response_job(body: Any, tokens: Callable[[str], int] | None = None) -> Job:
    """Validate like the real API; the job's prompt is the last user message."""
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request.")
    for name in body:
        if name in _MOVED:
            raise BadRequest(
                f"Unsupported parameter: '{name}'. In the Responses API, this parameter has "
                f"moved to '{_MOVED[name]}'.",
                name,
            )
        if name not in KNOWN:
            raise BadRequest(f"Unknown parameter: '{name}'.", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", "model")
    reasoning = is_reasoning_model(model)
    temperature = body.get("temperature")
    if reasoning and temperature is not None and temperature != 1:
        raise BadRequest(
            "Unsupported parameter: 'temperature' is not supported with this model.",
            "temperature",
        )
    if not reasoning and "reasoning" in body:
        raise BadRequest(
            "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
            "reasoning.effort",
        )
    count = tokens or (lambda text: len(text.split()))
    instructions = body.get("instructions")
    prompt_tokens = count(instructions) if isinstance(instructions, str) else 0
    last_user = ""
    given = body.get("input")
    if isinstance(given, str):
        last_user, prompt_tokens = given, prompt_tokens + count(given)
    elif isinstance(given, list) and given:
        for index, item in enumerate(given):
            text = _item_text(item, index)
            prompt_tokens += count(text)
            if item.get("role") == "user":
                last_user = text
    else:
        raise BadRequest("Missing required parameter: 'input'.", "input")
    budget = body.get("max_output_tokens")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 16
    ):
        raise BadRequest(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16.",
            "max_output_tokens",
        )
    visible = budget - REASONING_TOKENS if budget is not None and reasoning else budget
    return Job(
        chat=True,
        model=model,
        prompts=[last_user],
        prompt_tokens=prompt_tokens,
        n=1,
        temperature=float(temperature if isinstance(temperature, int | float) else 1.0),
        max_tokens=visible,
        logprobs=None,
        stream=body.get("stream") is True,
        include_usage=False,
        calling="tools" if _tools(body.get("tools")) else "",
    )


def _item_text(item: Any, index: int) -> str:
    """The text of one input item; a malformed item is the real API's 400."""
    where = f"input[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"Invalid type for '{where}': expected an object.", where)
    if item.get("type") == "function_call":
        return ""
    if item.get("type") == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else ""
    if item.get("role") not in ("user", "assistant", "system", "developer"):
        raise BadRequest(f"Invalid value for '{where}.role'.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"Missing required parameter: '{where}.content'.", f"{where}.content")
    texts = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind != "input_image":
            place = f"{where}.content[{number}].type"
            raise BadRequest(
                f"Invalid value: '{kind}'. Supported values are: 'input_text', "
                "'input_image' and 'output_text'.",
                place,
            )
    return "\n".join(texts)


def _tools(tools: Any) -> bool:
    """Whether function tools are declared; one in chat's nested shape is a 400."""
    if tools is None:
        return False
    if not isinstance(tools, list):
        raise BadRequest("Invalid type for 'tools': expected an array.", "tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(
                f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name"
            )
    return bool(tools)


def response_object(
    job: Job, body: dict[str, Any], request_id: str, *, empty: bool = False
) -> dict[str, Any]:
    """The whole response, as the real API returns it (and its final stream event carries)."""
    choice = answers.generate(job)[0]
    reasoning = is_reasoning_model(job.model)
    output: list[dict[str, Any]] = []
    if reasoning:
        output.append({"type": "reasoning", "id": f"rs_{request_id}", "summary": []})
    if choice.call is not None:
        name, arguments = choice.call
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{request_id}",
                "call_id": f"call_{request_id}",
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
        )
    else:
        part = {"type": "output_text", "text": choice.text, "annotations": [], "logprobs": []}
        output.append(
            {
                "type": "message",
                "id": f"msg_{request_id}",
                "status": "completed" if choice.finish_reason == "stop" else "incomplete",
                "role": "assistant",
                "content": [part],
            }
        )
    status, details, error = "completed", None, None
    if "FAIL_ME" in job.prompts[0]:
        status, output = "failed", []
        error = {"code": "invalid_prompt", "message": "The prompt was refused (FAIL_ME)."}
    elif choice.finish_reason == "length":
        status, details = "incomplete", {"reason": "max_output_tokens"}
    elif choice.finish_reason == "content_filter":
        status, details = "incomplete", {"reason": "content_filter"}
    hidden = REASONING_TOKENS if reasoning else 0
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": error,
        "incomplete_details": details,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": job.model,
        "output": [] if empty else output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "usage": {
            "input_tokens": job.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(choice.tokens) + hidden,
            "output_tokens_details": {"reasoning_tokens": hidden},
            "total_tokens": job.prompt_tokens + len(choice.tokens) + hidden,
        },
    }


def stream_events(response: dict[str, Any]) -> list[bytes]:
    """The typed events of a streamed response: created, one delta per word (or two for a
    function call's arguments), and the final event carrying the whole response."""
    events: list[bytes] = []
    serial = itertools.count()

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": next(serial), **fields}
        events.append(f"event: {kind}\n".encode() + b"data: " + dumps(data) + b"\n\n")

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    for index, item in enumerate(response["output"]):
        added = {**item, "content": []} if item["type"] == "message" else item
        emit("response.output_item.added", output_index=index, item=added)
        if item["type"] == "message":
            text = item["content"][0]["text"]
            for token in answers._tokenize(text):
                emit(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=token,
                )
            emit("response.output_text.done", item_id=item["id"], output_index=index, text=text)
        elif item["type"] == "function_call":
            arguments = item["arguments"]
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=part,
                )
        emit("response.output_item.done", output_index=index, item=item)
    final = {"completed": "response.completed", "incomplete": "response.incomplete"}
    emit(final.get(response["status"], "response.failed"), response=response)
    return events
