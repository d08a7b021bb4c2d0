"""Offline token counting, and the dry run's estimate against what a server counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evalkit import load_run, load_suite, run_suite
from evalkit.execution.runner import dry_run
from evalkit.models.catalog import lookup
from evalkit.models.tokens import Counter, fits
from evalkit.planning.validate import check_suite
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

ROOT = Path(__file__).parent.parent


def test_counting_never_touches_the_network(tmp_path: Path) -> None:
    """A fresh tiktoken cache and no network: the shipped encodings are used, nothing fetched."""
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network blocked by the test")
        socket.socket.connect = refuse
        socket.getaddrinfo = refuse
        from evalkit.models.catalog import lookup
        from evalkit.models.tokens import Counter
        print(Counter(lookup("openai/gpt-4")).text("hello world"))
        print(Counter(lookup("openai/gpt-4o")).text("hello world, again"))
        print(len(attempts))
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "tk"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "4", "0"]
    assert len(list((tmp_path / "tk").iterdir())) == 2  # both files, under tiktoken's names


def test_chat_overhead_follows_the_openai_recipe() -> None:
    counter = Counter(lookup("openai/gpt-3.5-turbo"))  # type: ignore[arg-type]
    one = counter.body({"messages": [{"role": "user", "content": "hello world"}]})
    assert one == 3 + 3 + 1 + 2  # priming + per message + "user" + "hello world"
    named = counter.body({"messages": [{"role": "user", "content": "hello world", "name": "bob"}]})
    assert named == one + 1 + counter.text("bob")


def test_models_without_a_shipped_encoding_get_an_estimate() -> None:
    counter = Counter(lookup("openai/davinci"))  # type: ignore[arg-type]  # r50k_base
    assert not counter.exact and counter.text("x" * 40) == 10


def test_ten_thousand_prompts_are_counted_exactly() -> None:
    counter = Counter(lookup("openai/gpt-4"))  # type: ignore[arg-type]
    total = sum(counter.text(f"Ticket number {i}: my invoice is wrong") for i in range(10_000))
    per_prompt = counter.text("Ticket number 7: my invoice is wrong")
    assert counter.exact and per_prompt == 9  # Ticket| number| |7|:| my| invoice| is| wrong
    assert total == 99_000  # cl100k splits numbers in runs of up to three digits: 9999 is 2


@pytest.mark.parametrize("suite_name", ["support-triage.yaml", "insert-docstrings.yaml"])
def test_dry_run_matches_the_servers_count_within_two_percent(
    openai: FakeOpenAI, tmp_path: Path, suite_name: str
) -> None:
    encoding = Counter(lookup("openai/gpt-4"))  # type: ignore[arg-type]  # installs cl100k
    import tiktoken

    cl100k = tiktoken.get_encoding("cl100k_base")
    openai.tokenizer = lambda text: len(cl100k.encode(text, disallowed_special=()))
    assert encoding.exact
    suite = load_suite(ROOT / "suites" / suite_name)
    estimates = {e.model: e for e in dry_run(suite)}
    settings = run_settings(tmp_path)
    frame = load_run(run_suite(suite, settings).run_dir)
    for model, rows in frame.groupby("model"):
        first_round = rows[rows["round"] == 0]
        counted = int(first_round["prompt_tokens"].sum())
        estimated = estimates[str(model)].prompt_tokens
        assert estimates[str(model)].requests == len(first_round)
        assert abs(estimated - counted) <= 0.02 * counted, (model, estimated, counted)


@pytest.mark.parametrize("max_tokens", [10, None])
def test_validation_and_the_estimate_draw_the_context_window_line_at_the_same_place(
    tmp_path: Path, max_tokens: int | None
) -> None:
    """One rule (`tokens.fits`): a prompt that fits exactly passes both; one token less
    of window is an overflow for both."""
    text = "lorem ipsum dolor " * 20
    prompt = Counter(lookup("openai/gpt-4")).body({"messages": [{"role": "user", "content": text}]})
    answer = max_tokens or 1
    for window, overflows in ((prompt + answer, False), (prompt + answer - 1, True)):
        params = f"params: {{max_tokens: {max_tokens}}}\n" if max_tokens else ""
        path = tmp_path / f"w{window}.yaml"
        path.write_text(
            f"models: [{{id: openai/gpt-4, context_window: {window}}}]\n{params}"
            f'prompt: [{{role: user, content: "{text}"}}]\ncases: [{{id: c}}]\n'
        )
        suite = load_suite(path)
        problems = check_suite(suite, environ={})
        estimate = dry_run(suite, run_settings(tmp_path))
        assert fits(prompt, max_tokens, window) is not overflows
        assert bool(estimate[0].overflows) is overflows, window
        assert any("context window" in str(p) for p in problems) is overflows, problems
