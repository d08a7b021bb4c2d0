"""What the Batch API checks before it runs anything: the create request and the input file.

Why apart from the lifecycle: these are the real API's two gates, each with its own way of
saying no. A bad ``CreateBatchRequest`` is refused at once (400 naming the ``param``); a bad
input file is accepted, and the batch then goes to ``failed`` with ``errors.data`` holding one
``BatchError`` per problem (``code``, ``message``, ``param``, 1-based ``line``), with the real
API's codes: ``empty_file``, ``invalid_json_line``, ``missing_required_parameter``,
``duplicate_custom_id``, ``invalid_method``, ``url_mismatch``, ``model_mismatch``,
``too_many_tasks`` (more than 50,000 lines).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fake_openai.jobs import BadRequest
from fake_openai.wire import loads

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
"""``CreateBatchRequest.endpoint``'s enum in the official description."""
MAX_LINES = 50_000
_CREATE_KEYS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)
_LINE_KEYS = ("custom_id", "method", "url", "body")


@dataclass(frozen=True, slots=True)
class InputLine:
    """One request of a batch: its 1-based line number, custom_id and endpoint body."""

    line: int
    custom_id: str
    body: Any


def _supported(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def check_create(body: Any, served: Iterable[str]) -> dict[str, Any]:
    """Validate a ``CreateBatchRequest`` like the real API; raises ``BadRequest`` (400).

    ``served``: the endpoints the fake can answer lines for (a subset of ``ENDPOINTS``).
    """
    if not isinstance(body, dict):
        raise BadRequest("We could not parse the JSON body of your request.")
    for key in body:
        if key not in _CREATE_KEYS:
            raise BadRequest(f"Unrecognized request argument supplied: {key}", key)
    for key in ("input_file_id", "endpoint", "completion_window"):
        if key not in body:
            raise BadRequest(f"Missing required parameter: '{key}'.", key)
        if not isinstance(body[key], str):
            raise BadRequest(f"Invalid type for '{key}': expected a string.", key)
    endpoint = body["endpoint"]
    if endpoint not in ENDPOINTS:
        raise BadRequest(
            f"Invalid value: '{endpoint}'. Supported values are: {_supported(ENDPOINTS)}.",
            "endpoint",
        )
    if endpoint not in served:
        raise BadRequest(f"The fake does not serve '{endpoint}' in batches.", "endpoint")
    window = body["completion_window"]
    if window != "24h":
        raise BadRequest(
            f"Invalid value: '{window}'. Supported values are: '24h'.", "completion_window"
        )
    metadata = body.get("metadata")
    if metadata is not None:
        _check_metadata(metadata)
    return body


def _check_metadata(metadata: Any) -> None:
    """``Metadata``: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if not isinstance(metadata, dict):
        raise BadRequest("Invalid type for 'metadata': expected an object.", "metadata")
    if len(metadata) > 16:
        raise BadRequest("Invalid 'metadata': too many properties (at most 16).", "metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise BadRequest(f"Invalid 'metadata': key '{key}' is over 64 characters.", "metadata")
        if not isinstance(value, str) or len(value) > 512:
            raise BadRequest(
                f"Invalid 'metadata.{key}': expected a string of at most 512 characters.",
                f"metadata.{key}",
            )


def _error(code: str, message: str, param: str | None, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_input(data: bytes, endpoint: str) -> tuple[list[InputLine], str | None, list[Any]]:
    """The requests of an input file, the model they all name, and the ``BatchError``s.

    A batch with any error runs nothing; the lines are then of no use to the caller.
    """
    raw_lines = data.decode("utf-8").splitlines()
    numbered = [(n, text) for n, text in enumerate(raw_lines, 1) if text.strip()]
    if not numbered:
        return [], None, [_error("empty_file", "The input file is empty.", None, None)]
    if len(numbered) > MAX_LINES:
        message = (
            f"The input file has {len(numbered)} requests; a batch may hold at most {MAX_LINES:,}."
        )
        return [], None, [_error("too_many_tasks", message, None, None)]
    lines: list[InputLine] = []
    errors: list[Any] = []
    seen: set[str] = set()
    model: str | None = None
    for n, text in numbered:
        try:
            obj = loads(text.encode())
        except ValueError:
            errors.append(
                _error("invalid_json_line", "This line is not parseable as valid JSON.", None, n)
            )
            continue
        if not isinstance(obj, dict):
            errors.append(_error("invalid_json_line", "This line is not a JSON object.", None, n))
            continue
        missing = [key for key in _LINE_KEYS if key not in obj]
        if missing:
            message = f"Missing required parameter: '{missing[0]}'."
            errors.append(_error("missing_required_parameter", message, missing[0], n))
            continue
        custom_id, method, url, body = (obj[key] for key in _LINE_KEYS)
        if not isinstance(custom_id, str) or not custom_id:
            message = "Invalid 'custom_id': expected a non-empty string."
            errors.append(_error("invalid_custom_id", message, "custom_id", n))
            continue
        if custom_id in seen:
            message = (
                f"The custom_id '{custom_id}' is a duplicate of another request's; a custom_id "
                "must be unique within a batch."
            )
            errors.append(_error("duplicate_custom_id", message, "custom_id", n))
            continue
        seen.add(custom_id)
        if method != "POST":
            message = f"Invalid method '{method}': only 'POST' is supported."
            errors.append(_error("invalid_method", message, "method", n))
            continue
        if url != endpoint:
            message = f"The URL '{url}' does not match the batch's endpoint '{endpoint}'."
            errors.append(_error("url_mismatch", message, "url", n))
            continue
        line_model = body.get("model") if isinstance(body, dict) else None
        if isinstance(line_model, str):
            if model is None:
                model = line_model
            elif line_model != model:
                message = (
                    f"The model '{line_model}' does not match the model '{model}' of the "
                    "other requests in the file."
                )
                errors.append(_error("model_mismatch", message, "body.model", n))
                continue
        lines.append(InputLine(n, custom_id, body))
    return lines, model, errors
