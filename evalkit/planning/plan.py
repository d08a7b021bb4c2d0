"""From suite × model to requests: the cross product, the wire body, a stable key for each.

The endpoint follows the model: a string prompt sent to a chat model becomes one user
message, so one suite compares `gpt-3.5-turbo-instruct` with `gpt-3.5-turbo`; a message list
sent to a completions-only model, or a `suffix` sent to a chat model, cannot be sent. A
model of `kind: responses` takes either shape on the Responses API (`responses.py`).
The pass over a whole suite, shared by validation, the estimate, resume and the run, is
`planner.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from evalkit.errors import Unsendable
from evalkit.models.catalog import ModelInfo
from evalkit.models.targets import Target
from evalkit.planning.responses import responses_body
from evalkit.suite.checkspec import Check
from evalkit.suite.params import Params
from evalkit.suite.render import Rendered
from evalkit.suite.spec import Case, Suite, Variant

Endpoint = Literal["chat", "completions", "moderations", "responses"]
# json.dumps(body, sort_keys=True, separators=(",", ":")), its encoder built once
_WIRE = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

_COMPLETIONS_ONLY = ("echo", "best_of", "suffix")
_CHAT_ONLY = (
    "reasoning_effort",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to send (or to find in the cache or journal)."""

    key: str
    case: Case
    variant: str
    target: Target
    sample: int
    endpoint: Endpoint
    body: dict[str, Any]
    wire: str  # the body as JSON (canonical: sorted keys), sent as is and hashed into `key`

    @classmethod
    def build(
        cls,
        case: Case,
        variant: str,
        target: Target,
        sample: int,
        endpoint: Endpoint,
        body: dict[str, Any],
        key_sample: int | None = None,
    ) -> Request:
        """The request, its body serialised once and its key derived from that.

        The key hashes (endpoint URL, full body, sample index): the model is part of the
        body, and the sample index keeps sampled repeats apart. A grading request passes
        `key_sample=0`: grading the same output twice is the same request, whatever sample
        it belongs to.
        """
        wire = _WIRE.encode(body)
        url = json.dumps(f"{target.base_url}/{endpoint}{target.url_query}")
        keyed = sample if key_sample is None else key_sample
        canonical = f"[{url},{wire},{keyed}]"  # == json.dumps([url, body, sample], sorted)
        key = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        return cls(key, case, variant, target, sample, endpoint, body, wire)

    @property
    def max_tokens(self) -> int | None:
        """The output budget, under whichever name the body carries it."""
        body = self.body
        value = body.get("max_tokens", body.get("max_completion_tokens"))
        if value is None:
            value = body.get("max_output_tokens")
        return value if isinstance(value, int) else None

    @property
    def prompt(self) -> Any:
        """The prompt as the journal keeps it: the messages sent (on the Responses API, its
        instructions as the system message before the input items), or the prompt string."""
        body = self.body
        if self.endpoint == "responses":
            given = body.get("instructions")
            system = [{"role": "system", "content": given}] if given is not None else []
            return [*system, *body["input"]]
        return body.get("messages") if self.endpoint == "chat" else body.get("prompt")

    @property
    def choices(self) -> int:
        """How many records this request yields (`n`)."""
        n = self.body.get("n", 1)
        return n if isinstance(n, int) else 1


def endpoint_for(rendered: Rendered, info: ModelInfo) -> Endpoint:
    """Which endpoint carries `rendered` to the model described by `info`."""
    if info.kind == "moderation":
        raise Unsendable(f"{info.id} is a moderation model: use it in a moderation check")
    if info.kind == "responses":
        if rendered.suffix is not None:
            raise Unsendable(
                f"insert mode (suffix) needs the completions endpoint, but {info.id} is sent to "
                "the Responses API (kind: responses), which has no suffix"
            )
        return "responses"
    if rendered.suffix is not None:
        if rendered.is_chat:
            raise Unsendable(
                "a suffix (insert mode) goes with a string prompt on the completions endpoint, "
                "not with chat messages"
            )
        if info.kind == "chat":
            raise Unsendable(
                f"insert mode (suffix) needs the completions endpoint, but {info.id} is a chat "
                "model; use a completions model such as openai/gpt-3.5-turbo-instruct"
            )
        if not info.supports_suffix:
            raise Unsendable(f"{info.id} does not support insert mode (suffix)")
        return "completions"
    if rendered.is_chat:
        if rendered.has_images and info.id.startswith("local/"):
            raise Unsendable(f"{info.id} reads text only and cannot take the case's images")
        if info.kind == "completions":
            raise Unsendable(
                f"{info.id} only has the completions endpoint and cannot take chat messages; "
                "write the prompt as a string"
            )
        return "chat"
    return "chat" if info.kind == "chat" else "completions"


def build_body(
    endpoint: Endpoint, model: str, rendered: Rendered, params: Params, reasoning: bool = False
) -> dict[str, Any]:
    """The JSON body for `endpoint`, following the official API description; `reasoning`: the
    model is a reasoning model (`ModelInfo.reasoning`)."""
    values = params.set_values()
    if endpoint == "responses":
        _check_reasoning(model, values, reasoning)
        return responses_body(model, _messages(rendered), values)
    if endpoint == "chat":
        wrong = [name for name in _COMPLETIONS_ONLY if name in values]
        if wrong:
            raise Unsendable(f"{', '.join(wrong)} only exist(s) on the completions endpoint")
        _check_reasoning(model, values, reasoning)
        if reasoning and "max_tokens" in values:  # the only output budget these models take
            values["max_completion_tokens"] = values.pop("max_tokens")
        body: dict[str, Any] = {"model": model, "messages": _messages(rendered)}
        logprobs = values.pop("logprobs", None)
        if "top_logprobs" in values or (logprobs is not None and logprobs is not False):
            body["logprobs"] = True  # top_logprobs needs logprobs: true
            if not isinstance(logprobs, bool) and logprobs is not None:
                values.setdefault("top_logprobs", logprobs)
    else:
        wrong = [name for name in _CHAT_ONLY if name in values]
        if wrong:
            raise Unsendable(f"{', '.join(wrong)} only exist(s) on the chat endpoint")
        body = {"model": model, "prompt": rendered.prompt or ""}
        if rendered.suffix is not None:
            body["suffix"] = rendered.suffix
        logprobs = values.pop("logprobs", None)
        if logprobs is not None and logprobs is not False:
            if logprobs is not True and logprobs > 5:
                raise Unsendable("logprobs on the completions endpoint is at most 5")
            body["logprobs"] = 1 if logprobs is True else logprobs
    body.update(values)
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}
    return body


def _check_reasoning(model: str, values: dict[str, Any], reasoning: bool) -> None:
    """What a reasoning model refuses (a temperature other than 1), and what only it takes."""
    if reasoning and values.get("temperature", 1) != 1:
        raise Unsendable(
            f"{model} is a reasoning model: it takes only the default temperature 1 "
            f"(temperature is {values['temperature']:g}; remove it or set it to 1)"
        )
    if not reasoning and "reasoning_effort" in values:
        raise Unsendable(
            f"reasoning_effort is for reasoning models, and {model} is not one "
            "(declare `reasoning: true` on the model if it is)"
        )


def _messages(rendered: Rendered) -> list[dict[str, Any]]:
    """The chat messages as sent: a string prompt is one user message."""
    if rendered.is_chat:
        return rendered.message_dicts()
    return [{"role": "user", "content": rendered.prompt or ""}]


def layered_params(
    suite: Suite,
    target: Target,
    variant: Variant | None,
    case: Case,
    memo: dict[tuple[str, int], Params] | None = None,
) -> Params:
    """Suite params < model/endpoint params < variant params < case params.

    `memo` keeps the layers above the case per (model, variant): most cases add no params of
    their own, and layering validates a model each time.
    """
    key = (target.id, id(variant))
    params = memo.get(key) if memo is not None else None
    if params is None:
        params = target.params.over(suite.params)
        if variant is not None and variant.params is not None:
            params = variant.params.over(params)
        if memo is not None:
            memo[key] = params
    return case.params.over(params) if case.params is not None else params


def count_requests(suite: Suite, samples: int | None = None) -> int:
    """Requests per model before any resampling: cases × variants × samples."""
    return len(suite.cases) * len(suite.variant_prompts()) * (samples or suite.samples)


def check_columns(checks: list[Check]) -> dict[str, Check]:
    """Checks by column name: their label, numbered when a label repeats (`contains#2`)."""
    named: dict[str, Check] = {}
    for check in checks:
        name, count = check.label, 2
        while name in named:
            name, count = f"{check.label}#{count}", count + 1
        named[name] = check
    return named


@dataclass(frozen=True, slots=True)
class Group:
    """The samples of one case × variant × model, run under the suite's `select` policy."""

    case: Case
    variant: str
    target: Target
    endpoint: Endpoint
    rendered: Rendered
    params: Params
    checks: dict[str, Check]  # rendered for this case, by column name
    samples: int
    select: str
    max_tokens_cap: int | None
    resample_temperature: float | None

    def request(self, sample: int, max_tokens: int | None) -> Request:
        """Sample `sample` (numbered across rounds) sent with `max_tokens`."""
        params = self.params
        changes: dict[str, Any] = {}
        if max_tokens is not None and max_tokens != params.max_tokens:
            changes["max_tokens"] = max_tokens
        if sample > 0 and self.resample_temperature is not None:
            changes["temperature"] = self.resample_temperature
        if changes:
            params = Params.model_validate({**params.set_values(), **changes})
        info = self.target.info
        body = build_body(self.endpoint, self.target.model, self.rendered, params, info.reasoning)
        return Request.build(self.case, self.variant, self.target, sample, self.endpoint, body)

    def first_round(self) -> list[Request]:
        return [self.request(s, self.params.max_tokens) for s in range(self.samples)]

    def prompt_part(self) -> dict[str, Any]:
        """What of the body is prompt (and must fit the context window with the answer)."""
        if self.endpoint in ("chat", "responses"):
            return {"messages": _messages(self.rendered)}
        return {"prompt": self.rendered.prompt or "", "suffix": self.rendered.suffix}
