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
import json
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web

from evalkit import RunResult, RunSettings, load_suite, run_suite
from evalkit.retry import MAX_HINT_S, retry_after
from evalkit.store import read_journal
from tests.conftest import cli_env

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


def cli(
    cwd: Path, *args: str, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`evalkit ARGS` in a subprocess; a run that hangs fails the test at `timeout`."""
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def entries(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's request entries."""
    return [e for e in read_journal(run_dir) if e.get("kind") is None]


def run_dir_of(result: subprocess.CompletedProcess[str], cwd: Path) -> Path:
    line = next(x for x in result.stdout.splitlines() if x.startswith("run directory: "))
    return cwd / line.removeprefix("run directory: ")


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
    result = cli(tmp_path, "run", "s.yaml", "--out", "runs", env=cli_env(server.url, key))
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
    result = cli(tmp_path, "run", "s.yaml", "--out", "runs", env=env)
    assert result.returncode == 2, result.stderr
    assert "base_url" in result.stderr or "OPENAI_BASE_URL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert server.bodies == [] and not (tmp_path / "runs").exists()


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
