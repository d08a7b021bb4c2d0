"""Endpoints in the wild: extra headers (secrets only from the environment) and query
parameters, as Azure OpenAI (`api-key`, `api-version`) and OpenRouter (`HTTP-Referer`) take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import ConfigError, SuiteError, load_run, load_suite, run_suite
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

Write = Callable[[str, str], Path]
SECRET = "azure-secret-0123456789abcdef"


def _suite(url: str, headers: str, query: str = "{api-version: 2024-10-21}") -> str:
    return (
        "endpoints:\n"
        f"  azure: {{base_url: '{url}', kind: chat, headers: {headers}, query: {query}}}\n"
        "models: [azure/gpt-4o]\n"
        'prompt: "Question {{ i }}"\n'
        "params: {max_tokens: 8}\n"
        "cases:\n  - {id: a, vars: {i: 1}}\n  - {id: b, vars: {i: 2}}\n"
    )


HEADERS = "{api-key: {env: AZURE_OPENAI_KEY}, X-Title: evalkit tests}"


def test_headers_and_query_reach_the_server_and_no_secret_is_written(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_KEY", SECRET)
    path = write("s.yaml", _suite(openai.url, HEADERS))
    result = run_suite(load_suite(path), run_settings(tmp_path))
    assert result.status == "complete" and result.errors == 0
    requests = [r for r in openai.requests if r.path.endswith("/chat/completions")]
    assert len(requests) == 2
    for request in requests:
        assert request.query == {"api-version": "2024-10-21"}
        assert request.headers["api-key"] == SECRET
        assert request.headers["x-title"] == "evalkit tests"
        assert "authorization" not in request.headers  # no api_key_env: no Bearer key
    written = "".join(
        p.read_text(encoding="utf-8") for p in result.run_dir.iterdir() if p.suffix != ".parquet"
    )
    assert SECRET not in written
    assert '"AZURE_OPENAI_KEY"' in (result.run_dir / "manifest.json").read_text()
    assert load_run(result.run_dir)["error_type"].isna().all()


def test_a_header_secret_a_server_echoes_is_scrubbed(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_KEY", SECRET)
    echo = {"status": 400, "message": f"bad key {SECRET} for this deployment"}
    openai.script([echo, echo])
    path = write("s.yaml", _suite(openai.url, HEADERS))
    result = run_suite(load_suite(path), run_settings(tmp_path, max_error_rate=1.0))
    frame = load_run(result.run_dir)
    assert frame["error"].notna().all()
    assert not frame["error"].str.contains(SECRET).any()
    assert SECRET not in (result.run_dir / "journal.jsonl").read_text(encoding="utf-8")


def test_a_credential_written_in_the_suite_is_refused_without_echoing_it(
    openai: FakeOpenAI, write: Write
) -> None:
    path = write("s.yaml", _suite(openai.url, f"{{api-key: {SECRET}}}"))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    [problem] = error.value.problems
    assert problem.line == 2 and "{env: VARIABLE}" in problem.what
    assert SECRET not in str(error.value)


@pytest.mark.parametrize("name", ["api-key", "sig", "access_token"])
def test_a_query_parameter_that_looks_like_a_credential_is_refused(
    openai: FakeOpenAI, write: Write, name: str
) -> None:
    path = write("s.yaml", _suite(openai.url, "{X-Title: t}", f"{{{name}: x}}"))
    with pytest.raises(SuiteError, match="looks like a credential"):
        load_suite(path)


def test_a_header_variable_that_is_not_set_fails_before_anything_is_sent(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    path = write("s.yaml", _suite(openai.url, HEADERS))
    with pytest.raises(ConfigError, match="AZURE_OPENAI_KEY, which is not set"):
        run_suite(load_suite(path), run_settings(tmp_path))
    assert openai.count() == 0


def test_the_query_is_part_of_the_request_key(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another api-version is another request: the cache does not answer it."""
    monkeypatch.setenv("AZURE_OPENAI_KEY", SECRET)
    settings = run_settings(tmp_path, cache=True, cache_dir=tmp_path / "cache")
    run_suite(load_suite(write("a.yaml", _suite(openai.url, HEADERS))), settings)
    assert openai.count() == 2
    newer = _suite(openai.url, HEADERS, "{api-version: 2025-04-01}")
    run_suite(load_suite(write("b.yaml", newer)), settings)
    assert openai.count() == 4
    run_suite(load_suite(write("c.yaml", newer)), settings)
    assert openai.count() == 4  # the same version again: answered from the cache
