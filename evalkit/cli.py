"""The `evalkit` command: parses options, calls the API, prints, maps errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

from evalkit import cache
from evalkit.cache import cache_dir
from evalkit.compare import compare_runs, parse_policy
from evalkit.console import comparison_text, models_table, summary_table
from evalkit.errors import ConfigError, EvalkitError, SuiteError
from evalkit.frame import load_run
from evalkit.load import load_suite
from evalkit.preflight import overflow_problems
from evalkit.preflight import table as preflight_table
from evalkit.resume import unfinished_runs
from evalkit.runner import RunResult, RunSettings, resume_run, run_suite
from evalkit.runner import dry_run as evalkit_dry_run
from evalkit.suite import ModelSpec, Suite
from evalkit.summary import summarize
from evalkit.validate import check_suite

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # plain help and errors: they read the same in a CI log, and skip importing rich (0.1 s)
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Batch prompt evaluation and model comparison for OpenAI-compatible APIs.",
)

ModelOption = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="provider/model to use instead of the suite's models."),
]
FailOnOption = Annotated[
    str, typer.Option("--fail-on", help="any | significant | threshold:X (a pass-rate drop).")
]
AlphaOption = Annotated[
    float, typer.Option("--alpha", min=0.0001, max=0.5, help="Significance level.")
]
CacheDirOption = Annotated[
    Path | None, typer.Option("--cache-dir", help="Cache folder (default .evalkit/).")
]
OutsideCasesOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-cases", help="Read a cases: file outside the suite's folder (trust it)."
    ),
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
    allow_overflow: Annotated[
        bool,
        typer.Option("--allow-overflow", help="Accept cases that exceed a context window."),
    ] = False,
    allow_outside_cases: OutsideCasesOption = False,
) -> None:
    """Load and render every case of each suite; report every problem. Sends nothing."""
    problems = []
    for path in suites:
        try:
            suite = load_suite(path, allow_outside_cases)
        except SuiteError as exc:
            problems.extend(exc.problems)
            continue
        overrides = [ModelSpec(id=m) for m in model] if model else None
        found = check_suite(suite, overrides, allow_overflow=allow_overflow)
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
    suites: Annotated[
        list[Path] | None, typer.Argument(help="Suite files (YAML or JSONL).")
    ] = None,
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
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue this unfinished run directory.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print requests, tokens and cost; send nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", min=0, help="Stop dispatching past this (USD).")
    ] = None,
    allow_overflow: Annotated[
        bool,
        typer.Option("--allow-overflow", help="Send cases that exceed a context window anyway."),
    ] = False,
    allow_outside_cases: OutsideCasesOption = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the response cache.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Write the cache without reading it.")
    ] = False,
    cache_dir_option: CacheDirOption = None,
    max_error_rate: Annotated[
        float,
        typer.Option("--max-error-rate", min=0, max=1, help="Fail the run (exit 3) above this."),
    ] = 0.02,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=1, help="Attempts per request for 429/5xx/timeouts.")
    ] = 8,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds one attempt may take in all.")
    ] = 120.0,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Live progress bar (default: on a terminal)."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Compare with this run; exit 1 on a regression."),
    ] = None,
    fail_on: FailOnOption = "significant",
    alpha: AlphaOption = 0.05,
    write_report: Annotated[
        bool, typer.Option("--report", help="Write report.html, report.md, junit.xml.")
    ] = False,
) -> None:
    """Send every case to every model; write a run directory (manifest, journal, results)."""
    baseline_frame = None
    if baseline is not None:  # bad input here fails before anything is sent
        parse_policy(fail_on)
        baseline_frame = load_run(baseline)
    settings = RunSettings(
        models=model,
        concurrency=jobs,
        samples=samples,
        out=out,
        max_retries=max_retries,
        max_error_rate=max_error_rate,
        timeout_s=timeout,
        progress=progress,
        max_cost=max_cost,
        cache=not no_cache,
        refresh=refresh,
        cache_dir=cache_dir_option,
        allow_overflow=allow_overflow,
        allow_outside_cases=allow_outside_cases,
    )
    after = _AfterRun(baseline_frame, fail_on, alpha, write_report)
    if resume is not None:
        raise typer.Exit(after(resume_run(resume, settings)))
    if not suites:
        raise ConfigError("give a suite file to run, or --resume RUN_DIR")
    worst = 0
    for path in suites:
        suite = load_suite(path, allow_outside_cases)
        if dry_run:
            worst = max(worst, _dry_run(suite, settings, as_json))
            continue
        unfinished = _offer_resume(suite, settings)
        result = resume_run(unfinished, settings) if unfinished else run_suite(suite, settings)
        worst = max(worst, after(result))
    if worst:
        raise typer.Exit(worst)


def _dry_run(suite: Suite, settings: RunSettings, as_json: bool) -> int:
    estimates = evalkit_dry_run(suite, settings)
    if as_json:
        typer.echo(
            json.dumps(
                {"suite": suite.source, "models": [e.as_dict() for e in estimates]}, indent=2
            )
        )
    else:
        typer.echo(f"{suite.source}: nothing sent (dry run)")
        typer.echo(preflight_table(estimates))
    problems = [] if settings.allow_overflow else overflow_problems(suite, estimates)
    if problems:
        raise SuiteError(problems)
    return 0


def _offer_resume(suite: Suite, settings: RunSettings) -> Path | None:
    """An unfinished run of the same suite and models: resume it if the user says so."""
    models = settings.models or [m.id for m in suite.models]
    found = unfinished_runs(Path(settings.out), suite.source, models)
    if not found:
        return None
    latest = found[-1]
    if sys.stdin.isatty() and sys.stdout.isatty():
        if typer.confirm(f"{latest} did not finish. Resume it?", default=True):
            return latest
        return None
    typer.echo(
        f"note: {latest} did not finish; `evalkit run --resume {latest}` continues it", err=True
    )
    return None


class _AfterRun:
    """Print a finished run's summary; compare with the baseline and write reports if asked."""

    def __init__(
        self, baseline: pd.DataFrame | None, fail_on: str, alpha: float, report: bool
    ) -> None:
        self.baseline, self.fail_on, self.alpha, self.report = baseline, fail_on, alpha, report

    def __call__(self, result: RunResult) -> int:
        for label, stats in result.per_model.items():
            typer.echo(
                f"{label}: {stats['requests']} requests, {stats['errors']} errors, "
                f"{stats['cached']} cached, ${stats['cost_usd']:.4f}"
            )
        frame = result.frame if result.frame is not None else load_run(result.run_dir)
        typer.echo(summary_table(summarize(frame)))
        if result.failed_samples:
            typer.echo(f"{result.failed_samples} sample(s) failed their checks")
        if result.reason:
            typer.echo(f"run {result.status}: {result.reason}", err=True)
        code = result.exit_code
        comparison = None
        if self.baseline is not None and result.status == "complete":
            comparison = compare_runs(self.baseline, frame, self.fail_on, self.alpha)
            typer.echo(comparison_text(comparison))
            code = 1 if comparison.failed else 0  # the gate decides, not each failing check
        if self.report:
            from evalkit.report import write_reports

            for path in write_reports(result.run_dir, None, ("html", "md", "junit"), comparison):
                typer.echo(str(path))
        return code


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(help="The baseline run directory.")],
    new: Annotated[Path, typer.Argument(help="The candidate run directory.")],
    fail_on: FailOnOption = "significant",
    alpha: AlphaOption = 0.05,
) -> None:
    """Which cases flipped between two runs, and whether it is a regression (exit 1)."""
    result = compare_runs(load_run(base), load_run(new), fail_on, alpha)
    typer.echo(comparison_text(result))
    if result.failed:
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    formats: Annotated[
        str, typer.Option("--format", help="Comma-separated: html, md, junit.")
    ] = "html,md,junit",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where to write (default: the run directory).")
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Include a comparison with this run.")
    ] = None,
    fail_on: FailOnOption = "significant",
    alpha: AlphaOption = 0.05,
) -> None:
    """Write report.html (self-contained), report.md (CI summary) and junit.xml."""
    from evalkit.report import write_reports

    comparison = None
    if baseline is not None:
        comparison = compare_runs(load_run(baseline), load_run(run_dir), fail_on, alpha)
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    for path in write_reports(run_dir, out_dir, wanted, comparison):
        typer.echo(str(path))


cache_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The response cache: stats, clear, explain."
)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(cache_dir_option: CacheDirOption = None) -> None:
    """Entries and size of the cache, per model."""
    info = cache.stats(cache_dir(cache_dir_option))
    typer.echo(f"{info['path']}: {info['entries']} answers, {info['bytes'] / 1e6:.1f} MB")
    for name, count in sorted(info["models"].items()):
        typer.echo(f"  {name}: {count}")


@cache_app.command("clear")
def cache_clear(cache_dir_option: CacheDirOption = None) -> None:
    """Delete every cached answer."""
    typer.echo(f"removed {cache.clear(cache_dir(cache_dir_option))} cached answers")


@cache_app.command("explain")
def cache_explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    case: Annotated[str, typer.Argument(help="Case id.")],
    model_name: Annotated[str, typer.Argument(help="Model label or provider/model.")],
    cache_dir_option: CacheDirOption = None,
) -> None:
    """Print the cache key's parts for a case and model, to understand a surprising miss."""
    for item in cache.explain(cache_dir(cache_dir_option), run_dir, case, model_name):
        typer.echo(f"key {item['key']} (sample {item['sample']}, variant {item['variant'] or '-'})")
        typer.echo(f"  in cache: {'yes' if item['in_cache'] else 'no'}")
        typer.echo(f"  endpoint URL: {item['url']}")
        typer.echo(f"  model: {item['model']}")
        typer.echo(f"  sample index: {item['sample']}")
        body = json.dumps(item["body"], indent=2, sort_keys=True)
        typer.echo("  body: " + body.replace("\n", "\n  "))


@app.command()
def models() -> None:
    """List the models evalkit knows: endpoint, context window, prices (USD per 1M tokens)."""
    typer.echo(models_table())


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
    if result == 130:  # Ctrl-C before the run began sending: an interrupted run
        typer.echo("interrupted", err=True)
        return 3
    return result if isinstance(result, int) else 0


def entry() -> None:
    """The console script: run, flush, and exit without tearing the interpreter down.

    Finalizing pandas, pyarrow and aiohttp at exit costs ~0.2 s on every run; the run
    directory, journal and cache are closed and flushed before `main` returns.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
