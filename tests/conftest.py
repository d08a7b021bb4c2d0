"""Shared fixtures: a clean environment and small suites written into tmp_path."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkit import RunSettings
from fake_openai import FakeOpenAI

TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prices_dir: Path
) -> Iterator[None]:
    """No test sees the developer's OpenAI settings, and each test has its own cache; the
    price list evalkit derives from genai-prices is kept for the session, not in ~/.cache."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "EVALKIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVALKIT_PRICES_DIR", str(prices_dir))
    yield


@pytest.fixture(scope="session")
def prices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prices")


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """write(name, text) puts a dedented file in tmp_path and returns its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


def run_settings(tmp_path: Path, **overrides: Any) -> RunSettings:
    """A test run's settings: its directory under `tmp_path/runs`, no progress bar, retries
    10 ms apart (no test waits out a real back-off); `overrides` replace any of them."""
    values: dict[str, Any] = {"out": tmp_path / "runs", "progress": False, "retry_initial_s": 0.01}
    values.update(overrides)
    return RunSettings(**values)


def cli_env(server_url: str, key: str | None = "sk-cli-test") -> dict[str, str]:
    """The environment for an `evalkit` subprocess: this machine's, pointed at `server_url`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EVALKIT_"))}
    env["OPENAI_BASE_URL"] = server_url
    if key:
        env["OPENAI_API_KEY"] = key
    return env


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAI]:
    """One loopback fake OpenAI server for the session (reset before each use)."""
    with FakeOpenAI(latency_ms=0) as server:
        yield server


@pytest.fixture
def openai(fake_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """The fake server, reset, with OPENAI_BASE_URL and OPENAI_API_KEY pointing at it."""
    fake_server.reset()
    fake_server.latency_ms = 0
    fake_server.rate_429 = 0.0
    fake_server.api_key = None
    fake_server.tokenizer = None
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    yield fake_server


def run_evalkit(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    memory_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`evalkit ARGS` in a subprocess with no stdin: a hang fails the test at `timeout`, and
    `memory_limit` (bytes of address space) stops an input built to blow memory up."""

    def limit_memory() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_memory,
    )
