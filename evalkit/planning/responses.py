"""The body of a Responses API request (`POST /v1/responses`), built from what chat would send.

Why apart from `plan.py`: the Responses API names the same things differently (system
messages are `instructions`, the rest `input` items with typed content parts, `max_tokens`
is `max_output_tokens`, tools are flat), and refuses what chat takes (`stop`, `n`,
penalties, `logprobs`): one suite runs on either endpoint, the mapping lives here.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import Unsendable

# suite parameters the Responses API has no place for (CreateResponse lacks them)
_NOT_RESPONSES = (
    "stop",
    "n",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "echo",
    "best_of",
    "suffix",
    "functions",
    "function_call",
)
_SENT_AS_IS = ("temperature", "top_p", "user", "stream", "parallel_tool_calls")
MIN_OUTPUT_TOKENS = 16  # CreateResponse: max_output_tokens minimum
_INSTRUCTION_ROLES = ("system", "developer")


def responses_body(
    model: str, messages: list[dict[str, Any]], values: dict[str, Any]
) -> dict[str, Any]:
    """The CreateResponse body for chat `messages` and the suite's parameter `values` (as
    `Params.set_values` gives them); raises `Unsendable` for what the endpoint cannot take."""
    wrong = [name for name in _NOT_RESPONSES if name in values]
    if wrong:
        raise Unsendable(
            f"{', '.join(wrong)}: not a parameter of the Responses API (kind: responses); "
            "remove it, or use the chat endpoint"
        )
    body: dict[str, Any] = {"model": model}
    instructions = [
        _text_of(m.get("content")) for m in messages if m.get("role") in _INSTRUCTION_ROLES
    ]
    if instructions:
        body["instructions"] = "\n\n".join(instructions)
    body["input"] = [
        item for m in messages if m.get("role") not in _INSTRUCTION_ROLES for item in _items(m)
    ]
    budget = values.get("max_tokens")
    if budget is not None:
        if budget < MIN_OUTPUT_TOKENS:
            raise Unsendable(
                f"max_tokens {budget} is below {MIN_OUTPUT_TOKENS}, the least max_output_tokens "
                "the Responses API takes"
            )
        body["max_output_tokens"] = budget
    if "reasoning_effort" in values:
        body["reasoning"] = {"effort": values["reasoning_effort"]}
    if "response_format" in values:
        body["text"] = {"format": _text_format(values["response_format"])}
    if "tools" in values:
        body["tools"] = [_function_tool(tool["function"]) for tool in values["tools"]]
    if "tool_choice" in values:
        choice = values["tool_choice"]
        body["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "name": choice["function"]["name"]}
        )
    body.update({name: values[name] for name in _SENT_AS_IS if name in values})
    body["store"] = False  # an evaluation leaves no stored responses behind
    return body


def _items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One chat message as input items: a message, tool calls, or a tool's result."""
    role = message["role"]
    if role == "tool":
        output = _text_of(message.get("content"))
        return [
            {"type": "function_call_output", "call_id": message["tool_call_id"], "output": output}
        ]
    items: list[dict[str, Any]] = []
    content = message.get("content")
    if content is not None and content != "":
        items.append({"role": role, "content": _content(content, role)})
    for call in message.get("tool_calls") or ():
        function = call["function"]
        items.append(
            {
                "type": "function_call",
                "call_id": call["id"],
                "name": function["name"],
                "arguments": function["arguments"],
            }
        )
    return items


def _content(content: Any, role: str) -> Any:
    """A string stays a string; chat content parts become Responses content parts."""
    if isinstance(content, str):
        return content
    if role == "assistant":  # earlier turns of the model: its text, as the model wrote it
        return _text_of(content)
    return [_part(part) for part in content]


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image_url":
        image = part["image_url"]
        return {
            "type": "input_image",
            "image_url": image["url"],
            "detail": image.get("detail") or "auto",
        }
    if part.get("type") == "text":
        return {"type": "input_text", "text": part["text"]}
    raise Unsendable(f"a content part of type {part.get('type')!r} cannot go to the Responses API")


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """Chat's `response_format` as `text.format`: a json_schema's fields come up one level."""
    if response_format["type"] != "json_schema":
        return {"type": response_format["type"]}
    return {"type": "json_schema", **response_format["json_schema"]}


def _function_tool(function: dict[str, Any]) -> dict[str, Any]:
    """A chat tool as a Responses function tool (flat; `strict` and `parameters` required,
    `strict` false unless the suite says so, as chat's default)."""
    tool = {
        "type": "function",
        "name": function["name"],
        "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        "strict": bool(function.get("strict", False)),
    }
    if function.get("description") is not None:
        tool["description"] = function["description"]
    return tool
