"""A hostile OpenAI-compatible server cannot make evalkit hang, blow up its memory, exit 4,
leak the API key, or score a broken answer.

Why: the server is outside our control: a proxy that echoes the key, a `.env` saved with
CRLF, a drip-fed body, a gzip bomb, a stream cut short, emoji split into lone surrogates.
Each test runs `Hostile`, a tiny loopback server whose every answer is the test's handler,
and drives evalkit as a user does: the CLI in a subprocess where a hang must fail rather
than block (a generous subprocess timeout, never a timing assertion), `run_suite` elsewhere.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web

from evalkit import RunResult, RunSettings, load_run, load_suite, run_suite
from evalkit.execution.retry import MAX_HINT_S, retry_after
from evalkit.records.store import read_journal
from evalkit.report import write_reports
from tests.conftest import cli_env, run_evalkit

HOST = "127.0.0.1"
SERVE_AT_MOST_S = 120.0  # every endless answer below stops by itself after this
Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
Write = Callable[[str, str], Path]

# '/', a backslash and a tab: JSON can spell each of them in more than one way
KEY = "sk-hostile/Key\\with\tTAB-7f3a9c0e5b1d"
TAIL = "7f3a9c0e5b1d"


class Hostile:
    """A loopback HTTP server, in a thread of its own, that answers every request with
    `handler(request, parsed JSON body)`; `bodies` keeps what it was sent."""

    def __init__(self) -> None:
        self.handler: Handler = reply(chat("ok"))
        self.bodies: list[Any] = []
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}/v1"

    def __enter__(self) -> Hostile:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),))
        self._thread.daemon = True
        self._thread.start()
        assert ready.wait(10), "the hostile server did not start"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._loop is not None and self._stop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, HOST, 0).start()
        self._port = int(runner.addresses[0][1])
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.bodies.append(body)
        return await self.handler(request, body)


@pytest.fixture
def server() -> Iterable[Hostile]:
    with Hostile() as hostile:
        yield hostile


# ---------------------------------------------------------------- what the server sends


def chat(content: Any, finish: str | None = "stop", **message: Any) -> dict[str, Any]:
    """A chat completion with one choice."""
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def reply(payload: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handler


def raw(data: bytes, status: int = 200, **headers: str) -> Handler:
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(
            body=data, status=status, headers={"Content-Type": "application/json", **headers}
        )

    return handler


def sse(*chunks: Any, done: bool = True) -> list[bytes]:
    events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    return events + ([b"data: [DONE]\n\n"] if done else [])


def streamed(events: Iterable[bytes], pause_s: float = 0.0) -> Handler:
    """Writes `events` one by one (at most for `SERVE_AT_MOST_S`), then ends the body."""

    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVE_AT_MOST_S
        for event in events:
            if loop.time() > deadline:
                break
            await response.write(event)
            await asyncio.sleep(pause_s)
        return response

    return handler


def delta(content: str, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": {"content": content}, "finish_reason": finish}]}


# ---------------------------------------------------------------- how evalkit is driven


def suite(write: Write, params: str = "{max_tokens: 8}", cases: int = 1) -> Path:
    lines = [
        "models: [openai/gpt-3.5-turbo]",
        'prompt: [{role: user, content: "{{ q }}"}]',
        f"params: {params}",
        "cases:",
        *(f"  - {{id: c{i}, vars: {{q: question {i}}}}}" for i in range(cases)),
    ]
    return write("s.yaml", "\n".join(lines) + "\n")


def run(path: Path, server: Hostile, key: str = KEY, retries: int = 1) -> RunResult:
    settings = RunSettings(
        out=path.parent / "runs",
        max_retries=retries,
        retry_initial_s=0.01,
        max_error_rate=1.0,
        progress=False,
        environ={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": key},
    )
    return run_suite(load_suite(path), settings)


def entries(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's request entries."""
    return [e for e in read_journal(run_dir) if e.get("kind") is None]


def run_dir_of(result: subprocess.CompletedProcess[str], cwd: Path) -> Path:
    line = next(x for x in result.stdout.splitlines() if x.startswith("run directory: "))
    return cwd / line.removeprefix("run directory: ")


# ---------------------------------------------------------------- 1. the key, however spelled

ECHOES: dict[str, Callable[[str], str]] = {
    "u-escapes": lambda key: "".join(f"\\u{ord(c):04x}" for c in key),
    "escaped-solidus": lambda key: json.dumps(key)[1:-1].replace("/", "\\/"),
    "plain-json": lambda key: json.dumps(key)[1:-1],
}


def echo_the_key(spell: Callable[[str], str]) -> Handler:
    """Repeats the key it was sent in an answer (c0), a 400 (c1) and a 401 (c2)."""

    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        key = request.headers["Authorization"].removeprefix("Bearer").strip()
        said = spell(key)
        prompt = body["messages"][-1]["content"]
        status = {"question 0": 200, "question 1": 400}.get(prompt, 401)
        if status == 200:
            text = json.dumps(chat("KEYPLACE"))
        else:
            text = json.dumps({"error": {"message": "Incorrect API key: KEYPLACE", "code": None}})
        return web.Response(
            text=text.replace("KEYPLACE", said), status=status, content_type="application/json"
        )

    return handler


def assert_no_key_anywhere(run_dir: Path, *outputs: str, key: str = KEY) -> None:
    forms = {key, key.strip(), TAIL, *(spell(key.strip()) for spell in ECHOES.values())}
    texts = {p.name: p.read_text("utf-8", "replace") for p in run_dir.iterdir()}
    texts["results.parquet"] = load_run(run_dir).astype(str).to_csv()
    texts.update({f"output {i}": text for i, text in enumerate(outputs)})
    for name, text in texts.items():
        for form in forms:
            assert form not in text, f"the key ({form!r}) is in {name}"


@pytest.mark.parametrize("spell", list(ECHOES.values()), ids=list(ECHOES))
def test_a_key_echoed_in_any_json_spelling_is_redacted_everywhere(
    server: Hostile, tmp_path: Path, write: Write, spell: Callable[[str], str]
) -> None:
    server.handler = echo_the_key(spell)
    suite(write, cases=3)
    env = cli_env(server.url, KEY)
    result = run_evalkit("run", "s.yaml", "--out", "runs", "--report", cwd=tmp_path, env=env)
    assert result.returncode == 3, result.stderr  # the 401 stopped the model
    run_dir = run_dir_of(result, tmp_path)
    assert {"report.html", "report.md", "junit.xml", "results.parquet"} <= {
        p.name for p in run_dir.iterdir()
    }
    answer = next(e for e in entries(run_dir) if e["case_id"] == "c0")
    assert answer["choices"][0]["text"] == "[redacted]"
    assert_no_key_anywhere(run_dir, result.stdout, result.stderr)


def test_a_key_with_surrounding_whitespace_is_redacted_as_the_server_saw_it(
    server: Hostile, tmp_path: Path, write: Write
) -> None:
    padded = " sk-padded-0123-" + TAIL + " \t"
    server.handler = echo_the_key(lambda key: key)
    suite(write, cases=3)
    env = cli_env(server.url, padded)
    result = run_evalkit("run", "s.yaml", "--out", "runs", "--report", cwd=tmp_path, env=env)
    assert result.returncode == 3, result.stderr
    assert_no_key_anywhere(run_dir_of(result, tmp_path), result.stdout, result.stderr, key=padded)


# ---------------------------------------------------------------- 2. keys and URLs, when read


@pytest.mark.parametrize(
    "key",
    ["sk-crlf-env-" + TAIL + "\r", "sk-two\r\nlines-" + TAIL, "sk-clé-" + TAIL, "sk-\x01-" + TAIL],
    ids=["crlf-env", "line-break", "non-ascii", "control"],
)
def test_an_unsendable_key_exits_2_without_echoing_it(
    server: Hostile, tmp_path: Path, write: Write, key: str
) -> None:
    suite(write)
    result = run_evalkit(
        "run", "s.yaml", "--out", "runs", cwd=tmp_path, env=cli_env(server.url, key)
    )
    assert result.returncode == 2, result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert TAIL not in result.stdout + result.stderr
    assert server.bodies == [] and not (tmp_path / "runs").exists()


PASSWORD = "hunter2-" + TAIL


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://evalkit:{password}@{host}/v1", False),
        ("http://evalkit:{password}@{host}/v1", True),
        ("http://:{password}@{host}/v1", False),
        ("http://{host}/v1?api-key={password}", False),
        ("http://127.0.0.1:99999/v1#{password}", False),
    ],
    ids=["user-password", "endpoint-user-password", "password-only", "query", "bad-port"],
)
def test_an_unusable_base_url_exits_2_and_no_credential_is_stored(
    server: Hostile, tmp_path: Path, write: Write, url: str, endpoint: bool
) -> None:
    base_url = url.format(password=PASSWORD, host=server.url.removeprefix("http://")[:-3])
    if endpoint:
        write(
            "s.yaml",
            f"endpoints: {{box: {{base_url: '{base_url}'}}}}\nmodels: [box/m]\n"
            'prompt: "{{ q }}"\ncases: [{id: a, vars: {q: hi}}]\n',
        )
        env = cli_env(server.url)
    else:
        suite(write)
        env = cli_env(base_url)
    result = run_evalkit("run", "s.yaml", "--out", "runs", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "base_url" in result.stderr or "OPENAI_BASE_URL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert server.bodies == [] and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 10. time


def drip(first: bytes, then: bytes, every_s: float) -> Handler:
    """Sends `first`, then `then` every `every_s` seconds, never finishing the answer."""
    return streamed([first, *[then] * int(SERVE_AT_MOST_S / every_s)], pause_s=every_s)


@pytest.mark.parametrize(
    ("params", "handler"),
    [
        ("{max_tokens: 8}", drip(b'{"choices": [', b" ", 0.5)),
        ("{max_tokens: 8, stream: true}", drip(b"", b": keep-alive\n\n", 0.2)),
        ("{max_tokens: 8, stream: true}", drip(b"", b"d", 0.5)),
    ],
    ids=["drip-fed-json", "keep-alive-comments", "drip-fed-stream-line"],
)
def test_a_server_that_never_finishes_cannot_outlast_the_timeout(
    server: Hostile, tmp_path: Path, write: Write, params: str, handler: Handler
) -> None:
    server.handler = handler
    suite(write, params=params)
    args = ("run", "s.yaml", "--out", "runs", "--timeout", "2", "--max-retries", "2")
    result = run_evalkit(*args, cwd=tmp_path, env=cli_env(server.url, KEY), timeout=60)
    assert result.returncode == 3, result.stderr  # every request failed
    (row,) = entries(run_dir_of(result, tmp_path))
    assert (row["error_type"], row["attempts"]) == ("timeout", 2)
    assert "--timeout" in row["error"]


# ---------------------------------------------------------------- 11. size

HUGE = 32 << 20  # far past the cap for max_tokens 8, and still quick to make


def huge_answer(size: int) -> bytes:
    return json.dumps(chat("A" * size)).encode()


def gzip_bomb() -> Handler:
    return raw(gzip.compress(huge_answer(HUGE), 1), **{"Content-Encoding": "gzip"})


@pytest.mark.parametrize(
    ("params", "make_handler"),
    [
        ("{max_tokens: 8}", gzip_bomb),
        ("{max_tokens: 8}", lambda: raw(huge_answer(4 << 20))),
        ("{max_tokens: 8, stream: true}", lambda: streamed(sse(*[delta("B" * 4096)] * 1024))),
        ("{max_tokens: 8, stream: true}", lambda: streamed([b"data: " + b"C" * (4 << 20)])),
    ],
    ids=["gzip-bomb", "plain", "stream", "endless-stream-line"],
)
def test_a_body_past_the_cap_is_an_error_row_not_an_answer(
    server: Hostile, tmp_path: Path, write: Write, params: str, make_handler: Callable[[], Handler]
) -> None:
    server.handler = make_handler()
    result = run(suite(write, params=params), server)
    (row,) = entries(result.run_dir)
    assert row["error_type"] == "response_too_large"
    assert "max_tokens" in row["error"]
    journal = result.run_dir / "journal.jsonl"
    assert journal.stat().st_size < 64 << 10  # the answer was stored nowhere
    assert result.frame["error_type"].tolist() == ["response_too_large"]


# ---------------------------------------------------------------- 12. lone surrogates

LONE = json.dumps("smile \ud83d")  # what a server sends when a token splits an emoji
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "f\udc00", "arguments": '{"e": "\ud83d"}'},
}


@pytest.mark.parametrize(
    ("params", "handler", "text"),
    [
        (
            "{max_tokens: 8}",
            reply(chat(json.loads(LONE), tool_calls=[CALL])),
            "smile \ufffd",
        ),
        (
            "{max_tokens: 8, stream: true}",
            streamed(sse(delta("smile \ud83d"), delta("\ude00 ok"), delta("", finish="stop"))),
            "smile \U0001f600 ok",  # the two halves of the pair came in two chunks
        ),
    ],
    ids=["plain-with-tool-call", "stream-split-pair"],
)
def test_lone_surrogates_are_normalised_so_run_load_report_and_cache_work(
    server: Hostile, tmp_path: Path, write: Write, params: str, handler: Handler, text: str
) -> None:
    server.handler = handler
    path = suite(write, params=params)
    first = run(path, server)
    assert first.status == "complete"
    frame = load_run(first.run_dir)
    assert frame["output"].tolist() == [text]
    for column in frame.select_dtypes(exclude="number").columns:
        for value in frame[column].dropna().astype(str):
            value.encode("utf-8")  # every text is valid Unicode: Parquet, JSON and HTML take it
    assert all(p.stat().st_size for p in write_reports(first.run_dir))
    second = run(path, server)  # served from the cache, which kept the normalised answer
    assert second.status == "complete" and len(server.bodies) == 1
    assert load_run(second.run_dir)["output"].tolist() == [text]
    assert all(p.stat().st_size for p in write_reports(second.run_dir))


# ---------------------------------------------------------------- 14. a stream cut short


@pytest.mark.parametrize(
    ("params", "chunks"),
    [
        ("{max_tokens: 8, stream: true}", [delta("Hel"), delta("lo")]),
        ("{max_tokens: 8, stream: true, n: 2}", [delta("A", 0, "stop"), delta("B", 1)]),
    ],
    ids=["one-choice", "second-of-two"],
)
def test_a_stream_ending_before_a_finish_reason_is_retried_then_an_error_row(
    server: Hostile, tmp_path: Path, write: Write, params: str, chunks: list[Any]
) -> None:
    server.handler = streamed(sse(*chunks))
    result = run(suite(write, params=params), server, retries=2)
    (row,) = entries(result.run_dir)
    assert (row["error_type"], row["attempts"], len(server.bodies)) == ("truncated_stream", 2, 2)
    assert "finish_reason" in row["error"] and "choices" not in row  # never scored
    assert not result.frame["passed"].any()


# ---------------------------------------------------------------- 15. server-shaped rows


def choices(*indices: int) -> dict[str, Any]:
    return {
        "choices": [
            {"index": i, "message": {"content": f"answer {i}"}, "finish_reason": "stop"}
            for i in indices
        ]
    }


@pytest.mark.parametrize(
    ("params", "handler"),
    [
        ("{max_tokens: 8, n: 2}", reply(choices(0, 0))),
        ("{max_tokens: 8, n: 2}", reply(choices(0, 2))),
        ("{max_tokens: 8}", reply(choices(-1))),
        ("{max_tokens: 8, stream: true}", streamed(sse(delta("x", 1, "stop")))),
    ],
    ids=["duplicate", "out-of-range", "negative", "stream-out-of-range"],
)
def test_a_duplicate_or_out_of_range_choice_index_is_an_error_row(
    server: Hostile, tmp_path: Path, write: Write, params: str, handler: Handler
) -> None:
    server.handler = handler
    result = run(suite(write, params=params), server)
    (row,) = entries(result.run_dir)
    assert row["error_type"] == "bad_response" and "index" in row["error"]


CRASHED = "upstream model crashed (id 7)"


@pytest.mark.parametrize(
    ("params", "handler"),
    [
        ("{max_tokens: 8}", reply({"error": {"message": CRASHED, "code": 500}})),
        ("{max_tokens: 8}", reply({"object": "error", "message": CRASHED, "code": 500})),
        ("{max_tokens: 8, stream: true}", streamed(sse({"error": {"message": CRASHED}}))),
    ],
    ids=["plain", "vllm-shape", "stream"],
)
def test_a_200_carrying_an_error_keeps_the_servers_message(
    server: Hostile, tmp_path: Path, write: Write, params: str, handler: Handler
) -> None:
    server.handler = handler
    result = run(suite(write, params=params), server)
    (row,) = entries(result.run_dir)
    assert CRASHED in row["error"]


def test_a_server_that_ignores_stream_true_is_accepted(
    server: Hostile, tmp_path: Path, write: Write
) -> None:
    server.handler = reply(chat("a plain answer"))
    result = run(suite(write, params="{max_tokens: 8, stream: true}"), server)
    (row,) = entries(result.run_dir)
    assert row.get("error_type") is None
    assert row["choices"][0]["text"] == "a plain answer"
    assert server.bodies[0]["stream"] is True


def test_control_characters_in_server_messages_never_reach_the_terminal(
    server: Hostile, tmp_path: Path, write: Write
) -> None:
    hostile = "no\x1b[2J\x1b]0;owned\x07 access\r\n\x00\u202eevil\x9b"
    server.handler = reply({"error": {"message": hostile}}, status=401)
    suite(write)
    result = run_evalkit(
        "run", "s.yaml", "--out", "runs", cwd=tmp_path, env=cli_env(server.url, KEY)
    )
    assert result.returncode == 3
    (row,) = entries(run_dir_of(result, tmp_path))
    assert "owned" in row["error"] and "owned" in result.stderr  # the message, made harmless
    for text in (row["error"], result.stdout, result.stderr):
        bad = {c for c in text if c not in "\n" and unicodedata.category(c) in ("Cc", "Cf")}
        assert not bad, text


# ---------------------------------------------------------------- malformed answers, a row each

CORRUPT_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"\xff" * 20  # an invalid block
DEEP_LOGPROBS = '"logprobs": ' + "[" * 900 + "]" * 900 + ', "finish_reason"'


@pytest.mark.parametrize(
    ("params", "handler", "error_type"),
    [
        ("{max_tokens: 8}", raw(b"[" * 100_000), "bad_response"),
        (
            "{max_tokens: 8}",
            raw(json.dumps(chat("x")).replace('"finish_reason"', DEEP_LOGPROBS).encode()),
            "bad_response",
        ),
        ("{max_tokens: 8}", reply(chat("x", tool_calls=7)), None),
        ("{max_tokens: 8}", reply(chat("x", tool_calls=[{"function": "f"}])), None),
        (
            "{max_tokens: 8}",
            raw(CORRUPT_GZIP, **{"Content-Encoding": "gzip"}),
            "bad_response",
        ),
        ("{max_tokens: 8, stream: true}", streamed(sse({"choices": {"0": 1}})), "bad_response"),
        ("{max_tokens: 8, stream: true}", streamed(sse({"choices": ["x"]})), "bad_response"),
        (
            "{max_tokens: 8, stream: true}",
            streamed(sse({"usage": [1], "choices": []}, delta("x", 0, "stop"))),
            None,
        ),
        (
            "{max_tokens: 8, stream: true}",
            streamed(sse({"choices": [{"delta": {"tool_calls": 5}, "finish_reason": "stop"}]})),
            None,
        ),
    ],
    ids=[
        "nested-body",
        "nested-logprobs",
        "tool-calls-int",
        "function-str",
        "corrupt-gzip",
        "choices-dict",
        "choice-str",
        "usage-list",
        "stream-tool-calls-int",
    ],
)
def test_a_malformed_answer_is_a_row_never_a_crash(
    server: Hostile,
    tmp_path: Path,
    write: Write,
    params: str,
    handler: Handler,
    error_type: str | None,
) -> None:
    server.handler = handler
    result = run(suite(write, params=params), server)
    assert result.status == "complete"
    (row,) = entries(result.run_dir)
    assert row.get("error_type") == error_type


# ---------------------------------------------------------------- waits the server asks for


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e400"},
        {"retry-after-ms": "99999999999"},
        {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
        {"x-ratelimit-reset-requests": "99999h"},
    ],
)
def test_a_wait_the_server_asks_for_is_capped(headers: dict[str, str]) -> None:
    # a 429's hint pauses the whole model: uncapped, one header would stop the run forever
    assert retry_after(headers) == MAX_HINT_S
