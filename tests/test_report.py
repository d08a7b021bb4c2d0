"""Reports of real runs against the loopback fake server: HTML, Markdown, JUnit, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import InputError, load_run, load_suite, run_suite
from evalkit.analysis.compare import compare_runs
from evalkit.report import write_reports
from evalkit.report.html import case_rows, template_text
from evalkit.report.markdown import cell
from fake_openai import FakeOpenAI
from tests.conftest import TEST_KEY, run_settings

Write = Callable[[str, str], Path]

# refund: every model passes; long: gpt-3.5-turbo (max_tokens 2) is cut off, so the models
# disagree; wrong: every model fails. The table must put long first, then wrong, then refund.
SUITE = """
name: triage
models:
  - openai/gpt-4
  - {id: openai/gpt-3.5-turbo, params: {max_tokens: 2}}
params: {temperature: 0, max_tokens: 16}
variants:
  terse: [{role: user, content: "Ticket: {{ ticket }}\\nANSWER: {{ queue }}"}]
  plain: "Ticket: {{ ticket }}\\nANSWER: {{ queue }}"
checks: [{finish_reason: stop}]
cases:
  - id: refund
    vars: {ticket: money back, queue: billing}
    expect:
      - equals: billing
      - {judge: {model: openai/gpt-4o-mini, rubric: routes to billing}, required: false}
  - {id: long, vars: {ticket: slow app, queue: the technical queue}, expect: [{contains: technical}]}
  - {id: wrong, vars: {ticket: cannot log in, queue: account}, expect: [{equals: billing}]}
"""
LABELS = [
    "openai/gpt-4 [terse]",
    "openai/gpt-4 [plain]",
    "openai/gpt-3.5-turbo [terse]",
    "openai/gpt-3.5-turbo [plain]",
]
EXTERNAL = re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def _run(write: Write, tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    settings = run_settings(tmp_path)
    return run_suite(load_suite(write(name, text)), settings).run_dir


@pytest.fixture
def run_dir(openai: FakeOpenAI, write: Write, tmp_path: Path) -> Path:
    return _run(write, tmp_path, SUITE)


def test_writes_the_three_reports_into_the_run_directory(run_dir: Path) -> None:
    paths = write_reports(run_dir)
    assert paths == [run_dir / "report.html", run_dir / "report.md", run_dir / "junit.xml"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_out_dir_and_a_subset_of_formats(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "reports"
    paths = write_reports(run_dir, out, formats=["md"])
    assert paths == [out / "report.md"]
    assert not (run_dir / "report.md").exists() and not (out / "report.html").exists()


def test_html_shows_every_model_case_and_chart_inline(run_dir: Path) -> None:
    (path,) = write_reports(run_dir, formats=["html"])
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "triage" in html
    for name in LABELS:
        assert f"<th>{name}</th>" in html  # a column in the per-case table
    for case in ("refund", "long", "wrong"):
        assert f'data-case="{case}"' in html
    assert html.count("<svg") >= 5  # pass rate, cost/quality, latency, finish reasons, checks
    assert "<?xml" not in html and "<img" not in html
    assert "Time to first token" not in html  # no streamed request, so no TTFT chart
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # several SVGs on one page: no id collides
    assert "Pairwise differences" in html and "Cost–quality frontier" in html
    assert "routes to billing" not in html  # the rubric is not output; the judge's reason is
    assert "could not read a verdict" in html


def test_html_has_no_url_at_all(run_dir: Path) -> None:
    (path,) = write_reports(run_dir, formats=["html"])
    html = path.read_text()
    assert not EXTERNAL.findall(html)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html and "url(http" not in html
    assert "<script src" not in html


def test_html_filters_work_without_a_server(run_dir: Path) -> None:
    html = write_reports(run_dir, formats=["html"])[0].read_text()
    assert 'id="only-failures"' in html and 'id="only-disagreements"' in html
    assert 'type="search"' in html
    script = html[html.index("<script>") : html.index("</script>")]
    assert "addEventListener" in script and "data-disagree" in script


def test_disagreements_come_first_then_failures(run_dir: Path) -> None:
    html = write_reports(run_dir, formats=["html"])[0].read_text()
    order = re.findall(r'<tr data-case="([^"]+)"', html)
    assert order == ["long", "wrong", "refund"]
    rows = dict(re.findall(r'<tr data-case="([^"]+)" class="(\w+)"', html))
    assert rows == {"long": "disagree", "wrong": "failed", "refund": "passed"}
    # the failed check is highlighted with its reason
    assert "expected &#39;billing&#39;, got &#39;account&#39;" in html
    assert "finish_reason</b>: " in html


def test_the_template_ships_with_the_package() -> None:
    text = template_text()
    assert text.startswith("<!DOCTYPE html>") and "{% for row in cases %}" in text


def test_hostile_model_output_is_escaped(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    suite = """
    name: hostile
    models: [openai/gpt-4]
    prompt: [{role: user, content: "ANSWER: {{ answer }}"}]
    cases:
      - {id: "<b>case</b>", vars: {answer: "<img src='https://evil.example/x.png'><script>alert(1)</script>"}, expect: [{equals: "no"}]}
    """
    run = _run(write, tmp_path, suite, "h.yaml")
    html, md, xml = (p.read_text() for p in write_reports(run))
    assert not EXTERNAL.findall(html)
    assert "<img" not in html and "<script>alert" not in html and "<b>case</b>" not in html
    assert "&lt;img src=&#39;https://evil.example/x.png&#39;&gt;" in html
    assert "<img" not in md
    ET.fromstring(xml)  # still well-formed


def test_markdown_summary(run_dir: Path) -> None:
    md = write_reports(run_dir, formats=["md"])[0].read_text()
    assert md.startswith("## evalkit: triage")
    for name in LABELS:
        assert cell(name) in md
    # gpt-4 passes refund and long, gpt-3.5 only refund: 2/3 and 1/3 cases
    assert "| openai/gpt-4 \\[terse\\] | **66.7%** | 2/3" in md
    assert "| openai/gpt-3.5-turbo \\[terse\\]" in md and "| **33.3%** | 1/3" in md
    assert "No significant difference" in md  # 3 cases cannot show one
    assert "12 samples · 3 cases" in md
    assert "Verdict" not in md  # no comparison given
    assert len(md) < 10_000


def test_junit_counts(run_dir: Path) -> None:
    xml = write_reports(run_dir, formats=["junit"])[0].read_text()
    root = ET.fromstring(xml)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "triage.openai/gpt-4.terse",
        "triage.openai/gpt-4.plain",
        "triage.openai/gpt-3.5-turbo.terse",
        "triage.openai/gpt-3.5-turbo.plain",
    ]
    cases = root.iter("testcase")
    assert sum(1 for _ in cases) == 12 and root.get("tests") == "12"
    # gpt-4 fails `wrong`; gpt-3.5 fails `wrong` and `long`, in both variants
    assert root.get("failures") == "6" and root.get("errors") == "0"
    assert [s.get("failures") for s in suites] == ["1", "1", "2", "2"]
    gpt4 = suites[0]
    wrong = gpt4.find("testcase[@name='wrong']")
    assert wrong is not None and wrong.get("classname") == "triage.openai/gpt-4.terse"
    failure = wrong.find("failure")
    assert failure is not None
    assert failure.get("message") == "equals: expected 'billing', got 'account'"
    assert failure.text is not None and "output:\naccount" in failure.text
    refund = gpt4.find("testcase[@name='refund']")
    assert refund is not None and refund.find("failure") is None
    assert float(refund.get("time", "0")) > 0  # the request's latency


# compare.compare_runs calls DataFrame.join(lsuffix=, rsuffix=), deprecated in pandas 3
@pytest.mark.filterwarnings("ignore:The 'lsuffix' and 'rsuffix' keywords")
def test_comparison_is_shown_with_both_outputs(
    openai: FakeOpenAI, write: Write, tmp_path: Path, run_dir: Path
) -> None:
    worse = SUITE.replace("queue: billing}", "queue: refunds}")  # refund now fails everywhere
    new_dir = _run(write, tmp_path, worse, "s.yaml")
    comparison = compare_runs(load_run(run_dir), load_run(new_dir), fail_on="any")
    assert len(comparison.regressions) == 4
    html, md, _ = (p.read_text() for p in write_reports(new_dir, comparison=comparison))
    assert "Verdict: regression" in html
    assert "4 case(s) went from pass to fail" in html
    flips = html[html.index('id="comparison"') : html.index('id="summary"')]
    assert flips.count('<div class="flip">') == 4
    assert "billing" in flips and "refunds" in flips  # baseline and new outputs side by side
    assert "### ❌ Verdict: regression" in md
    assert "### Regressions (4)" in md
    assert md.count("| refund |") == 4


def test_a_model_that_failed_every_request_still_renders(
    openai: FakeOpenAI, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai.api_key = TEST_KEY
    monkeypatch.setenv("BROKEN_KEY", "sk-wrong")
    suite = f"""
    name: broken
    endpoints:
      lab: {{base_url: "{openai.url}", api_key_env: BROKEN_KEY, kind: chat, label: lab}}
    models: [openai/gpt-4, lab/llama]
    prompt: [{{role: user, content: "ANSWER: {{{{ a }}}}"}}]
    cases: [{{id: one, vars: {{a: x}}, expect: [{{equals: x}}]}}, {{id: two, vars: {{a: y}}, expect: [{{equals: y}}]}}]
    """
    run = _run(write, tmp_path, suite, "b.yaml")
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    html, md, xml = (p.read_text() for p in write_reports(run))
    assert "lab/llama" in html and "auth" in html and "Incorrect API key" in html
    assert "This run is <b>failed</b>" in html
    assert re.search(r"\| lab/llama[^|]* \| \*\*0\.0%\*\* \| 0/\d .*\| 100\.0% \|", md)
    root = ET.fromstring(xml)
    lab = next(s for s in root.iter("testsuite") if s.get("name") == "broken.lab/llama")
    assert int(lab.get("errors", "0")) >= 1 and lab.get("errors") == lab.get("tests")
    error = lab.find("testcase/error")
    assert error is not None and error.get("type") == "auth"
    assert TEST_KEY not in html + md + xml


def test_the_per_case_table_is_capped_with_a_note(run_dir: Path) -> None:
    from evalkit.report import load_report

    report = load_report(run_dir)
    rows, omitted = case_rows(report, limit=2)
    assert [r.case_id for r in rows] == ["long", "wrong"] and omitted == 1
    rows, omitted = case_rows(report, budget=1)  # the text budget cuts too, keeping one row
    assert len(rows) == 1 and omitted == 2


def test_long_outputs_are_truncated_behind_details(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(3000))
    suite = f"""
    name: long
    models: [openai/gpt-4o-mini]
    params: {{max_tokens: 4000}}
    prompt: "ANSWER: {words}"
    cases: [{{id: a, vars: {{}}}}]
    """
    html = write_reports(_run(write, tmp_path, suite, "l.yaml"), formats=["html"])[0].read_text()
    assert 'class="long"' in html and f"show all {len(words):,} characters" in html
    assert "w2999" not in html.split("<details")[0]  # not shown at once
    assert "cut at 8,000 characters; the full text is in results.parquet" in html


def test_missing_run_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such run directory"):
        write_reports(tmp_path / "nope")


def test_a_run_without_a_journal_has_no_results_yet(run_dir: Path, tmp_path: Path) -> None:
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(run_dir / "manifest.json", incomplete / "manifest.json")
    with pytest.raises(InputError, match="run has no results yet"):
        write_reports(incomplete)
    assert not (incomplete / "report.html").exists()


def test_a_run_with_zero_rows_has_no_results_yet(run_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["status"] = "running"
    (empty / "manifest.json").write_text(json.dumps(manifest))
    (empty / "journal.jsonl").write_text('{"kind": "retire", "slots": []}\n{"torn": ')
    with pytest.raises(InputError, match=r"run has no results yet \(0 rows\)"):
        write_reports(empty)


def test_a_newer_schema_is_refused(run_dir: Path) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="newer evalkit"):
        write_reports(run_dir)


def test_an_unknown_format_is_refused_before_anything_is_written(run_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown report format 'pdf': use html, md or junit"):
        write_reports(run_dir, formats=["html", "pdf"])
    assert not (run_dir / "report.html").exists()


def test_markdown_cells_cannot_break_the_table() -> None:
    text = cell("a | b\n<script>`x` @alice *y*", limit=100)
    assert "|" not in text.replace("\\|", "") and "\n" not in text
    assert "<" not in text and "@alice" not in text and "\\*y\\*" in text
    assert cell("x" * 500, limit=10) == "x" * 9 + "…"


def test_samples_are_aggregated_per_case(openai: FakeOpenAI, write: Write, tmp_path: Path) -> None:
    # n=3 at temperature 1: the fake server answers "ok #0", "ok #1", "ok #2"
    suite = """
    name: sampled
    models: [openai/gpt-3.5-turbo-instruct]
    params: {temperature: 1, n: 3, max_tokens: 8}
    prompt: "ANSWER: ok"
    cases:
      - {id: one-of-three, vars: {}, expect: [{contains: "#1"}]}
      - {id: two-of-three, vars: {}, expect: [{not: {contains: "#0"}}]}
    """
    run = _run(write, tmp_path, suite, "n.yaml")
    html, _, xml = (p.read_text() for p in write_reports(run))
    assert "1/3 samples passed" in html and "2/3 samples passed" in html
    root = ET.fromstring(xml)
    assert root.get("tests") == "2" and root.get("failures") == "1"  # a case passes at half
    failure = root.find(".//testcase[@name='one-of-three']/failure")
    assert failure is not None and failure.text is not None
    assert failure.text.startswith("1 of 3 sample(s) passed")


def test_matplotlib_is_imported_only_when_a_report_is_written(run_dir: Path) -> None:
    code = (
        "import sys, evalkit, evalkit.report\n"
        "assert 'matplotlib' not in sys.modules and 'pandas' not in sys.modules\n"
        "evalkit.report.write_reports(sys.argv[1], formats=['html'])\n"
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / "report.html").exists()


def test_no_format_is_refused(run_dir: Path) -> None:
    with pytest.raises(InputError, match="no report format given"):
        write_reports(run_dir, formats=[])
