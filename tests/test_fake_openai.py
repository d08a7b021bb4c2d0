"""Tests of the fake OpenAI server itself, over real HTTP on 127.0.0.1 with plain httpx.

Why: every client test in evalkit trusts this server, so its wire format and faults must be right.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_openai import ECHO_MAX_CHARS, FakeOpenAI, Fault

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


def chat(
    client: httpx.Client,
    content: str = "hello",
    model: str = "fake-model",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/chat/completions", json=body, headers=headers)


def complete(
    client: httpx.Client, prompt: Any = "hello", model: str = "fake-model", **extra: Any
) -> httpx.Response:
    return client.post("/completions", json={"model": model, "prompt": prompt, **extra})


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


# ----------------------------------------------------------------------------- answers


def test_chat_answer_shape_and_answer_rule(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "What is 6*7?\nANSWER: forty two"},
    ]
    r = client.post("/chat/completions", json={"model": "gpt-x", "messages": messages})
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-x"
    assert data["system_fingerprint"]
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "forty two"
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    # prompt words over all messages: "be terse" (2) + "What is 6*7? ANSWER: forty two" (6)
    assert data["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_chat_echo_rule_is_truncated(client: httpx.Client) -> None:
    assert chat(client, "hi there").json()["choices"][0]["message"]["content"] == "echo: hi there"
    long = "x" * (ECHO_MAX_CHARS + 50)
    content = chat(client, long).json()["choices"][0]["message"]["content"]
    assert content == "echo: " + "x" * ECHO_MAX_CHARS


def test_chat_uses_last_user_message_and_text_parts(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "ANSWER: old"},
        {"role": "assistant", "content": "old"},
        {"role": "user", "content": [{"type": "text", "text": "ANSWER: new one"}]},
    ]
    r = client.post("/chat/completions", json={"model": "m", "messages": messages})
    assert r.json()["choices"][0]["message"]["content"] == "new one"


def test_completions_shape_and_batch_prompts(client: httpx.Client) -> None:
    data = complete(client, "Q\nANSWER: yes").json()
    assert data["object"] == "text_completion"
    assert data["id"].startswith("cmpl-")
    assert data["choices"] == [
        {"text": "yes", "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    assert data["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    batch = complete(client, ["ANSWER: a", "ANSWER: b c"]).json()
    assert [(c["index"], c["text"]) for c in batch["choices"]] == [(0, "a"), (1, "b c")]
    assert batch["usage"]["completion_tokens"] == 3


def test_max_tokens_truncates_with_length(client: httpx.Client) -> None:
    r = chat(client, "ANSWER: one two three four", max_tokens=2).json()
    assert r["choices"][0]["message"]["content"] == "one two"
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 2
    r = chat(client, "ANSWER: one two three four", max_completion_tokens=4).json()
    assert r["choices"][0]["finish_reason"] == "stop"
    r = complete(client, "ANSWER: one two three", max_tokens=1).json()
    assert (r["choices"][0]["text"], r["choices"][0]["finish_reason"]) == ("one", "length")


def test_length_until_max_hook(client: httpx.Client) -> None:
    prompt = "LENGTH_UNTIL_MAX=64\nANSWER: short"
    reasons = [
        complete(client, prompt, max_tokens=m).json()["choices"][0]["finish_reason"]
        for m in (16, 32, 63, 64, 128)
    ]
    assert reasons == ["length", "length", "length", "stop", "stop"]
    assert complete(client, prompt).json()["choices"][0]["finish_reason"] == "stop"
    assert chat(client, prompt, max_tokens=8).json()["choices"][0]["finish_reason"] == "length"


def test_filter_me_gives_content_filter(client: httpx.Client) -> None:
    assert chat(client, "FILTER_ME please").json()["choices"][0]["finish_reason"] == (
        "content_filter"
    )
    assert complete(client, "FILTER_ME").json()["choices"][0]["finish_reason"] == "content_filter"


def test_n_choices_differ_only_with_temperature(client: httpx.Client) -> None:
    data = chat(client, "ANSWER: x y", n=3, temperature=0.7).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in data["choices"]] == ["x y #0", "x y #1", "x y #2"]
    assert data["usage"]["completion_tokens"] == 9
    greedy = complete(client, "ANSWER: x y", n=2, temperature=0).json()
    assert [c["text"] for c in greedy["choices"]] == ["x y", "x y"]
    assert greedy["usage"]["completion_tokens"] == 4


def test_suffix_is_recorded(server: FakeOpenAI, client: httpx.Client) -> None:
    r = complete(client, "def f():\nANSWER: return 1", suffix="\n# end")
    assert r.json()["choices"][0]["text"] == "return 1"
    record = server.requests[-1]
    assert record.path == "/v1/completions"
    assert record.suffix == "\n# end"
    assert record.body["suffix"] == "\n# end"


def test_requests_are_recorded_and_counted(server: FakeOpenAI, client: httpx.Client) -> None:
    chat(client, "a", headers={"X-Trace": "t1"})
    complete(client, "b")
    assert client.get("/models").status_code == 200
    assert server.count() == 3
    assert server.count("/v1/chat/completions") == 1
    assert server.count("completions") == 1
    first = server.requests[0]
    assert first.method == "POST"
    assert first.headers["x-trace"] == "t1"
    assert first.body["messages"][0]["content"] == "a"
    assert client.get(server.base_url + "/_stats").json() == server.stats()
    assert server.stats()["by_path"]["/v1/models"] == 1


def test_concurrent_requests_are_all_recorded(server: FakeOpenAI) -> None:
    def worker(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=10.0) as c:
            return sum(chat(c, f"q{i}-{j}").status_code == 200 for j in range(20))

    with ThreadPoolExecutor(max_workers=8) as pool:
        ok = sum(pool.map(worker, range(8)))
    assert ok == 160
    assert server.count() == 160
    assert len(server.requests) == 160


def test_models_endpoint(client: httpx.Client) -> None:
    data = client.get("/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["fake-model"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"model": "m"},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": "2"},
    ],
)
def test_invalid_requests_get_400(client: httpx.Client, body: dict[str, Any]) -> None:
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_url_is_openai_style_404(client: httpx.Client) -> None:
    r = client.post("/chat/completion", json={})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_url"


# ----------------------------------------------------------------------------- logprobs


def test_completions_logprobs_legacy_shape(client: httpx.Client) -> None:
    choice = complete(client, "ANSWER: ab abcdef x", logprobs=2).json()["choices"][0]
    lp = choice["logprobs"]
    assert lp["tokens"] == ["ab", " abcdef", " x"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["token_logprobs"] == [-0.2, -0.2, -0.2]
    assert lp["text_offset"] == [0, 2, 9]
    assert len(lp["top_logprobs"]) == 3
    assert all(len(top) == 2 for top in lp["top_logprobs"])
    assert lp["top_logprobs"][0]["ab"] == -0.2


def test_chat_logprobs_shape(client: httpx.Client) -> None:
    choice = chat(client, "ANSWER: hello world", logprobs=True, top_logprobs=3).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert [e["token"] for e in content] == ["hello", " world"]
    assert content[0]["logprob"] == 0.0
    assert content[1]["logprob"] == pytest.approx(-0.1)
    assert content[1]["bytes"] == list(b" world")
    assert len(content[0]["top_logprobs"]) == 3
    assert set(content[0]["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    plain = chat(client, "ANSWER: hello", logprobs=True).json()["choices"][0]["logprobs"]
    assert plain["content"][0]["top_logprobs"] == []


# ----------------------------------------------------------------------------- streaming


def test_chat_stream_shape(client: httpx.Client) -> None:
    r = chat(
        client,
        "ANSWER: one two three",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    payloads = sse_data(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content_chunks = chunks[1:-2]
    assert len(content_chunks) == 3
    assert "".join(c["choices"][0]["delta"]["content"] for c in content_chunks) == "one two three"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_chat_stream_without_usage_option(client: httpx.Client) -> None:
    payloads = sse_data(chat(client, "ANSWER: a b", stream=True, max_tokens=1).text)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completions_stream_shape(client: httpx.Client) -> None:
    r = complete(
        client,
        "ANSWER: alpha beta",
        stream=True,
        logprobs=1,
        n=2,
        stream_options={"include_usage": True},
    )
    payloads = sse_data(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    texts: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, str] = {}
    for c in chunks[:-1]:
        [choice] = c["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"] is not None:
            finish[choice["index"]] = choice["finish_reason"]
        elif choice["text"]:
            assert choice["logprobs"]["tokens"] == [choice["text"]]
    assert texts == {0: "alpha beta #0", 1: "alpha beta #1"}
    assert finish == {0: "stop", 1: "stop"}
    assert chunks[-1]["usage"]["completion_tokens"] == 6


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "headers", "err_type", "code"),
    [
        (
            {"status": 429, "retry_after": "0.05"},
            429,
            {"retry-after": "0.05"},
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        (
            {"status": 429, "retry_after_ms": "30"},
            429,
            {"retry-after-ms": "30"},
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        (
            {"status": 429, "headers": {"x-ratelimit-reset-requests": "20ms"}},
            429,
            {"x-ratelimit-reset-requests": "20ms"},
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        (
            {"status": 429, "code": "insufficient_quota"},
            429,
            {},
            "insufficient_quota",
            "insufficient_quota",
        ),
        ({"status": 500}, 500, {}, "server_error", None),
        ({"status": 502}, 502, {}, "server_error", None),
        ({"status": 503}, 503, {}, "server_error", None),
        (504, 504, {}, "server_error", None),
        ({"status": 401}, 401, {}, "invalid_request_error", "invalid_api_key"),
        ({"status": 404}, 404, {}, "invalid_request_error", "model_not_found"),
    ],
)
def test_status_faults(
    server: FakeOpenAI,
    client: httpx.Client,
    fault: Any,
    status: int,
    headers: dict[str, str],
    err_type: str,
    code: str | None,
) -> None:
    server.script([fault])
    r = chat(client)
    assert r.status_code == status
    for name, value in headers.items():
        assert r.headers[name] == value
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == err_type
    assert error["code"] == code
    assert error["param"] is None
    assert chat(client).status_code == 200  # script exhausted: normal answers again


def test_400_fault_carries_message(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script([{"status": 400, "message": "context too long"}])
    r = complete(client)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "context too long"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_script_is_consumed_in_order(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script([{"status": 503}, "ok", {"status": 429}, {"delay_ms": 1}])
    assert server.pending_faults == 4
    statuses = [chat(client).status_code for _ in range(6)]
    assert statuses == [503, 200, 429, 200, 200, 200]
    assert server.pending_faults == 0


def test_faults_apply_only_to_completion_requests(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script([{"status": 500}])
    assert client.get("/models").status_code == 200
    assert complete(client).status_code == 500


def test_malformed_json_fault(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script(["malformed_json", "malformed_json"])
    r = chat(client)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    payloads = sse_data(chat(client, stream=True).text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(payloads[0])


def test_no_choices_fault(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script(["no_choices", "no_choices"])
    r = complete(client)
    assert r.status_code == 200
    assert r.json()["choices"] == []
    payloads = sse_data(chat(client, stream=True).text)
    assert payloads[-1] == "[DONE]"
    assert all(json.loads(p)["choices"] == [] for p in payloads[:-1])


def test_drop_fault_closes_connection(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script(["drop"])
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client)
    assert chat(client).status_code == 200
    assert server.count("chat/completions") == 2


def test_hang_fault_outlasts_client_timeout(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script(["hang"])
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=0.3,
        )
    assert chat(client).status_code == 200


def test_stop_releases_a_hang() -> None:
    srv = FakeOpenAI().start()
    srv.script(["hang"])
    with httpx.Client(base_url=srv.url, timeout=30.0) as c, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, c)
        while srv.count() == 0:  # wait until the request is in the server
            time.sleep(0.005)
        srv.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            pending.result()


def test_truncated_sse_fault(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script(["truncated_sse"])
    r = chat(client, "ANSWER: one two three four", stream=True)
    assert r.status_code == 200
    payloads = sse_data(r.text)
    assert payloads
    assert "[DONE]" not in payloads
    chunks = [json.loads(p) for p in payloads]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_delay_fault_still_answers(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script([{"delay_ms": 20}, {"fault": "drop", "delay_ms": 5}])
    assert chat(client, "ANSWER: ok").json()["choices"][0]["message"]["content"] == "ok"
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client)


@pytest.mark.parametrize(
    "bad",
    ["explode", {"status": 99}, {"stauts": 429}, {"delay_ms": -1}, True, {"fault": "nope"}],
)
def test_invalid_fault_specs_rejected(server: FakeOpenAI, bad: Any) -> None:
    with pytest.raises(ValueError):
        server.script([bad])


def test_fault_parse_spellings() -> None:
    assert Fault.parse("drop").kind == "drop"
    assert Fault.parse(429) == Fault(kind="status", status=429)
    assert Fault.parse({"delay_ms": 5}) == Fault(kind="ok", delay_ms=5.0)


def test_reset_clears_log_and_script(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script([{"status": 500}, {"status": 500}])
    assert chat(client).status_code == 500
    server.reset()
    assert server.requests == []
    assert server.count() == 0
    assert server.pending_faults == 0
    assert chat(client).status_code == 200


def test_model_latency_override() -> None:
    with (
        FakeOpenAI(model_latency_ms={"slow-model": 60_000}) as srv,
        httpx.Client(base_url=srv.url, timeout=10.0) as c,
    ):
        assert chat(c, model="fast-model").status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            c.post(
                "/chat/completions",
                json={"model": "slow-model", "messages": [{"role": "user", "content": "x"}]},
                timeout=0.3,
            )


# ----------------------------------------------------------------------------- modes


def test_api_key_required() -> None:
    with FakeOpenAI(api_key="sk-test") as srv, httpx.Client(base_url=srv.url) as c:
        missing = chat(c)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = chat(c, headers={"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401
        assert c.get("/models").status_code == 401
        good = {"Authorization": "Bearer sk-test"}
        assert chat(c, headers=good).status_code == 200
        assert c.get("/models", headers=good).status_code == 200


def _statuses_with_rate(seed: int, n: int = 60) -> tuple[list[int], set[str]]:
    with FakeOpenAI(rate_429=0.2, seed=seed) as srv, httpx.Client(base_url=srv.url) as c:
        responses = [complete(c) for _ in range(n)]
        assert srv.count() == n
    retry_after = {r.headers["retry-after"] for r in responses if r.status_code == 429}
    return [r.status_code for r in responses], retry_after


def test_rate_429_is_deterministic_given_seed() -> None:
    first, retry_after = _statuses_with_rate(seed=1)
    second, _ = _statuses_with_rate(seed=1)
    other, _ = _statuses_with_rate(seed=2)
    assert first == second
    assert first != other
    assert set(first) == {200, 429}
    assert 3 <= first.count(429) <= 30
    assert retry_after == {"0.01"}


def test_rate_429_reset_reseeds(server: FakeOpenAI, client: httpx.Client) -> None:
    server.rate_429 = 0.5
    server.seed = 7
    server.reset()
    first = [complete(client).status_code for _ in range(20)]
    server.reset()
    assert [complete(client).status_code for _ in range(20)] == first


def test_no_record_mode_only_counts() -> None:
    with FakeOpenAI(record=False) as srv, httpx.Client(base_url=srv.url) as c:
        assert chat(c).status_code == 200
        assert srv.requests == []
        assert srv.count() == 1
        assert c.get(srv.base_url + "/_stats").json() == {
            "count": 1,
            "by_path": {"/v1/chat/completions": 1},
        }


def test_start_twice_and_url_before_start() -> None:
    srv = FakeOpenAI()
    with pytest.raises(RuntimeError):
        _ = srv.url
    with srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/v1"
        with pytest.raises(RuntimeError):
            srv.start()
    srv.stop()  # idempotent


# ----------------------------------------------------------------------------- CLI


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the CLI printed nothing"
    return proc.stdout.readline().decode()


def test_cli_serves_until_sigterm() -> None:
    cmd = [sys.executable, "-m", "fake_openai", "--port", "0", "--latency-ms", "1"]
    cmd += ["--no-log", "--api-key", "sk-cli", "--model-latency", "slow=5"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        line = _read_line(proc)
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.split()[-1]
        headers = {"Authorization": "Bearer sk-cli"}
        with httpx.Client(base_url=base, headers=headers, timeout=10.0) as c:
            r = c.post(
                "/v1/chat/completions",
                json={"model": "slow", "messages": [{"role": "user", "content": "ANSWER: 7"}]},
            )
            assert r.json()["choices"][0]["message"]["content"] == "7"
            assert c.post("/_script", json=[{"status": 429, "retry_after": "0.02"}]).json() == {
                "pending": 1
            }
            limited = c.post("/v1/completions", json={"model": "m", "prompt": "x"})
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "0.02"
            assert c.post("/_script", json={"not": "a list"}).status_code == 400
            stats = c.get("/_stats").json()
            assert stats == {
                "count": 2,
                "by_path": {"/v1/chat/completions": 1, "/v1/completions": 1},
            }
            assert c.post("/_reset").json()["count"] == 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
