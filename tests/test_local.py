"""The embedded local model: clear errors without the extra, real answers with it.

Tests that need llama-cpp-python are marked `local` (skip them with `-m "not local"`); on CI
(`CI` set) a missing extra is a failure, not a skip, since .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from evalkit import ConfigError, RunSettings, load_run, load_suite, run_suite
from evalkit.providers.local import gguf_path

ROOT = Path(__file__).parent.parent
Write = Callable[[str, str], Path]


def _llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


needs_llama = pytest.mark.skipif(
    not _llama_available() and not os.environ.get("CI"),
    reason="llama-cpp-python is not installed (pip install -e '.[local]')",
)


def test_without_the_extra_the_error_says_how_to_install(write: Write, tmp_path: Path) -> None:
    write("s.yaml", "models: [local/gemma-3-270m]\nprompt: 'The sky is'\ncases: [{vars: {}}]\n")
    script = (
        "import sys\n"
        "sys.modules['llama_cpp'] = None  # as if the extra were not installed\n"
        "from evalkit.cli import main\n"
        "sys.exit(main(['run', 's.yaml', '--out', 'runs']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "pip install -e '.[local]'" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_gguf_path_that_does_not_exist_or_is_not_gguf(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no GGUF file at"):
        gguf_path("mine", str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ConfigError, match="is not a GGUF model file"):
        gguf_path("mine", str(fake))
    with pytest.raises(ConfigError, match="give `path:` to a GGUF file"):
        gguf_path("llama-70b", None)


def test_insert_mode_on_the_local_model_is_refused_up_front(write: Write) -> None:
    from evalkit import check_suite

    path = write(
        "s.yaml",
        "models: [local/gemma-3-270m]\nprompt: 'def f():'\nsuffix: 'x'\ncases: [{vars: {}}]\n",
    )
    (problem,) = check_suite(load_suite(path))
    assert "does not support insert mode (suffix)" in problem.what


@pytest.mark.local
@needs_llama
def test_local_model_answers_like_an_api_model(write: Write, tmp_path: Path) -> None:
    long_prompt = "word " * 3000
    path = write(
        "s.yaml",
        f"""
models: [local/gemma-3-270m]
params: {{temperature: 0, max_tokens: 6, stop: ["\\n"]}}
prompt: "{{{{ stem }}}}"
cases:
  - {{id: capital, vars: {{stem: "The capital of France is"}}, expect: [{{icontains: paris}}]}}
  - {{id: chat, messages: [{{role: system, content: "Answer in one word."}}, {{role: user, content: "What color is the sky?"}}]}}
  - {{id: logprobs, vars: {{stem: "One, two, three,"}}, params: {{logprobs: 2}}}}
  - {{id: streamed, vars: {{stem: "Monday, Tuesday,"}}, params: {{stream: true}}}}
  - {{id: too-long, vars: {{stem: "{long_prompt}"}}}}
""",
    )
    settings = RunSettings(
        out=tmp_path / "runs", progress=False, allow_overflow=True, max_error_rate=1
    )
    frame = load_run(run_suite(load_suite(path), settings).run_dir).set_index("case_id")
    for case in ("capital", "chat", "logprobs", "streamed"):
        row = frame.loc[case]
        assert pd.isna(row["error_type"]), row["error"]
        assert row["finish_reason"] in ("stop", "length")
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["latency_s"] > 0
    assert (
        frame.loc["chat", "endpoint"] == "chat"
        and frame.loc["capital", "endpoint"] == "completions"
    )
    assert json.loads(frame.loc["logprobs", "logprobs"])  # logits_all was turned on for it
    assert frame.loc["streamed", "ttft_s"] > 0
    assert frame.loc["too-long", "error_type"] == "context_length"  # an error row, not a crash


@pytest.mark.local
@needs_llama
def test_the_quickstart_end_to_end(tmp_path: Path) -> None:
    """The README's first command: the quickstart runs, its gate holds (exit 0), and it
    writes its reports, which show the gate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["EVALKIT_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit",
            "run",
            str(ROOT / "suites" / "quickstart.yaml"),
            "--report",
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    # the suite's gate decides: few-shot passes enough and beats zero-shot, though samples fail
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate held" in result.stdout and "sample(s) failed their checks" in result.stdout
    run_dir = Path(
        next(x for x in result.stdout.splitlines() if x.startswith("run directory: ")).split(
            ": ", 1
        )[1]
    )
    frame = load_run(run_dir)
    assert set(frame["variant"]) == {"zero-shot", "few-shot"} and len(frame) == 60
    assert frame["error_type"].isna().all()
    assert (frame["output"].str.len() > 0).mean() > 0.9  # real text, not empty answers
    assert frame["completion_tokens"].gt(0).all() and frame["latency_s"].gt(0).all()
    html = (run_dir / "report.html").read_text()
    assert "zero-shot" in html and "few-shot" in html and "capital-france" in html
    assert "Gate: held" in (run_dir / "report.md").read_text() and "Gate: held" in html
    assert (run_dir / "junit.xml").exists()
