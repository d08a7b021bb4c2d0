"""Reports of a run: one self-contained HTML file, a Markdown summary for CI, JUnit XML.

Every report is drawn from the same `RunReport`: the manifest, the DataFrame and the
model comparison, computed once. The writers (and matplotlib) are imported only when a
report is written, so importing evalkit stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from evalkit.errors import InputError, RunError
from evalkit.records.store import JOURNAL, RESULTS, read_manifest, write_atomically

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.compare import ModelComparison, RunComparison
    from evalkit.analysis.gates import GateOutcome

FILENAMES = {"html": "report.html", "md": "report.md", "junit": "junit.xml"}


@dataclass
class RunReport:
    """What every report shows, computed once per run."""

    run_dir: Path
    manifest: dict[str, Any]
    frame: pd.DataFrame
    models: ModelComparison
    comparison: RunComparison | None = None

    @property
    def suite(self) -> str:
        return str(self.manifest.get("suite", {}).get("name") or self.run_dir.name)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.run_dir.name)

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @cached_property
    def gates(self) -> list[GateOutcome] | None:
        """The run's gate outcomes, as its manifest recorded them; None without a gate."""
        from evalkit.analysis.gates import recorded_gates

        return recorded_gates(self.manifest)

    @property
    def gate_held(self) -> bool:
        return all(g.held for g in self.gates or [])

    @property
    def labels(self) -> list[str]:
        """Model (and variant) labels, in the summary's order."""
        return [str(label) for label in self.models.summary["label"]]

    @property
    def total_cost(self) -> float:
        """What the run cost, judge calls included."""
        return float(self.models.summary["cost_usd"].fillna(0).sum())

    @cached_property
    def label_keys(self) -> dict[str, tuple[str, str]]:
        """Label → (model, variant)."""
        rows = self.models.summary[["label", "model", "variant"]].itertuples(index=False)
        return {str(name): (str(model), str(variant)) for name, model, variant in rows}

    @cached_property
    def key_labels(self) -> dict[tuple[str, str], str]:
        """(model, variant) → label."""
        return {key: name for name, key in self.label_keys.items()}

    @cached_property
    def outcomes(self) -> pd.DataFrame:
        """One row per case × variant × model (see compare.case_outcomes)."""
        from evalkit.analysis.compare import case_outcomes

        return case_outcomes(self.frame)

    @cached_property
    def case_counts(self) -> pd.DataFrame:
        """Per label: cases, cases passed, and the Wilson interval of their ratio."""
        import pandas as pd

        from evalkit.analysis.stats import wilson

        passed = self.outcomes.groupby(["model", "variant"], sort=False, observed=True)["passed"]
        rows = []
        for name, key in self.label_keys.items():
            cases, good = (0, 0)
            if key in passed.groups:
                group = passed.get_group(key)
                cases, good = len(group), int(group.sum())
            low, high = wilson(good, cases)
            rows.append({"label": name, "cases": cases, "passed": good, "low": low, "high": high})
        return pd.DataFrame(rows).set_index("label")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts keyed by column name."""
    return cast("list[dict[str, Any]]", frame.to_dict("records"))


def label(model: object, variant: object) -> str:
    """How reports name a model and variant: `model [variant]`, as compare_models does."""
    return f"{model} [{variant}]" if variant else str(model)


def load_report(run_dir: Path, comparison: RunComparison | None = None) -> RunReport:
    """The run's data for reports; a clear InputError for a directory with nothing to show."""
    from evalkit.analysis.compare import compare_models
    from evalkit.records.frame import load_run

    manifest = read_manifest(run_dir)  # missing directory, no manifest, newer schema
    if not (run_dir / JOURNAL).exists() and not (run_dir / RESULTS).exists():
        raise InputError(
            f"{run_dir}: run has no results yet (no {JOURNAL}; status "
            f"{manifest.get('status', 'unknown')!r}); run or resume it first"
        )
    frame = load_run(run_dir)
    if frame.empty:
        raise InputError(f"{run_dir}: run has no results yet (0 rows); run or resume it first")
    return RunReport(run_dir, manifest, frame, compare_models(frame), comparison)


def write_reports(
    run_dir: Path,
    out_dir: Path | None = None,
    formats: Sequence[str] = ("html", "md", "junit"),
    comparison: RunComparison | None = None,
) -> list[Path]:
    """Write `report.html`, `report.md` and `junit.xml` (as asked) and return their paths; each
    replaces its file whole or not at all, and one that cannot be written is a RunError."""
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in FILENAMES]
    if unknown:
        given = ", ".join(repr(f) for f in unknown)
        raise InputError(f"unknown report format {given}: use html, md or junit")
    if not wanted:
        raise InputError("no report format given: use html, md or junit")
    report = load_report(Path(run_dir), comparison)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    writers = _writers()
    paths = []
    for fmt in wanted:
        path = out / FILENAMES[fmt]
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_atomically(path, writers[fmt](report))
        except OSError as exc:  # a read-only run directory, a full disk
            raise RunError(
                f"cannot write {path} ({exc.strerror}); `evalkit report {run_dir} --out DIR` "
                "writes the reports somewhere else"
            ) from None
        paths.append(path)
    return paths


def _writers() -> dict[str, Callable[[RunReport], str]]:
    from evalkit.report.html import render_html
    from evalkit.report.junit import render_junit
    from evalkit.report.markdown import render_markdown

    return {"html": render_html, "md": render_markdown, "junit": render_junit}


__all__ = ["FILENAMES", "RunReport", "label", "load_report", "records", "write_reports"]
