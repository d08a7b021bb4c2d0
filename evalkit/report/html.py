"""The HTML report: one self-contained file that opens offline, anywhere.

Model outputs are untrusted text, so the template is rendered with autoescape on and the
only markup let through unescaped is the charts' SVG, which matplotlib writes. The per-case
table is capped (cases where models disagree first, then failures) so a 100,000-row run
still gives a page a browser opens quickly; the rest is in results.parquet.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.analysis.compare import detectable_text
from evalkit.console import fmt, sequential_text
from evalkit.records.images import REF_PREFIX, image_urls, thumbnail_path
from evalkit.report import records
from evalkit.suite.images import content_text

if TYPE_CHECKING:
    from evalkit.analysis.compare import Flip
    from evalkit.report import RunReport

TEMPLATE = "report.html.j2"
MAX_CASES = 2000  # rows of the per-case table
MAX_FLIPS = 200  # regressions (and fixes) listed from a comparison
TEXT_BUDGET = 12_000_000  # characters of case text (outputs, prompts) before the table is cut
PREVIEW_CHARS = 400  # of an output shown at once; the rest behind <details>
INPUT_PREVIEW_CHARS = 160  # of a case's variables
FULL_CHARS = 8000  # longest text shown at all


@dataclass
class Text:
    """A possibly long text: a preview, and the rest (capped) to expand."""

    preview: str
    full: str | None = None  # set when the preview is shorter than the text
    length: int = 0
    cut: bool = False  # even `full` is shorter than the text

    @classmethod
    def of(cls, value: object, preview: int = PREVIEW_CHARS) -> Text | None:
        if not isinstance(value, str):
            return None
        if len(value) <= preview:
            return cls(value, None, len(value))
        return cls(value[:preview], value[:FULL_CHARS], len(value), len(value) > FULL_CHARS)

    @property
    def size(self) -> int:
        return len(self.preview) + len(self.full or "")


@dataclass
class Cell:
    """One model's (and variant's) answer to one case."""

    status: str  # pass, fail, error
    output: Text | None
    reasons: list[tuple[str, str]]
    error: str | None
    samples: int
    passed_samples: int
    finish_reason: str | None
    latency_s: float | None
    tool_calls: list[str] = field(default_factory=list)  # "name(arguments)" per call


@dataclass
class CaseRow:
    case_id: str
    vars: Text | None
    prompts: list[tuple[str, Text | None]]  # (variant, prompt)
    images: list[str] = field(default_factory=list)  # thumbnails as data: URIs
    cells: dict[str, Cell] = field(default_factory=dict)
    disagree: bool = False
    failed: bool = False


def template_text() -> str:
    """The Jinja template, read from the installed package."""
    return resources.files("evalkit.report").joinpath("templates", TEMPLATE).read_text("utf-8")


def render_html(report: RunReport) -> str:
    """The whole report as one HTML document."""
    from jinja2 import Environment, StrictUndefined
    from markupsafe import Markup

    from evalkit.report.charts import charts, check_rates

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True)
    env.filters.update(pct=_pct, usd=_usd, sec=_sec, num=_num, p=_p, f2=_f2)
    env.filters["detectable"] = detectable_text
    rows, omitted = case_rows(report)
    comparison = report.comparison
    return env.from_string(template_text()).render(
        r=report,
        manifest=report.manifest,
        counts=report.manifest.get("counts") or {},
        summary=_summary(report),
        pairs=report.models.pairs.to_dict("records"),
        frontier=report.models.frontier,
        errors=_errors(report),
        charts={title: Markup(svg) for title, svg in charts(report).items()},
        checks=check_rates(report),
        labels=report.labels,
        cases=rows,
        omitted=omitted,
        total_cases=int(report.frame["case_id"].nunique()),
        comparison=comparison,
        gates=report.gates,
        gate=report.manifest.get("gate") or {},
        sequential=_sequential(report.manifest),
        regressions=[_flip(f) for f in comparison.regressions[:MAX_FLIPS]] if comparison else [],
        fixes=[_flip(f) for f in comparison.fixes[:MAX_FLIPS]] if comparison else [],
    )


def _sequential(manifest: dict[str, Any]) -> dict[str, str] | None:
    """A `--sequential` run's decision line, and its banner's tone."""
    record = manifest.get("sequential")
    if not record or not record.get("verdict"):
        return None
    verdict = record["verdict"]
    tone = {"regression": "bad", "inconclusive": "warn"}.get(verdict, "good")
    return {"text": sequential_text(record), "tone": tone}


def _summary(report: RunReport) -> list[dict[str, Any]]:
    counts = report.case_counts.to_dict("index")
    rows = []
    for row in records(report.models.summary):
        name = str(row["label"])
        count = counts[name]
        rows.append(
            {
                **row,
                "cases": int(count["cases"]),
                "passed": int(count["passed"]),
                "low": float(count["low"]),
                "high": float(count["high"]),
                "frontier": name in report.models.frontier,
            }
        )
    return rows


def _errors(report: RunReport) -> list[dict[str, Any]]:
    """Per label and error type: how many requests failed, with one message as an example."""
    frame = report.frame
    failed = frame[frame["error_type"].notna()]
    if failed.empty:
        return []
    grouped = failed.groupby(["model", "variant", "error_type"], sort=False, observed=True)
    table = grouped.agg(count=("error_type", "size"), example=("error", "first")).reset_index()
    return [
        {
            "label": report.key_labels.get((str(r["model"]), str(r["variant"])), str(r["model"])),
            "error_type": str(r["error_type"]),
            "count": int(r["count"]),
            "example": Text.of(r["example"]),
        }
        for r in records(table)
    ]


def case_rows(
    report: RunReport, limit: int = MAX_CASES, budget: int = TEXT_BUDGET
) -> tuple[list[CaseRow], int]:
    """The per-case table, disagreements first, then failures; and how many were left out."""
    outcomes = report.outcomes.reset_index()
    flags = outcomes.groupby("case_id", sort=False, observed=True)["passed"].agg(["min", "max"])
    all_pass = {str(k): bool(v) for k, v in flags["min"].items()}
    any_pass = {str(k): bool(v) for k, v in flags["max"].items()}
    rank = (flags["min"] == flags["max"]).astype(int) + flags["min"].astype(int)
    order = [str(c) for c in rank.sort_values(kind="stable").index]
    chosen = order[:limit]
    frame = report.frame
    kept = frame[frame["selected"].fillna(True).astype(bool) & frame["case_id"].isin(chosen)]
    by_case: dict[str, list[dict[str, Any]]] = {case: [] for case in chosen}
    for record in records(kept):
        by_case[str(record["case_id"])].append(record)
    rows: list[CaseRow] = []
    used = 0
    for case in chosen:
        row = _case_row(report, case, by_case[case])
        row.disagree = all_pass[case] != any_pass[case]
        row.failed = not any_pass[case]
        used += _size(row)
        if rows and used > budget:
            break
        rows.append(row)
    return rows, len(order) - len(rows)


def _case_row(report: RunReport, case: str, samples: list[dict[str, Any]]) -> CaseRow:
    first = samples[0] if samples else {}
    prompts: dict[str, Text | None] = {}
    images: dict[str, None] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in samples:
        variant = str(record["variant"])
        if variant not in prompts:
            prompts[variant] = Text.of(_prompt(record["prompt"]))
            images.update(dict.fromkeys(thumbnails(report.run_dir, record["prompt"])))
        name = report.key_labels.get((str(record["model"]), str(record["variant"])))
        if name is not None:
            groups.setdefault(name, []).append(record)
    variables = Text.of(_pretty(first.get("vars")), INPUT_PREVIEW_CHARS)
    row = CaseRow(case, variables, list(prompts.items()), list(images))
    for name, cell_samples in groups.items():
        row.cells[name] = _cell(cell_samples)
    return row


def _cell(samples: list[dict[str, Any]]) -> Cell:
    passed = [bool(_value(s["passed"])) for s in samples]
    ok = sum(passed) / len(passed) >= 0.5  # compare.case_outcomes' rule
    shown = samples[0] if ok else samples[passed.index(False)]  # show why it failed
    error = _value(shown["error"])
    reasons = _reasons(_value(shown["check_reasons"]))
    status = "pass" if ok else "error" if error is not None else "fail"
    return Cell(
        status=status,
        output=Text.of(_value(shown["output"])),
        reasons=reasons,
        error=f"{_value(shown['error_type'])}: {error}" if error is not None else None,
        samples=len(samples),
        passed_samples=sum(passed),
        finish_reason=_value(shown["finish_reason"]),
        latency_s=_value(shown["latency_s"]),
        tool_calls=_calls(_value(shown.get("tool_calls"))),
    )


def _calls(text: Any) -> list[str]:
    """Tool calls as `name(arguments)`, for the cell of a model that called a tool."""
    if not text:
        return []
    try:
        calls = json.loads(text)
    except ValueError:
        return []
    return [f"{c.get('name')}({c.get('arguments')})" for c in calls if isinstance(c, dict)]


def _size(row: CaseRow) -> int:
    texts = [row.vars, *(p for _, p in row.prompts)]
    texts += [c.output for c in row.cells.values()]
    size = sum(t.size for t in texts if t is not None) + sum(map(len, row.images))
    return size + sum(len(r) for c in row.cells.values() for _, r in c.reasons)


def _flip(flip: Flip) -> dict[str, Any]:
    from evalkit.report import label

    return {
        "case_id": flip.case_id,
        "label": label(flip.model, flip.variant),
        "must_pass": flip.must_pass,
        "reasons": _reasons(flip.reasons),
        "base_output": Text.of(flip.base_output),
        "new_output": Text.of(flip.new_output),
    }


def _reasons(text: object) -> list[tuple[str, str]]:
    """`check_reasons` JSON as (check, reason) pairs; a plain error message as one pair."""
    if not isinstance(text, str) or not text:
        return []
    try:
        parsed = json.loads(text)
    except ValueError:
        return [("error", text)]
    if isinstance(parsed, dict):
        return [(str(k), str(v)) for k, v in parsed.items()]
    return [("error", text)]


def _prompt(value: object) -> str | None:
    """Chat messages as `role: content` lines; a completion prompt as it is."""
    if not isinstance(value, str):
        return None
    try:
        messages = json.loads(value)
    except ValueError:
        return value
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return "\n".join(f"{m.get('role')}: {content_text(m.get('content'))}" for m in messages)
    return value


def thumbnails(run_dir: Path, prompt: object) -> list[str]:
    """The thumbnails (data: URIs) of the pictures a recorded prompt sent, in order; a
    picture whose thumbnail is missing is left out."""
    if not isinstance(prompt, str) or REF_PREFIX not in prompt:
        return []
    try:
        messages = json.loads(prompt)
    except ValueError:
        return []
    found = []
    for url in image_urls(messages):
        path = thumbnail_path(run_dir, url)
        if path is not None and path.is_file():
            found.append(f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}")
    return found


def _pretty(value: object) -> str | None:
    """A case's variables (JSON) as `name: value` lines."""
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if not isinstance(parsed, dict):
        return value
    return "\n".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in parsed.items()
    )


def _value(value: Any) -> Any:
    """None for pandas' missing values (NA, NaN, NaT), the value otherwise."""
    import pandas as pd

    return (
        None if value is None or (not isinstance(value, str | list) and pd.isna(value)) else value
    )


def _pct(value: object, digits: int = 0) -> str:
    return fmt(value, f"{{:.{digits}%}}")


def _usd(value: object) -> str:
    number = float(value) if isinstance(value, int | float) else float("nan")
    if number != number:
        return "-"
    return f"${number:.4f}" if abs(number) < 100 else f"${number:,.2f}"


def _sec(value: object) -> str:
    return fmt(value, "{:.2f}s")


def _num(value: object) -> str:
    return fmt(value, "{:,.0f}")


def _f2(value: object) -> str:
    return fmt(value, "{:.2f}")


def _p(value: object) -> str:
    return fmt(value, "{:.3g}")
