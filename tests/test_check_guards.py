"""What a check cannot do: fetch a schema, end the process, hang the run, or lie about a score.

Hostile checks run in a real `evalkit run` subprocess against the loopback fake server, so a
regression shows as a wrong exit code or a hang, which the subprocess timeout turns into a
failure rather than a stuck test session.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evalkit import SuiteError, load_run, load_suite, run_suite
from evalkit.scoring.evaluate import evaluate
from evalkit.suite.checkspec import Check
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_settings

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


_settings = functools.partial(run_settings, cache=False)


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


# ---------------------------------------------------------------- 4. a check cannot end the run


def test_a_python_check_cannot_end_the_process(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "grading.py",
        """
        import argparse, sys

        def exits(output, record):
            sys.exit(0)

        def interrupts(output, record):
            raise KeyboardInterrupt

        def closes(output, record):
            raise GeneratorExit

        def parses(output, record):
            argparse.ArgumentParser().parse_args(["--no-such-option"])
        """,
    )
    write("leaves.py", "import sys\nsys.exit(0)\n")
    checks = ["grading:exits", "grading:interrupts", "grading:closes", "grading:parses"]
    write(
        "s.yaml",
        HEAD
        + "checks:\n"
        + "".join(f"  - python: {ref}\n" for ref in [*checks, "leaves:f"])
        + _cases("one", "two"),
    )
    out, err = _finish(_start(tmp_path, openai))
    assert "2 sample(s) failed their checks" in out, err
    assert _manifest(tmp_path)["status"] == "complete"
    for reasons in _reasons(tmp_path):
        assert reasons["python"] == "python grading:exits: SystemExit: 0"
        assert reasons["python#2"] == "python grading:interrupts: KeyboardInterrupt"
        assert reasons["python#3"] == "python grading:closes: GeneratorExit"
        assert reasons["python#4"] == "python grading:parses: SystemExit: 2"
        assert reasons["python#5"] == "python leaves:f: SystemExit: 0"


# ---------------------------------------------------------------- 5. what a python check returns


def test_python_check_answers_are_read_by_a_strict_contract(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "grading.py",
        """
        import numpy

        def nan(output, record): return float("nan")
        def inf(output, record): return float("inf")
        def nan_score(output, record): return {"pass": True, "score": float("nan")}
        def big_score(output, record): return {"pass": True, "score": 5}
        def text_pass(output, record): return {"pass": "no"}
        def float_pair(output, record): return (0.3, "why")
        def text(output, record): return "0.9"
        def nothing(output, record): return None
        def numpy_bool(output, record): return numpy.True_
        def numpy_float(output, record): return numpy.float32(0.25)
        def dict_ok(output, record): return {"pass": False, "score": 0.4, "reason": 7}
        """,
    )
    names = [
        "nan",
        "inf",
        "nan_score",
        "big_score",
        "text_pass",
        "float_pair",
        "text",
        "nothing",
        "numpy_bool",
        "numpy_float",
        "dict_ok",
    ]
    checks = "".join(f"  - {{python: 'grading:{n}', name: {n}}}\n" for n in names)
    suite = load_suite(write("s.yaml", HEAD + "checks:\n" + checks + _cases("x")))
    result = run_suite(suite, _settings(tmp_path))
    row = load_run(result.run_dir).iloc[0]
    got = {n: (bool(row[f"check.{n}"]), float(row[f"check.{n}.score"])) for n in names}
    assert got == {
        "nan": (False, 0.0),
        "inf": (False, 0.0),
        "nan_score": (False, 0.0),
        "big_score": (True, 1.0),  # clamped to 0..1, like a bare number
        "text_pass": (False, 0.0),
        "float_pair": (False, 0.0),
        "text": (False, 0.0),
        "nothing": (False, 0.0),
        "numpy_bool": (True, 1.0),
        "numpy_float": (False, 0.25),
        "dict_ok": (False, 0.4),
    }
    reasons = json.loads(row["check_reasons"])
    assert (
        reasons["nan"] == "python grading:nan: ValueError: returned nan; expected a finite number"
    )
    assert (
        reasons["inf"] == "python grading:inf: ValueError: returned inf; expected a finite number"
    )
    assert "'pass' is str; expected a bool" in reasons["text_pass"]
    assert "returned (float, ...); the first must be a bool" in reasons["float_pair"]
    assert "returned NoneType; expected a bool" in reasons["nothing"]
    assert reasons["dict_ok"] == "7"
    assert 0.0 <= row["score"] <= 1.0 and not math.isnan(row["score"])


def test_a_python_module_is_loaded_once_per_run(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "grading.py",
        """
        from pathlib import Path

        with open(Path(__file__).with_name("loads.txt"), "a") as log:
            log.write("loaded\\n")

        def short(output, record): return len(output) < 10
        def lower(output, record): return output.islower()
        """,
    )
    checks = "checks: [{python: 'grading:short'}, {python: 'grading:lower'}]\n"
    suite = load_suite(write("s.yaml", HEAD + checks + _cases("a", "b", "c")))
    result = run_suite(suite, _settings(tmp_path))
    assert result.exit_code == 0
    assert (tmp_path / "loads.txt").read_text() == "loaded\n"
    run_suite(suite, _settings(tmp_path, out=tmp_path / "again"))
    assert (tmp_path / "loads.txt").read_text() == "loaded\n" * 2  # once per run, not per process


def test_a_module_that_fails_to_load_is_not_loaded_again(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "broken.py",
        """
        from pathlib import Path

        with open(Path(__file__).with_name("loads.txt"), "a") as log:
            log.write("loaded\\n")
        raise ValueError("no grader today")
        """,
    )
    checks = "checks: [{python: 'broken:a'}, {python: 'broken:b'}]\n"
    suite = load_suite(write("s.yaml", HEAD + checks + _cases("a", "b", "c")))
    result = run_suite(suite, _settings(tmp_path))
    assert result.exit_code == 1 and result.failed_samples == 3
    assert (tmp_path / "loads.txt").read_text() == "loaded\n"
    frame = load_run(result.run_dir)
    for reasons in frame["check_reasons"]:
        assert json.loads(reasons) == {
            "python": "python broken:a: ValueError: no grader today",
            "python#2": "python broken:b: ValueError: no grader today",
        }


# ---------------------------------------------------------------- 16. checks run off the loop


def test_checks_run_off_the_event_loop(openai: FakeOpenAI, tmp_path: Path, write: Write) -> None:
    write(
        "grading.py",
        """
        import threading

        def off_loop(output, record):
            return threading.current_thread() is not threading.main_thread()
        """,
    )
    checks = "checks: [{python: 'grading:off_loop'}]\n"
    result = run_suite(
        load_suite(write("s.yaml", HEAD + checks + _cases("a"))), _settings(tmp_path)
    )
    assert result.exit_code == 0, load_run(result.run_dir)["check_reasons"].tolist()


def test_a_slow_check_does_not_delay_other_answers(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "grading.py",
        "import time\n\ndef slow(output, record):\n    time.sleep(0.5)\n    return True\n",
    )
    checks = "checks: [{python: 'grading:slow'}]\n"
    suite = load_suite(write("s.yaml", HEAD + checks + _cases(*"abcdefgh")))
    result = run_suite(suite, _settings(tmp_path, concurrency=8))
    assert result.exit_code == 0
    # an answer read while the loop sat in someone's check would have waited for it
    assert load_run(result.run_dir)["latency_s"].max() < 0.5


def test_a_stuck_check_times_out_and_the_run_goes_on(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write("grading.py", "def spin(output, record):\n    while True:\n        pass\n")
    write(
        "s.yaml",
        HEAD
        + "checks:\n"
        + "  - {python: 'grading:spin', timeout_s: 0.5}\n"
        + "  - {regex: '^(a|aa)+$', timeout_s: 0.5}\n"
        + "  - {regex: '^(a+)+$', name: nested}\n"  # the classic: `regex` answers it at once
        + "  - {not: {python: 'grading:spin'}, timeout_s: 0.5, name: negated}\n"
        + _cases("a" * 60 + "!", "a" * 38 + "!"),
    )
    out, err = _finish(_start(tmp_path, openai))
    assert "2 sample(s) failed their checks" in out, err
    assert _manifest(tmp_path)["status"] == "complete"
    for reasons in _reasons(tmp_path):
        assert reasons["python"] == "timed out after 0.5 s"
        assert reasons["negated"] == "timed out after 0.5 s"  # a time-out never passes
        assert reasons["nested"] == "no match for /^(a+)+$/"
    assert _reasons(tmp_path)[0]["regex"] == "timed out after 0.5 s"


@pytest.mark.parametrize(
    ("check", "error"),
    [
        ("{contains: x, timeout_s: 1}", "timeout_s: only json_schema, python, regex, similarity"),
        ("{not: {equals: x}, timeout_s: 1}", "('equals' is always quick)"),
        ("{python: 'g:f', timeout_s: 0}", "checks[0].timeout_s: Input should be greater than 0"),
        (
            "{regex: a, timeout_s: 7200}",
            "checks[0].timeout_s: Input should be less than or equal to 3600",
        ),
    ],
)
def test_a_time_limit_is_checked_where_it_is_written(write: Write, check: str, error: str) -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(write("s.yaml", HEAD + f"checks: [{check}]\n" + _cases("x")))
    (problem,) = info.value.problems
    assert problem.line == 3 and error in f"{problem.where}: {problem.what}", problem


def test_a_python_loop_past_its_limit_is_stopped(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    write(
        "grading.py",
        """
        from pathlib import Path

        def spin(output, record):
            try:
                while True:
                    pass
            finally:
                Path(__file__).with_name(f"stopped-{record['case_id']}").touch()
        """,
    )
    checks = "checks: [{python: 'grading:spin', timeout_s: 0.3}]\n"
    suite = load_suite(write("s.yaml", HEAD + checks + _cases(*"abcdefgh")))
    result = run_suite(suite, _settings(tmp_path, concurrency=8))
    assert result.failed_samples == 8
    deadline = time.monotonic() + BOUND_S
    while len(list(tmp_path.glob("stopped-*"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(tmp_path.glob("stopped-*"))) == 8  # no thread is left spinning


def test_stuck_checks_past_the_cap_fail_at_once(
    openai: FakeOpenAI, tmp_path: Path, write: Write
) -> None:
    from evalkit.scoring.threads import MAX_ABANDONED, THREADS

    write("grading.py", "import time\n\ndef sleep(output, record):\n    time.sleep(3600)\n")
    checks = "checks: [{python: 'grading:sleep', timeout_s: 0.2}]\n"
    write("s.yaml", HEAD + checks + _cases(*(f"a{i}" for i in range(40))))
    out, err = _finish(_start(tmp_path, openai, "-j", "40"))
    assert "40 sample(s) failed their checks" in out, err
    reasons = [r["python"] for r in _reasons(tmp_path)]
    timed_out = reasons.count("timed out after 0.2 s")
    # each thread still running when the cap is reached may get stuck too, then none
    assert MAX_ABANDONED <= timed_out <= MAX_ABANDONED + THREADS
    assert all(r.startswith("not run: ") for r in reasons if r != "timed out after 0.2 s")
    assert any(r.endswith("checks are still running past their limit") for r in reasons)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stuck", ["python", "regex"])
def test_a_signal_stops_a_run_stuck_in_a_check(
    openai: FakeOpenAI, tmp_path: Path, write: Write, signum: signal.Signals, stuck: str
) -> None:
    write(
        "grading.py",
        """
        from pathlib import Path

        def spin(output, record):
            Path(__file__).with_name("started").touch()
            while True:
                pass
        """,
    )
    check = "{python: 'grading:spin'}" if stuck == "python" else "{regex: '^(a|aa)+$'}"
    write("s.yaml", HEAD + f"checks: [{check}]\n" + _cases("a" * 60 + "!"))
    process = _start(tmp_path, openai)  # the default time limit is far beyond this test
    deadline = time.monotonic() + BOUND_S
    started = (lambda: (tmp_path / "started").exists()) if stuck == "python" else openai.count
    while not started() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the check by now
    process.send_signal(signum)
    _, err = _finish(process, 30)
    assert process.returncode == 3, err
    assert "run interrupted: interrupted by a signal" in err
    assert _manifest(tmp_path)["status"] == "interrupted"


# ---------------------------------------------------------------- judge answers


def test_a_hostile_judge_answer_is_read_in_bounded_time() -> None:
    from evalkit.scoring.judge import parse_verdict

    for answer in ["VERDICT:" + " " * 50_000 + "maybe", "SCORE:" + " " * 50_000 + "high"]:
        started = time.monotonic()
        verdict = parse_verdict(answer)
        assert time.monotonic() - started < 5  # microseconds now; quadratic backtracking was ~30 s
        assert not verdict.passed and verdict.reason.startswith("could not read a verdict")
    assert parse_verdict("Looks fine.\nVERDICT: **PASS**").passed
    assert parse_verdict("SCORE: 7/10").score == 0.7


def test_a_malformed_moderation_answer_fails_the_check_even_negated() -> None:
    from evalkit.scoring.checks import negated
    from evalkit.scoring.moderation import parse_result

    negation = Check.model_validate({"not": "moderation"})
    for answer in ['{"flagged": true, "categories": ["hate"]}', '{"categories": "hate"}', "[]"]:
        verdict = parse_result(answer, None)
        assert not verdict.passed and "not a moderation result" in verdict.reason
        assert not negated(negation, verdict).passed
