"""What a check cannot do: fetch a schema, end the process, hang the run, or lie about a score.

Hostile checks run in a real `evalkit run` subprocess against the loopback fake server, so a
regression shows as a wrong exit code or a hang, which the subprocess timeout turns into a
failure rather than a stuck test session.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evalkit import RunSettings, SuiteError, load_run, load_suite
from evalkit.checks import evaluate
from evalkit.checkspec import Check
from tests.conftest import cli_env
from tests.fake_openai import FakeOpenAI

Write = Callable[[str, str], Path]
BOUND_S = 60  # far beyond what any of these runs needs: only a hang reaches it

HEAD = """
models: [openai/gpt-3.5-turbo]
prompt: [{role: user, content: "ANSWER: {{ a }}"}]
"""


def _cases(*answers: str) -> str:
    return "cases:\n" + "".join(
        f"  - {{id: c{i}, vars: {{a: {json.dumps(a)}}}}}\n" for i, a in enumerate(answers)
    )


def _settings(tmp_path: Path, **overrides: object) -> RunSettings:
    values: dict[str, object] = {"out": tmp_path / "runs", "progress": False, "cache": False}
    values.update(overrides)
    return RunSettings(**values)  # type: ignore[arg-type]


def _start(tmp_path: Path, openai: FakeOpenAI, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "evalkit", "run", "s.yaml", "--out", "runs", "--no-cache", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(openai.url),
    )


def _finish(process: subprocess.Popen[str], bound_s: float = BOUND_S) -> tuple[str, str]:
    try:
        return process.communicate(timeout=bound_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"evalkit was still running {bound_s} s later")


def _manifest(tmp_path: Path) -> dict[str, object]:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return json.loads((run_dir / "manifest.json").read_text())  # type: ignore[no-any-return]


def _reasons(tmp_path: Path) -> list[dict[str, str]]:
    (run_dir,) = (tmp_path / "runs").iterdir()
    frame = load_run(run_dir).sort_values("case_id")
    return [json.loads(r) if r else {} for r in frame["check_reasons"]]


# ---------------------------------------------------------------- 3. $ref stays offline


class _SchemaServer(http.server.ThreadingHTTPServer):
    """A loopback server that would hand out a schema, and remembers whether it was asked."""

    asked: list[str]


@pytest.fixture
def schema_server() -> Iterator[_SchemaServer]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert isinstance(self.server, _SchemaServer)
            self.server.asked.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _SchemaServer(("127.0.0.1", 0), Handler)
    server.asked = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _refs(server: _SchemaServer, tmp_path: Path) -> list[str]:
    on_disk = tmp_path / "schema.json"
    on_disk.write_text('{"type": "string"}')
    return [f"http://127.0.0.1:{server.server_port}/schema.json", on_disk.as_uri()]


@pytest.mark.parametrize(
    ("checks", "where"),
    [
        ("checks: [{json_schema: {$ref: 'REF'}}]", "json_schema"),
        ("checks: [{tool_call: {name: f, schema: {$ref: 'REF'}}}]", "tool_call: schema"),
        (
            "params: {tools: [{type: function, function: {name: f, parameters: {$ref: 'REF'}}}]}"
            "\nchecks: [tool_args_valid]",
            "parameters",
        ),
    ],
    ids=["json_schema", "tool_call.schema", "tool_args_valid"],
)
def test_a_schema_ref_to_the_network_or_a_file_is_a_located_problem(
    schema_server: _SchemaServer, tmp_path: Path, write: Write, checks: str, where: str
) -> None:
    for ref in _refs(schema_server, tmp_path):
        path = write("s.yaml", HEAD + checks.replace("REF", ref) + "\n" + _cases("x"))
        with pytest.raises(SuiteError) as info:
            load_suite(path)
        (problem,) = info.value.problems
        assert problem.line == 3
        assert f"{where}: $ref '{ref}' does not resolve within the schema" in problem.what
    assert schema_server.asked == []


def test_a_schema_that_skipped_validation_still_fetches_nothing(
    schema_server: _SchemaServer, tmp_path: Path
) -> None:
    for ref in _refs(schema_server, tmp_path):
        normalised = Check.model_validate({"kind": "json_schema", "arg": {"$ref": ref}})
        verdict = evaluate(normalised, '"x"', {})
        assert not verdict.passed and "does not resolve" in verdict.reason
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"$ref": ref}}}]
        record = {"params": {"tools": tools}, "tool_calls": [{"name": "f", "arguments": "{}"}]}
        verdict = evaluate(Check.model_validate("tool_args_valid"), "", record)
        assert not verdict.passed and "does not resolve" in verdict.reason
    assert schema_server.asked == []
    local = {
        "$defs": {"queue": {"enum": ["billing", "technical"]}},
        "properties": {"queue": {"$ref": "#/$defs/queue"}},
    }
    check = Check.model_validate({"json_schema": local})
    assert evaluate(check, '{"queue": "billing"}', {}).passed
    assert not evaluate(check, '{"queue": "sales"}', {}).passed


def test_json_nested_too_deeply_is_a_failed_check_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    calls = [{"name": "f", "arguments": deep}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for check, record in [
        ("is_json", {}),
        ({"json_schema": {"type": "array"}}, {}),
        ({"json_path": {"path": "$[0]", "equals": []}}, {}),
        ("tool_args_valid", {"tool_calls": calls, "params": {"tools": tools}}),
        ({"tool_call": "f"}, {"tool_calls": calls}),
    ]:
        verdict = evaluate(Check.model_validate(check), deep, record)
        assert not verdict.passed and "recursion" in verdict.reason, check
    nested = json.loads("[" * 900 + "]" * 900)  # parses, but is too deep to validate
    recursive = Check.model_validate({"json_schema": {"items": {"$ref": "#"}}})
    verdict = evaluate(recursive, json.dumps(nested), {})
    assert not verdict.passed and "nested too deeply" in verdict.reason
