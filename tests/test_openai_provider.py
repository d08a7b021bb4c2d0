"""OpenAIProvider: what it sends, how it reads answers, how it names failures, and retry hints.

Why: every record of a run goes through `complete()`. Parsing must tolerate what real
OpenAI-compatible servers leave out or add, yet refuse an answer with no choices; each failure
must be classified right, because the retry policy trusts `retryable` and `retry_after`; and
the API key must never reach a message. Unit tests use `httpx.MockTransport`; the end-to-end
ones go over real HTTP on 127.0.0.1 to `fake_openai.FakeOpenAI` through `make_transport`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from evalkit.execution.retry import parse_duration, retry_after
from evalkit.models.targets import Target, resolve
from evalkit.planning.plan import Endpoint, Request
from evalkit.planning.planner import plan
from evalkit.providers import Completion, ProviderError
from evalkit.providers.openai import OpenAIProvider, make_transport
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Case, Suite
from fake_openai import FakeOpenAI

BASE = "https://api.example.test/v1"
# A 51-character key like OpenAI's classic ones, not periodic, so a leaked piece is recognisable
# wherever it was cut. (Project keys, `sk-proj-...`, are about 164 characters.)
KEY = "sk-" + "".join(f"{i:02d}{chr(65 + i)}{chr(103 + i)}" for i in range(12))
SECRET = KEY[len("sk-") :]

Handler = Callable[[httpx.Request], httpx.Response]


def leaks_key(text: str) -> bool:
    """Whether any 12 characters of the key's secret part appear in `text`."""
    return any(SECRET[i : i + 12] in text for i in range(len(SECRET) - 11))


def target(model: str = "openai/gpt-4o-mini", base_url: str = BASE) -> Target:
    return resolve(ModelSpec(id=model), {}, {"OPENAI_BASE_URL": base_url})


def request(endpoint: Endpoint = "chat", **body: Any) -> Request:
    """A request built by hand; the body is sent as given."""
    if not body:
        body = (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            if endpoint == "chat"
            else {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}
        )
    model = "openai/gpt-4o-mini" if endpoint == "chat" else "openai/gpt-3.5-turbo-instruct"
    return Request.build(Case(id="c"), "", target(model), 0, endpoint, body)


def planned(
    model: str,
    prompt: Any,
    params: dict[str, Any] | None = None,
    suffix: str | None = None,
    base_url: str = BASE,
) -> Request:
    """The one request evalkit plans for a one-case suite."""
    data: dict[str, Any] = {"prompt": prompt, "params": params or {}, "cases": [{"id": "a"}]}
    if suffix is not None:
        data["suffix"] = suffix
    suite = Suite.model_validate(data)
    (only,) = plan(suite, target(model, base_url))
    return only


def mock_complete(handler: Handler, req: Request, api_key: str | None = KEY) -> Completion:
    async def go() -> Completion:
        client = httpx.MockTransport(handler)
        try:
            return await OpenAIProvider(client, BASE, api_key).complete(req)
        finally:
            await client.aclose()

    return asyncio.run(go())


def mock_error(handler: Handler, req: Request | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        mock_complete(handler, req or request())
    return info.value


def answer(payload: Any, status: int = 200, **headers: str) -> Handler:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload, headers=headers)

    return handler


def raw(content: bytes | str, status: int = 200, **headers: str) -> Handler:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


def openai_error(
    message: str, code: str | None = None, type_: str = "invalid_request_error"
) -> Any:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def sse(*chunks: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(c) if not isinstance(c, str) else c}\n\n" for c in chunks]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


# ---------------------------------------------------------------- what is sent


def test_chat_request_is_posted_as_json_with_a_bearer_key() -> None:
    seen: list[httpx.Request] = []
    req = planned("openai/gpt-4o-mini", "Say hi", {"temperature": 0, "max_tokens": 5})

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    mock_complete(handler, req)
    (sent,) = seen
    assert sent.method == "POST"
    assert str(sent.url) == BASE + "/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == req.body


def test_completions_go_to_completions_and_no_key_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []
    req = planned("openai/gpt-3.5-turbo-instruct", "def f():", suffix="\n")

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json={"choices": [{"text": " pass"}]})

    mock_complete(handler, req, api_key=None)
    assert str(seen[0].url) == BASE + "/completions"
    assert "authorization" not in seen[0].headers
    assert json.loads(seen[0].content)["suffix"] == "\n"


def test_trailing_slash_in_base_url_is_dropped() -> None:
    seen: list[str] = []

    async def go() -> None:
        def handler(r: httpx.Request) -> httpx.Response:
            seen.append(str(r.url))
            return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})

        client = httpx.MockTransport(handler)
        try:
            await OpenAIProvider(client, BASE + "/", KEY).complete(request())
        finally:
            await client.aclose()

    asyncio.run(go())
    assert seen == [BASE + "/chat/completions"]


# ---------------------------------------------------------------- tolerant parsing


def test_minimal_chat_answer_without_usage_or_fingerprint() -> None:
    done = mock_complete(answer({"choices": [{"message": {"content": "Paris"}}]}), request())
    assert [(c.index, c.text, c.finish_reason, c.logprobs) for c in done.choices] == [
        (0, "Paris", None, None)
    ]
    assert done.prompt_tokens is None and done.completion_tokens is None
    assert done.system_fingerprint is None
    assert done.ttft_s is None
    assert done.latency_s >= 0


def test_extra_fields_are_ignored_and_known_ones_read() -> None:
    payload = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris", "refusal": None, "x": 1},
                "logprobs": None,
                "finish_reason": "stop",
                "something_new": {"a": [1, 2]},
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 1,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "system_fingerprint": "fp_123",
        "vendor_extension": True,
    }
    done = mock_complete(answer(payload), request())
    assert done.choices[0].text == "Paris"
    assert done.choices[0].finish_reason == "stop"
    assert (done.prompt_tokens, done.completion_tokens) == (12, 1)
    assert done.system_fingerprint == "fp_123"


def test_null_chat_content_is_empty_text() -> None:
    payload = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                "finish_reason": "content_filter",
            }
        ]
    }
    done = mock_complete(answer(payload), request())
    assert done.choices[0].text == ""
    assert done.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    "usage", [None, "12", [], {"prompt_tokens": "12"}, {"prompt_tokens": True}]
)
def test_odd_usage_is_unknown_not_an_error(usage: Any) -> None:
    payload = {"choices": [{"message": {"content": "x"}}], "usage": usage}
    done = mock_complete(answer(payload), request())
    assert done.prompt_tokens is None
    assert done.choices[0].text == "x"


def test_completions_choices_keep_order_index_and_logprobs() -> None:
    logprobs = {
        "tokens": [" a"],
        "token_logprobs": [-0.1],
        "top_logprobs": [{" a": -0.1}],
        "text_offset": [0],
    }
    payload = {
        "choices": [
            {"text": " a", "index": 0, "finish_reason": "stop", "logprobs": logprobs},
            {"text": " b", "finish_reason": "length"},
            {"text": None, "index": 2},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    req = request("completions", model="gpt-3.5-turbo-instruct", prompt="hi", n=3)
    done = mock_complete(answer(payload), req)
    assert [(c.index, c.text, c.finish_reason) for c in done.choices] == [
        (0, " a", "stop"),
        (1, " b", "length"),
        (2, "", None),
    ]
    assert done.choices[0].logprobs == logprobs
    assert (done.prompt_tokens, done.completion_tokens) == (3, 2)


# ---------------------------------------------------------------- strict parsing


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": []},
        {"id": "x", "object": "chat.completion"},
        {"choices": None},
        {"choices": "Paris"},
        {"choices": ["Paris"]},
        [{"message": {"content": "Paris"}}],
        "Paris",
    ],
    ids=["empty", "missing", "null", "string", "non-object-choice", "list", "string-body"],
)
def test_no_usable_choices_is_a_bad_response_not_retried(payload: Any) -> None:
    error = mock_error(answer(payload))
    assert error.error_type == "bad_response"
    assert error.retryable is False


def test_non_json_200_is_a_retryable_bad_response() -> None:
    error = mock_error(raw(b"<html>upstream hiccup</html>"))
    assert error.error_type == "bad_response"
    assert error.retryable is True
    assert "upstream hiccup" in error.message


def test_null_choice_index_is_tolerated_or_a_provider_error() -> None:
    payload = {"choices": [{"index": None, "message": {"content": "x"}}]}
    try:
        done = mock_complete(answer(payload), request())
    except ProviderError as exc:
        assert exc.error_type == "bad_response"
    else:
        assert done.choices[0].text == "x"


def test_null_choice_index_in_a_stream_is_tolerated_or_a_provider_error() -> None:
    body = sse({"choices": [{"index": None, "delta": {"content": "x"}, "finish_reason": "stop"}]})
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    try:
        done = mock_complete(raw(body), req)
    except ProviderError as exc:
        assert exc.error_type == "bad_response"
    else:
        assert done.choices[0].text == "x"


# ---------------------------------------------------------------- streaming (parsing)


def test_stream_is_assembled_per_choice_ignoring_comments_and_empty_chunks() -> None:
    body = b": keep-alive\n\n" + sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 1, "delta": {"content": "B"}}], "system_fingerprint": "fp"},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
        [1, 2],
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}},
    ).replace(b"data: [1, 2]", b"data:[1, 2]")
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True, n=2)
    done = mock_complete(raw(body, **{"content-type": "text/event-stream"}), req)
    assert [(c.index, c.text, c.finish_reason) for c in done.choices] == [
        (0, "Hello", "stop"),
        (1, "B", "length"),
    ]
    assert (done.prompt_tokens, done.completion_tokens) == (4, 3)
    assert done.system_fingerprint == "fp"
    assert done.ttft_s is not None and done.ttft_s <= done.latency_s


def test_stream_without_done_is_truncated_and_retryable() -> None:
    body = sse({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}, done=False)
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    error = mock_error(raw(body), req)
    assert (error.error_type, error.retryable) == ("truncated_stream", True)


def test_stream_with_no_choices_is_a_bad_response() -> None:
    body = sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    error = mock_error(raw(body), req)
    assert (error.error_type, error.retryable) == ("bad_response", False)


def test_stream_http_error_is_classified_like_a_plain_one() -> None:
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    error = mock_error(answer(openai_error("Slow down."), 429, **{"retry-after": "3"}), req)
    assert (error.error_type, error.retryable, error.status) == ("rate_limit", True, 429)
    assert error.retry_after == 3.0
    assert "Slow down." in error.message


# ---------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.05"}, 0.05),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "2"}, 0.25),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "20ms"}, 1.0),
        ({"x-ratelimit-reset-tokens": "1m30s"}, 90.0),
        ({}, None),
    ],
)
def test_429_is_a_retryable_rate_limit_with_the_servers_wait(
    headers: dict[str, str], wait: float | None
) -> None:
    body = openai_error("Rate limit reached for requests", "rate_limit_exceeded", "requests")
    error = mock_error(answer(body, 429, **headers))
    assert (error.error_type, error.retryable, error.status) == ("rate_limit", True, 429)
    assert error.retry_after == (pytest.approx(wait) if wait is not None else None)
    assert "Rate limit reached for requests" in error.message


@pytest.mark.parametrize(
    "body",
    [
        openai_error(
            "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
        ),
        {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota"}},
    ],
    ids=["code", "type-only"],
)
def test_429_insufficient_quota_is_not_retried(body: Any) -> None:
    error = mock_error(answer(body, 429, **{"retry-after": "1"}))
    assert error.error_type == "insufficient_quota"
    assert error.retryable is False
    assert error.status == 429
    assert "exceeded your current quota" in error.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(status: int) -> None:
    error = mock_error(answer(openai_error("The server had an error."), status))
    assert (error.error_type, error.retryable, error.status) == ("server_error", True, status)
    assert error.retry_after is None
    assert str(status) in error.message


def test_server_error_keeps_a_retry_after_hint() -> None:
    error = mock_error(answer(openai_error("Overloaded."), 503, **{"retry-after": "5"}))
    assert (error.error_type, error.retry_after) == ("server_error", 5.0)


def test_html_error_page_becomes_its_text() -> None:
    error = mock_error(raw(b"<html>502 Bad Gateway</html>", 502))
    assert (error.error_type, error.retryable) == ("server_error", True)
    assert "502 Bad Gateway" in error.message


def test_400_keeps_the_openai_message_and_is_not_retried() -> None:
    message = "Invalid value for 'temperature': expected a number between 0 and 2."
    error = mock_error(answer(openai_error(message), 400))
    assert (error.error_type, error.retryable, error.status) == ("bad_request", False, 400)
    assert error.message == f"HTTP 400: {message}"
    assert str(error) == error.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "auth"), (403, "auth"), (404, "not_found"), (409, "http_409"), (422, "http_422")],
)
def test_other_client_errors_are_named_and_not_retried(status: int, kind: str) -> None:
    error = mock_error(answer(openai_error("Nope."), status))
    assert (error.error_type, error.retryable, error.status) == (kind, False, status)
    assert "Nope." in error.message


# ---------------------------------------------------------------- the key never leaks


@pytest.mark.parametrize(
    "handler",
    [
        answer(openai_error(f"Incorrect API key provided: {KEY}.", "invalid_api_key"), 401),
        answer({"detail": f"bad key {KEY}"}, 403),
        raw(f"proxy says: key {KEY} rejected", 500),
        raw(f"not json {KEY}"),
        answer(openai_error(f"{KEY} over quota", "insufficient_quota"), 429),
    ],
    ids=["openai-401", "other-json-403", "text-500", "text-200", "quota-429"],
)
def test_an_echoed_key_is_redacted(handler: Handler) -> None:
    error = mock_error(handler)
    assert KEY not in error.message and not leaks_key(error.message)
    assert KEY not in str(error) and not leaks_key(str(error))
    assert "[redacted]" in error.message


def test_an_echoed_key_in_a_stream_chunk_is_redacted() -> None:
    req = request(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    error = mock_error(raw(f"data: {KEY}\n\ndata: [DONE]\n\n"), req)
    assert error.error_type == "bad_response"
    assert not leaks_key(error.message)


# the key is redacted before any text is cut, so a key straddling a cut cannot leak a prefix
@pytest.mark.parametrize(
    ("handler", "streamed"),
    [
        pytest.param(
            raw("x" * 100 + KEY),
            False,
            id="non-json-200",
        ),
        pytest.param(
            raw("y" * 170 + KEY, 500),
            False,
            id="text-error",
        ),
        pytest.param(
            answer({"detail": "z" * 150 + KEY}, 400),
            False,
            id="other-json-error",
        ),
        pytest.param(
            raw("data: " + "q" * 50 + KEY + "\n\ndata: [DONE]\n\n"),
            True,
            id="stream-chunk",
        ),
    ],
)
def test_no_part_of_a_key_cut_by_truncation_leaks(handler: Handler, streamed: bool) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if streamed:
        body["stream"] = True
    error = mock_error(handler, request(**body))
    assert not leaks_key(error.message), error.message


def test_transport_errors_are_retryable_connection_or_timeout() -> None:
    def refuse(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=r)

    def slow(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=r)

    refused = mock_error(refuse)
    assert (refused.error_type, refused.retryable) == ("connection", True)
    assert "ConnectError" in refused.message
    timed_out = mock_error(slow)
    assert (timed_out.error_type, timed_out.retryable) == ("timeout", True)


# ---------------------------------------------------------------- retry hints


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1m30s", 90.0),
        ("0.5", 0.5),
        ("3", 3.0),
        (" 2s ", 2.0),
        ("0", 0.0),
        ("-1", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s", "1 s", "1s2", "5m garbage", "1.5.2s"])
def test_parse_duration_garbage_is_none(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({}, None),
        ({"retry-after-ms": "1500", "retry-after": "7", "x-ratelimit-reset-requests": "9s"}, 1.5),
        ({"retry-after": "7", "x-ratelimit-reset-requests": "9s"}, 7.0),
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after": "later", "x-ratelimit-reset-requests": "9s"}, 9.0),
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "junk", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-reset-requests": "junk"}, None),
        ({"retry-after": "junk"}, None),
    ],
)
def test_retry_after_precedence(headers: dict[str, str], wait: float | None) -> None:
    got = retry_after(headers)
    assert got == (pytest.approx(wait) if wait is not None else None)


def test_retry_after_http_date_and_any_header_case() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    got = retry_after(httpx.Headers({"Retry-After": when}))
    assert got is not None and 115 <= got <= 121
    past = email.utils.formatdate(time.time() - 600, usegmt=True)
    assert retry_after({"retry-after": past}) == 0.0
    assert retry_after(httpx.Headers({"Retry-After-Ms": "40"})) == pytest.approx(0.04)


# ---------------------------------------------------------------- real HTTP: FakeOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency_ms=1, api_key=KEY) as srv:
        yield srv


def send(
    server: FakeOpenAI, *requests: Request, timeout_s: float = 10.0, api_key: str = KEY
) -> list[Completion | ProviderError]:
    """Each request sent in turn over one real client; errors returned, not raised."""

    async def go() -> list[Completion | ProviderError]:
        client = make_transport(4)
        provider = OpenAIProvider(client, server.url, api_key, timeout_s)
        out: list[Completion | ProviderError] = []
        try:
            for req in requests:
                try:
                    out.append(await provider.complete(req))
                except ProviderError as exc:
                    out.append(exc)
        finally:
            await client.aclose()
        return out

    return asyncio.run(go())


def one(server: FakeOpenAI, req: Request, **kwargs: Any) -> Completion:
    (result,) = send(server, req, **kwargs)
    assert isinstance(result, Completion), result
    return result


def failure(server: FakeOpenAI, req: Request, **kwargs: Any) -> ProviderError:
    (result,) = send(server, req, **kwargs)
    assert isinstance(result, ProviderError), result
    return result


def chat_req(
    server: FakeOpenAI, params: dict[str, Any] | None = None, prompt: Any = None
) -> Request:
    prompt = prompt or [
        {"role": "system", "content": "Answer with the city only."},
        {"role": "user", "content": "Capital of France?\nANSWER: Paris is lovely"},
    ]
    return planned("openai/gpt-4o-mini", prompt, params, base_url=server.url)


def completions_req(
    server: FakeOpenAI, params: dict[str, Any] | None = None, suffix: str | None = None
) -> Request:
    prompt = 'def add(a, b):\n    """Sum.\n    ANSWER: return a + b\n    """\n'
    return planned("openai/gpt-3.5-turbo-instruct", prompt, params, suffix, server.url)


def test_chat_answer_over_http(server: FakeOpenAI) -> None:
    req = chat_req(server, {"temperature": 0})
    done = one(server, req)
    assert [(c.index, c.text, c.finish_reason) for c in done.choices] == [
        (0, "Paris is lovely", "stop")
    ]
    assert done.prompt_tokens == 12 and done.completion_tokens == 3
    assert done.system_fingerprint == "fp_fake_openai"
    assert done.latency_s > 0 and done.ttft_s is None
    (seen,) = server.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body == req.body


def test_completions_answer_and_suffix_over_http(server: FakeOpenAI) -> None:
    suffix = "\n\nprint(add(2, 3))\n"
    req = completions_req(server, {"temperature": 0.7, "max_tokens": 64}, suffix)
    done = one(server, req)
    assert [(c.text, c.finish_reason) for c in done.choices] == [("return a + b", "stop")]
    (seen,) = server.requests
    assert seen.path == "/v1/completions"
    assert seen.suffix == suffix
    assert seen.body["prompt"] == req.body["prompt"]


def test_n_choices_over_http(server: FakeOpenAI) -> None:
    done = one(server, chat_req(server, {"n": 3, "temperature": 1}))
    assert [(c.index, c.text) for c in done.choices] == [
        (0, "Paris is lovely #0"),
        (1, "Paris is lovely #1"),
        (2, "Paris is lovely #2"),
    ]
    done = one(server, completions_req(server, {"n": 2, "temperature": 1, "max_tokens": 2}))
    assert [(c.text, c.finish_reason) for c in done.choices] == [
        ("return a", "length"),
        ("return a", "length"),
    ]


def test_chat_logprobs_pass_through(server: FakeOpenAI) -> None:
    req = chat_req(server, {"logprobs": 2, "temperature": 0})
    assert req.body["logprobs"] is True and req.body["top_logprobs"] == 2
    choice = one(server, req).choices[0]
    assert set(choice.logprobs) == {"content", "refusal"}
    entries = choice.logprobs["content"]
    assert "".join(e["token"] for e in entries) == choice.text
    assert all(len(e["top_logprobs"]) == 2 and isinstance(e["logprob"], float) for e in entries)


def test_completions_logprobs_pass_through(server: FakeOpenAI) -> None:
    choice = one(server, completions_req(server, {"logprobs": 3})).choices[0]
    lp = choice.logprobs
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == choice.text
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(lp["text_offset"])
    assert all(len(top) == 3 for top in lp["top_logprobs"])


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_streaming_gives_the_same_answer_with_ttft_and_usage(
    server: FakeOpenAI, endpoint: str
) -> None:
    build = chat_req if endpoint == "chat" else completions_req
    params = {"n": 2, "temperature": 1}
    plain, streamed = send(server, build(server, params), build(server, {**params, "stream": True}))
    assert isinstance(plain, Completion) and isinstance(streamed, Completion)
    assert server.requests[1].body["stream_options"] == {"include_usage": True}
    assert [(c.index, c.text, c.finish_reason) for c in streamed.choices] == [
        (c.index, c.text, c.finish_reason) for c in plain.choices
    ]
    assert len(streamed.choices) == 2
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert streamed.prompt_tokens is not None
    assert streamed.system_fingerprint == "fp_fake_openai"
    assert streamed.ttft_s is not None and 0 < streamed.ttft_s <= streamed.latency_s
    assert plain.ttft_s is None


def test_stream_without_include_usage_has_no_token_counts(server: FakeOpenAI) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ANSWER: ok"}]}
    done = one(server, request(**body, stream=True))
    assert done.choices[0].text == "ok"
    assert done.prompt_tokens is None and done.completion_tokens is None


def test_wrong_key_is_an_auth_error_without_the_key(server: FakeOpenAI) -> None:
    wrong = "sk-wrong-" + "9" * 40
    error = failure(server, chat_req(server), api_key=wrong)
    assert (error.error_type, error.retryable, error.status) == ("auth", False, 401)
    assert "Incorrect API key" in error.message
    assert wrong not in error.message


def test_server_side_400_keeps_its_message(server: FakeOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": 3}
    error = failure(server, request(**body))
    assert (error.error_type, error.status) == ("bad_request", 400)
    assert "'logprobs' must be a boolean." in error.message


@pytest.mark.parametrize(
    ("fault", "kind", "retryable", "wait"),
    [
        ({"status": 429, "retry_after": "0.05"}, "rate_limit", True, 0.05),
        ({"status": 429, "retry_after_ms": "30"}, "rate_limit", True, 0.03),
        (
            {"status": 429, "headers": {"x-ratelimit-reset-requests": "1m0s"}},
            "rate_limit",
            True,
            60.0,
        ),
        ({"status": 429, "code": "insufficient_quota"}, "insufficient_quota", False, None),
        (500, "server_error", True, None),
        (503, "server_error", True, None),
        (404, "not_found", False, None),
        ({"status": 400, "message": "Bad prompt."}, "bad_request", False, None),
    ],
)
def test_scripted_http_errors_over_http(
    server: FakeOpenAI, fault: Any, kind: str, retryable: bool, wait: float | None
) -> None:
    server.script([fault])
    error = failure(server, chat_req(server))
    assert (error.error_type, error.retryable) == (kind, retryable)
    assert error.retry_after == (pytest.approx(wait) if wait is not None else None)
    if kind == "bad_request":
        assert error.message == "HTTP 400: Bad prompt."


def test_truncated_stream_is_retryable(server: FakeOpenAI) -> None:
    server.script(["truncated_sse"])
    error = failure(server, chat_req(server, {"stream": True}))
    assert (error.error_type, error.retryable) == ("truncated_stream", True)


def test_dropped_connection_is_retryable_and_the_client_recovers(server: FakeOpenAI) -> None:
    server.script(["drop", "ok"])
    dropped, after = send(server, chat_req(server), chat_req(server))
    assert isinstance(dropped, ProviderError)
    assert (dropped.error_type, dropped.retryable) == ("connection", True)
    assert isinstance(after, Completion) and after.choices[0].text == "Paris is lovely"


def test_hang_times_out_retryably(server: FakeOpenAI) -> None:
    server.script(["hang"])
    started = time.perf_counter()
    error = failure(server, chat_req(server), timeout_s=0.5)
    elapsed = time.perf_counter() - started
    assert (error.error_type, error.retryable) == ("timeout", True)
    assert 0.4 <= elapsed < 5


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_malformed_json_is_a_retryable_bad_response(server: FakeOpenAI, stream: bool) -> None:
    server.script(["malformed_json"])
    error = failure(server, chat_req(server, {"stream": stream}))
    assert (error.error_type, error.retryable) == ("bad_response", True)
    assert "not JSON" in error.message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_no_choices_is_a_bad_response_not_retried(server: FakeOpenAI, stream: bool) -> None:
    server.script(["no_choices"])
    error = failure(server, chat_req(server, {"stream": stream}))
    assert (error.error_type, error.retryable) == ("bad_response", False)
