"""The `evalkit` command: parses options, calls the API, prints, maps errors to exit codes."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

from evalkit.catalog import CATALOG
from evalkit.errors import EvalkitError, SuiteError
from evalkit.frame import load_run
from evalkit.load import load_suite
from evalkit.runner import RunSettings, run_suite
from evalkit.suite import ModelSpec
from evalkit.summary import summarize
from evalkit.validate import check_suite

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Batch prompt evaluation and model comparison for OpenAI-compatible APIs.",
)

ModelOption = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="provider/model to use instead of the suite's models."),
]


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
) -> None:
    """evalkit: run prompt suites against models, compare, and gate CI on regressions."""


@app.command()
def validate(
    suites: Annotated[list[Path], typer.Argument(help="Suite files (YAML or JSONL).")],
    model: ModelOption = None,
) -> None:
    """Load and render every case of each suite; report every problem. Sends nothing."""
    problems = []
    for path in suites:
        try:
            suite = load_suite(path)
        except SuiteError as exc:
            problems.extend(exc.problems)
            continue
        overrides = [ModelSpec(id=m) for m in model] if model else None
        found = check_suite(suite, overrides)
        if found:
            problems.extend(found)
            continue
        variants = len(suite.variant_prompts())
        models = len(overrides if overrides is not None else suite.models)
        requests = len(suite.cases) * variants * models * suite.samples
        typer.echo(
            f"{path}: ok ({len(suite.cases)} cases, {variants} variant(s), "
            f"{models} model(s), {suite.samples} sample(s): {requests} requests)"
        )
    if problems:
        raise SuiteError(problems)


@app.command()
def run(
    suites: Annotated[list[Path], typer.Argument(help="Suite files (YAML or JSONL).")],
    model: ModelOption = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Requests in flight per model (default 16)."),
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", min=1, help="Samples per case (overrides the suite).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Root folder of run directories.")] = Path(
        "reports/runs"
    ),
    max_error_rate: Annotated[
        float,
        typer.Option("--max-error-rate", min=0, max=1, help="Fail the run (exit 3) above this."),
    ] = 0.02,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=1, help="Attempts per request for 429/5xx/timeouts.")
    ] = 8,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for one response.")
    ] = 120.0,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Live progress bar (default: on a terminal)."
        ),
    ] = None,
) -> None:
    """Send every case to every model; write a run directory (manifest, journal, results)."""
    worst = 0
    for path in suites:
        suite = load_suite(path)
        settings = RunSettings(
            models=model,
            concurrency=jobs,
            samples=samples,
            out=out,
            max_retries=max_retries,
            max_error_rate=max_error_rate,
            timeout_s=timeout,
            progress=progress,
        )
        result = run_suite(suite, settings)
        for label, stats in result.per_model.items():
            typer.echo(
                f"{label}: {stats['requests']} requests, {stats['errors']} errors, "
                f"${stats['cost_usd']:.4f}"
            )
        typer.echo(_summary_table(summarize(load_run(result.run_dir))))
        if result.failed_samples:
            typer.echo(f"{result.failed_samples} sample(s) failed their checks")
        if result.reason:
            typer.echo(f"run {result.status}: {result.reason}", err=True)
        worst = max(worst, result.exit_code)
    if worst:
        raise typer.Exit(worst)


@app.command()
def models() -> None:
    """List the models evalkit knows: endpoint, context window, prices (USD per 1M tokens)."""
    header = ("model", "endpoint", "context", "$/1M in", "$/1M out", "prices as of", "notes")
    rows = [header]
    for info in CATALOG:
        notes = [info.note] if info.note else []
        if info.supports_suffix:
            notes.append("insert (suffix)")
        if info.deprecated:
            notes.append(f"shut down {info.deprecated}")
        rows.append(
            (
                info.id,
                info.kind,
                f"{info.context_window:,}",
                f"{info.input_per_mtok:.2f}",
                f"{info.output_per_mtok:.2f}",
                info.prices_as_of,
                "; ".join(notes),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _summary_table(summary: pd.DataFrame) -> str:
    """The run summary as aligned plain text (it goes to logs and CI output too)."""
    header = ("model", "variant", "pass", "score", "stop", "length", "errors", "cost $", "p50 s")
    rows = [header]
    for r in summary.to_dict("records"):
        rows.append(
            (
                str(r["model"]),
                str(r["variant"]) or "-",
                _fmt(r["pass_rate"], "{:.0%}"),
                _fmt(r["mean_score"], "{:.2f}"),
                _fmt(r["stop_rate"], "{:.0%}"),
                _fmt(r["length_rate"], "{:.0%}"),
                _fmt(r["error_rate"], "{:.0%}"),
                _fmt(r["cost_usd"], "{:.4f}"),
                _fmt(r["latency_p50_s"], "{:.2f}"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _fmt(value: object, pattern: str) -> str:
    number = float(value) if isinstance(value, int | float) else float("nan")
    return pattern.format(number) if number == number else "-"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see DESIGN.md: 0, 1, 2, 3, 4)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="evalkit", standalone_mode=False)
    except EvalkitError as exc:
        typer.echo(str(exc), err=True)
        return exc.exit_code
    except typer.Abort:
        typer.echo("interrupted", err=True)
        return 3
    except typer.TyperException as exc:  # a usage error: bad option or argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(str(exc), err=True)
        return 2
    except Exception as exc:
        if "--debug" in args:
            traceback.print_exc()
        typer.echo(
            f"evalkit: internal error ({type(exc).__name__}: {exc}). This is a bug: please report "
            "it with the output of the same command run with --debug.",
            err=True,
        )
        return 4
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
