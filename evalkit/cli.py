"""The `evalkit` command: parses options, calls the API, prints, maps errors to exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

import evalkit
from evalkit import console
from evalkit.errors import ConfigError, EvalkitError, SuiteError, UsageError, exit_code

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
ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        envvar="EVALKIT_SHARD",
        help="I/N: only the cases of shard I of N (by a hash of the case id).",
    ),
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
    shard_option: ShardOption = None,
) -> None:
    """Load and render every case of each suite; report every problem. Sends nothing."""
    shard = evalkit.Shard.parse(shard_option) if shard_option is not None else None
    problems = []
    overrides = [evalkit.ModelSpec(id=m) for m in model] if model else None
    for path in suites:
        try:
            suite = evalkit.load_suite(path, allow_outside_cases)
        except SuiteError as exc:
            problems.extend(exc.problems)
            continue
        found = evalkit.check_suite(suite, overrides, allow_overflow=allow_overflow)
        if found:
            problems.extend(found)
            continue
        models = len(overrides if overrides is not None else suite.models)
        typer.echo(console.validated(path, suite, models))
        if shard is not None:
            sizes = evalkit.shard_sizes(suite, shard.count, models)
            typer.echo(console.shard_sizes_text(sizes, shard))
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
    gates: Annotated[
        list[str] | None,
        typer.Option(
            "--gate",
            help="A gate rule, repeatable, replacing the suite's gate: pass_rate>=0.9, "
            "pass_rate[model=M,variant=V,check=C]>=0.8, A>B (better), A>=B[margin=0.05] (not "
            "worse). The run then exits by the gate.",
        ),
    ] = None,
    write_report: Annotated[
        bool, typer.Option("--report", help="Write report.html, report.md, junit.xml.")
    ] = False,
    shard_option: ShardOption = None,
    batch: Annotated[
        bool,
        typer.Option("--batch", help="Send through the Batch API: half the price, within 24 h."),
    ] = False,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval", min=0.01, help="With --batch: seconds between checks (default 60)."
        ),
    ] = None,
    batch_topup: Annotated[
        str,
        typer.Option(
            "--batch-topup", help="With --batch: a raised-max_tokens round in 'batch' or 'online'."
        ),
    ] = "batch",
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help="Send in rounds; stop once decided (with --baseline, or two models).",
        ),
    ] = False,
    order_seed: Annotated[
        int | None, typer.Option("--order-seed", help="With --sequential: the cases' order seed.")
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin", min=0.0001, max=0.9999, help="With --sequential: the difference δ (0..1)."
        ),
    ] = None,
    max_cases: Annotated[
        int | None,
        typer.Option("--max-cases", min=1, help="With --sequential: stop undecided after these."),
    ] = None,
) -> None:
    """Send every case to every model; write a run directory (manifest, journal, results)."""
    if batch_topup not in ("batch", "online"):
        raise UsageError(f"--batch-topup {batch_topup!r}: use batch or online")
    # bad input here fails before anything is sent
    for expression in gates or []:
        evalkit.parse_gate(expression)
    shard = evalkit.Shard.parse(shard_option) if shard_option is not None else None
    rounds = _sequential(sequential, baseline, alpha, order_seed, margin, max_cases)
    if rounds is not None and gates:
        raise UsageError(
            "--gate goes without --sequential: with it, the sequential decision is the gate"
        )
    gate = None
    if baseline is not None and rounds is None:
        gate = evalkit.Gate.load(baseline, fail_on, alpha)
    settings = evalkit.RunSettings(
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
        gates=gates,
        alpha=alpha,
        shard=shard,
        batch=batch,
        poll_interval_s=poll_interval,
        batch_topup=batch_topup,
        sequential=rounds,
        on_start=lambda run_dir: typer.echo(console.run_directory(run_dir)),
        offer_resume=_offer_resume,
    )
    if resume is not None:
        raise typer.Exit(_after_run(evalkit.resume_run(resume, settings), gate, write_report))
    if not suites:
        raise ConfigError("give a suite file to run, or --resume RUN_DIR")
    worst = 0
    for path in suites:
        suite = evalkit.load_suite(path, allow_outside_cases)
        if dry_run:
            estimate = evalkit.dry_run(suite, settings)
            typer.echo(console.dry_run_text(estimate, as_json))
            estimate.raise_for_problems()
            continue
        result = evalkit.run_suite(suite, settings)
        worst = max(worst, _after_run(result, gate, write_report))
    if worst:
        raise typer.Exit(worst)


def _sequential(
    asked: bool,
    baseline: Path | None,
    alpha: float,
    order_seed: int | None,
    margin: float | None,
    max_cases: int | None,
) -> evalkit.SequentialSettings | None:
    """`--sequential` and its options (their options alone are refused; with --shard the run
    refuses it before sending anything)."""
    options = (("--order-seed", order_seed), ("--margin", margin), ("--max-cases", max_cases))
    given = [name for name, value in options if value is not None]
    if not asked:
        if given:
            raise UsageError(f"{given[0]} goes with --sequential")
        return None
    seed = {} if order_seed is None else {"order_seed": order_seed}
    return evalkit.SequentialSettings(baseline, alpha, margin, max_cases=max_cases, **seed)


def _offer_resume(unfinished: Path) -> bool:
    """Ask on a terminal; elsewhere say how to resume, and start a new run."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return typer.confirm(console.resume_question(unfinished), default=True)
    typer.echo(console.resume_note(unfinished), err=True)
    return False


def _after_run(result: evalkit.RunResult, gate: evalkit.Gate | None, report: bool) -> int:
    """Print a finished run, its comparison with the baseline, and its reports if asked."""
    typer.echo(console.run_summary(result))
    if result.reason:
        typer.echo(console.run_reason(result), err=True)
    if result.gates is not None:
        typer.echo(console.gate_text(result.gates))
    if gate is not None:
        result = gate.judge(result)
    if result.comparison is not None:
        typer.echo(console.comparison_text(result.comparison))
    if result.sequential is not None:
        typer.echo(console.sequential_text(result.sequential))
    if report:
        formats = ("html", "md", "junit")
        for path in evalkit.write_reports(result.run_dir, None, formats, result.comparison):
            typer.echo(str(path))
    return result.exit_code


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(help="The baseline run directory.")],
    new: Annotated[Path, typer.Argument(help="The candidate run directory.")],
    fail_on: FailOnOption = "significant",
    alpha: AlphaOption = 0.05,
) -> None:
    """Which cases flipped between two runs, and whether it is a regression (exit 1)."""
    comparison = evalkit.compare_runs(base, new, fail_on, alpha)
    typer.echo(console.comparison_text(comparison))
    raise typer.Exit(comparison.exit_code)


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
    comparison = None
    if baseline is not None:
        comparison = evalkit.compare_runs(baseline, run_dir, fail_on, alpha)
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    for path in evalkit.write_reports(run_dir, out_dir, wanted, comparison):
        typer.echo(str(path))


@app.command()
def batches(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of a --batch run.")],
    cancel: Annotated[
        bool,
        typer.Option("--cancel", help="Cancel its unfinished batches (finished lines are kept)."),
    ] = False,
) -> None:
    """Show each Batch API batch of a run: its state now, and completed / failed / total."""
    typer.echo(console.batches_table(evalkit.batch_states(run_dir, cancel)))


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(help="The shards' run directories.")],
    out: Annotated[Path, typer.Option("--out", help="The merged run directory (new).")],
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete", help="Merge shards that did not complete (the report says so)."
        ),
    ] = False,
) -> None:
    """Put the run directories of every shard (--shard I/N) of a suite together as one run."""
    merged = evalkit.merge_runs(run_dirs, out, allow_incomplete)
    typer.echo(console.run_directory(merged.run_dir))
    typer.echo(console.merged_text(merged))
    if merged.gates is not None:  # the shards' gate, decided on every case at once
        typer.echo(console.gate_text(merged.gates))
        raise typer.Exit(exit_code(gates=[o.held for o in merged.gates]))


cache_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The response cache: stats, clear, explain."
)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(cache_dir_option: CacheDirOption = None) -> None:
    """Entries and size of the cache, per model."""
    typer.echo(console.cache_stats_text(evalkit.cache_stats(evalkit.cache_dir(cache_dir_option))))


@cache_app.command("clear")
def cache_clear(cache_dir_option: CacheDirOption = None) -> None:
    """Delete every cached answer."""
    typer.echo(f"removed {evalkit.clear_cache(evalkit.cache_dir(cache_dir_option))} cached answers")


@cache_app.command("explain")
def cache_explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    case: Annotated[str, typer.Argument(help="Case id.")],
    model_name: Annotated[str, typer.Argument(help="Model label or provider/model.")],
    cache_dir_option: CacheDirOption = None,
) -> None:
    """Print the cache key's parts for a case and model, to understand a surprising miss."""
    items = evalkit.explain_cache(evalkit.cache_dir(cache_dir_option), run_dir, case, model_name)
    typer.echo(console.cache_explain_text(items))


@app.command()
def models(
    match: Annotated[
        str | None, typer.Argument(help="Only models whose id contains this, e.g. gpt-5.")
    ] = None,
) -> None:
    """List the models evalkit knows: endpoint, context window, prices (USD per 1M tokens)."""
    typer.echo(console.models_table(match))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (`evalkit.errors.exit_code` decides it)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="evalkit", standalone_mode=False)
    except EvalkitError as exc:
        typer.echo(str(exc), err=True)
        return exit_code(exc)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        return exit_code(complete=False)
    except typer.TyperException as exc:  # a usage error: bad option or argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(str(exc), err=True)
        return exit_code(UsageError(str(exc)))
    except Exception as exc:
        if "--debug" in args:
            traceback.print_exc()
        typer.echo(
            f"evalkit: internal error ({type(exc).__name__}: {exc}). This is a bug: please report "
            "it with the output of the same command run with --debug.",
            err=True,
        )
        return exit_code(exc)
    if result == 130:  # Ctrl-C before the run began sending: an interrupted run
        typer.echo("interrupted", err=True)
        return exit_code(complete=False)
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
