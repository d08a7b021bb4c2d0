"""The run: plan → limits → provider (with retries) → journal, for every model at once.

Each model gets as many workers as it may have requests in flight; workers pull requests
from that model's lazy plan, so memory stays flat however large the suite. A request that
finally fails is journaled as an error record and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from evalkit.checks import Verdict, evaluate
from evalkit.checkspec import JudgeArg
from evalkit.errors import ConfigError, RunError, SuiteError
from evalkit.frame import frame_of_journal
from evalkit.judge import judge_request, parse_verdict
from evalkit.limits import ModelLimits
from evalkit.plan import Group, Request, count_requests, groups
from evalkit.progress import Progress
from evalkit.providers import Completion, Provider, ProviderError
from evalkit.providers.openai import OpenAIProvider, make_client
from evalkit.render import Renderer
from evalkit.retry import policy
from evalkit.sampling import every_sample_hit_length, samples_of, select
from evalkit.store import RESULTS, RunDir, file_sha256, new_run_id, now_iso
from evalkit.suite import ModelSpec, Suite
from evalkit.targets import Target, resolve
from evalkit.validate import check_suite

# errors that will fail every request to the model: stop sending to it after the first
_FATAL_FOR_MODEL = frozenset({"auth", "not_found", "insufficient_quota"})
_WIRE_KEYS = frozenset({"model", "messages", "prompt", "suffix"})


@dataclass
class RunSettings:
    """What `evalkit run` was asked to do, beyond the suite itself."""

    models: list[str] | None = None  # replaces the suite's models
    concurrency: int | None = None  # -j: requests in flight per model
    samples: int | None = None
    out: Path = Path("reports/runs")
    max_retries: int = 8
    max_error_rate: float = 0.02
    timeout_s: float = 120.0
    retry_initial_s: float = 0.5
    progress: bool | None = None  # None: a live bar on a terminal, plain lines otherwise
    environ: Mapping[str, str] | None = None


@dataclass
class RunResult:
    run_dir: Path
    status: str  # complete, failed, interrupted
    requests: int
    errors: int
    reason: str | None = None
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_samples: int = 0  # kept samples that failed a required check

    @property
    def exit_code(self) -> int:
        """3: the run could not complete; 1: checks failed; 0: all good."""
        if self.status != "complete":
            return 3
        return 1 if self.failed_samples else 0


def run_suite(suite: Suite, settings: RunSettings | None = None) -> RunResult:
    """Send every request of `suite` and write a run directory (see store.py)."""
    settings = settings or RunSettings()
    env = os.environ if settings.environ is None else settings.environ
    specs = [ModelSpec(id=m) for m in settings.models] if settings.models else suite.models
    if not specs:
        raise ConfigError("no models to run: give --model provider/model, or models: in the suite")
    problems = check_suite(suite, specs if settings.models else None, env)
    if problems:
        raise SuiteError(problems)
    targets = [_with_concurrency(resolve(s, suite.endpoints, env), s, settings) for s in specs]
    judges = [resolve(ModelSpec(id=m), suite.endpoints, env) for m in _judge_models(suite)]
    keys = _api_keys([*targets, *judges], env)
    run = RunDir.create(
        Path(settings.out), new_run_id(suite.name or "suite"), _manifest(suite, targets, settings)
    )
    print(f"run directory: {run.path}", flush=True)
    return asyncio.run(_execute(suite, targets, judges, keys, settings, run))


def _judge_models(suite: Suite) -> list[str]:
    found = {
        JudgeArg.model_validate(check.arg).model
        for check in [*suite.checks, *(c for case in suite.cases for c in case.expect)]
        if check.kind == "judge"
    }
    return sorted(found)


def _with_concurrency(target: Target, spec: ModelSpec, settings: RunSettings) -> Target:
    if settings.concurrency and not spec.concurrency:
        return replace(target, concurrency=settings.concurrency)
    return target


def _api_keys(targets: list[Target], env: Mapping[str, str]) -> dict[str, str | None]:
    """Each target's key, read now so a missing one fails before any request is sent."""
    keys: dict[str, str | None] = {}
    for target in targets:
        if target.provider == "local":
            raise ConfigError(
                f"{target.id}: the embedded local provider is not available in this version"
            )
        name = target.api_key_env
        if name is None:
            keys[target.id] = None
        elif env.get(name):
            keys[target.id] = env[name]
        else:
            raise ConfigError(
                f"{target.id} needs an API key: set the environment variable {name} "
                "(evalkit reads keys only from the environment and never stores them)"
            )
    return keys


def _manifest(suite: Suite, targets: list[Target], settings: RunSettings) -> dict[str, Any]:
    return {
        "evalkit_version": version("evalkit"),
        "suite": {
            "name": suite.name,
            "path": suite.source,
            "abspath": str(Path(suite.source).resolve()) if suite.source else None,
            "sha256": file_sha256(suite.source) if suite.source else None,
        },
        "models": [
            {
                "id": t.id,
                "label": t.label,
                "base_url": t.base_url,
                "api_key_env": t.api_key_env,  # the variable's name, never its value
                "concurrency": t.concurrency,
                "params": t.params.set_values(),
            }
            for t in targets
        ],
        "options": {
            "models": settings.models,
            "concurrency": settings.concurrency,
            "samples": settings.samples,
            "max_retries": settings.max_retries,
            "max_error_rate": settings.max_error_rate,
            "timeout_s": settings.timeout_s,
        },
        "params": suite.params.set_values(),
        "planned": {t.label: count_requests(suite, settings.samples) for t in targets},
    }


class _Run:
    """State shared by the workers of one run."""

    def __init__(
        self, run: RunDir, settings: RunSettings, progress: Progress, suite_folder: Path
    ) -> None:
        self.run = run
        self.settings = settings
        self.progress = progress
        self.folder = suite_folder
        self.judges: dict[str, tuple[Target, Provider, ModelLimits]] = {}
        self.requests = 0
        self.errors = 0
        self.per_model: dict[str, dict[str, Any]] = {}
        self.stopped_models: dict[str, str] = {}

    async def worker(
        self, target: Target, provider: Provider, limits: ModelLimits, work: Iterator[Group]
    ) -> None:
        for group in work:
            if target.label in self.stopped_models:
                return
            await self.run_group(group, provider, limits)

    async def run_group(self, group: Group, provider: Provider, limits: ModelLimits) -> None:
        """All samples of one case × variant × model, resampled and selected per the suite."""
        entries: list[dict[str, Any]] = []
        max_tokens = group.params.max_tokens
        first = 0
        while True:
            numbers = range(first, first + group.samples)
            if group.select == "until_stop":
                round_entries = []
                for number in numbers:
                    entry = await self.finish(
                        group.request(number, max_tokens), group, provider, limits
                    )
                    round_entries.append(entry)
                    if any(c.get("finish_reason") == "stop" for c in entry.get("choices") or []):
                        break
            else:
                round_entries = list(
                    await asyncio.gather(
                        *(
                            self.finish(group.request(number, max_tokens), group, provider, limits)
                            for number in numbers
                        )
                    )
                )
            entries += round_entries
            first += group.samples
            cap = group.max_tokens_cap
            if (
                group.select != "all"
                and max_tokens is not None
                and cap is not None
                and max_tokens < cap
                and every_sample_hit_length(round_entries)
            ):
                max_tokens = min(cap, max_tokens * 2)
                continue
            break
        found = samples_of(entries)
        chosen = select(group.select, found)
        if group.select != "all":
            self.run.append(
                {
                    "kind": "select",
                    "case_id": group.case.key,
                    "variant": group.variant,
                    "model": group.target.label,
                    "policy": group.select,
                    "samples": [number for number, _ in found],
                    "selected": chosen,
                    "rounds": first // group.samples,
                    "max_tokens": max_tokens,
                }
            )
        judged = {name: check for name, check in group.checks.items() if check.kind == "judge"}
        if judged:
            prompt = _prompt_text(group)
            picked = {number: choice for number, choice in found if number in chosen}
            await asyncio.gather(
                *(
                    self.judge(group, name, check.arg, number, prompt, choice.get("text") or "")
                    for number, choice in picked.items()
                    for name, check in judged.items()
                )
            )

    async def finish(
        self, request: Request, group: Group, provider: Provider, limits: ModelLimits
    ) -> dict[str, Any]:
        """Send, score, journal and count one request."""
        entry = await self.send(request, provider, limits)
        if entry.get("error_type") is None:
            _score(entry, group, self.folder)
        entry["check_meta"] = {n: [c.weight, c.required] for n, c in group.checks.items()}
        self.run.append(entry)
        self.account(group.target, entry)
        return entry

    async def judge(
        self, group: Group, name: str, arg: Any, number: int, prompt: str, output: str
    ) -> None:
        judge_id = JudgeArg.model_validate(arg).model
        target, provider, limits = self.judges[judge_id]
        request = judge_request(target, arg, group.case, group.variant, prompt, output, number)
        result = await self.send(request, provider, limits)
        if result.get("error_type"):
            verdict = Verdict(False, 0.0, f"judge call failed: {result['error']}")
        else:
            verdict = parse_verdict(
                (result.get("choices") or [{}])[0].get("text") or "",
                JudgeArg.model_validate(arg).threshold,
            )
        self.run.append(
            {
                **result,
                "kind": "judge",
                "case_id": group.case.key,
                "variant": group.variant,
                "model": group.target.label,
                "judge_model": target.label,
                "sample": number,
                "check": name,
                "passed": verdict.passed,
                "score": verdict.score,
                "reason": verdict.reason,
            }
        )
        self.account(target, result, judge=True)

    async def send(
        self, request: Request, provider: Provider, limits: ModelLimits
    ) -> dict[str, Any]:
        started_at = now_iso()
        attempts = 0
        estimate = (
            len(json.dumps(request.body)) // 4 + (request.max_tokens or 256) * request.choices
        )
        try:
            async for attempt in policy(self.settings.max_retries, self.settings.retry_initial_s):
                with attempt:
                    attempts += 1
                    await limits.acquire(estimate)
                    pause: float | None = None
                    ok = False
                    try:
                        completion = await provider.complete(request)
                        ok = True
                    except ProviderError as exc:
                        if exc.error_type == "rate_limit":
                            pause = exc.retry_after if exc.retry_after is not None else 1.0
                        raise
                    finally:
                        await limits.release(pause, ok)
        except ProviderError as exc:
            return _entry(request, started_at, attempts, error=exc)
        return _entry(request, started_at, attempts, completion=completion)

    def account(self, target: Target, entry: dict[str, Any], judge: bool = False) -> None:
        error = entry.get("error_type") is not None
        label = f"{target.label} (judge)" if judge else target.label
        stats = self.per_model.setdefault(label, {"requests": 0, "errors": 0, "cost_usd": 0.0})
        stats["requests"] += 1
        stats["errors"] += error
        cost = entry.get("cost_usd") or 0.0
        stats["cost_usd"] += cost
        if judge:
            return
        self.requests += 1
        self.errors += error
        tokens = (entry.get("prompt_tokens") or 0) + (entry.get("completion_tokens") or 0)
        self.progress.record(target.label, tokens, cost, error, bool(entry.get("cached")))
        if entry.get("error_type") in _FATAL_FOR_MODEL and target.label not in self.stopped_models:
            self.stopped_models[target.label] = (
                f"{target.label}: {entry['error']}; stopped sending to this model"
            )


def _score(entry: dict[str, Any], group: Group, folder: Path) -> None:
    """Each choice's verdicts, stored with it in the journal (judge checks come later)."""
    for choice in entry.get("choices") or []:
        record = {**entry, "finish_reason": choice.get("finish_reason")}
        record.pop("choices", None)
        output = choice.get("text") or ""
        verdicts = {}
        for name, check in group.checks.items():
            if check.kind == "judge":
                continue
            v = evaluate(check, output, record, folder)
            verdicts[name] = [v.passed, v.score, v.reason]
        choice["checks"] = verdicts


def _prompt_text(group: Group) -> str:
    if group.rendered.is_chat:
        return "\n".join(f"{m['role']}: {m['content']}" for m in group.rendered.message_dicts())
    return (group.rendered.prompt or "") + (
        f"[insert here]{group.rendered.suffix}" if group.rendered.suffix is not None else ""
    )


def _entry(
    request: Request,
    started_at: str,
    attempts: int,
    completion: Completion | None = None,
    error: ProviderError | None = None,
) -> dict[str, Any]:
    """The journal line of one finished request."""
    target = request.target
    body = request.body
    entry: dict[str, Any] = {
        "key": request.key,
        "case_id": request.case.key,
        "variant": request.variant,
        "model": target.label,
        "model_id": target.id,
        "endpoint": request.endpoint,
        "sample": request.sample,
        "n": request.choices,
        "vars": request.case.vars,
        "prompt": body.get("messages") if request.endpoint == "chat" else body.get("prompt"),
        "suffix": body.get("suffix"),
        "params": {k: v for k, v in body.items() if k not in _WIRE_KEYS},
        "max_tokens": request.max_tokens,
        "seed": body.get("seed"),
        "started_at": started_at,
        "attempts": attempts,
        "cached": False,
    }
    if error is not None:
        entry.update(error_type=error.error_type, error=error.message, status=error.status)
        return entry
    assert completion is not None
    pt, ct = completion.prompt_tokens, completion.completion_tokens
    entry.update(
        latency_s=completion.latency_s,
        ttft_s=completion.ttft_s,
        prompt_tokens=pt,
        completion_tokens=ct,
        cost_usd=None if pt is None and ct is None else target.info.cost(pt or 0, ct or 0),
        system_fingerprint=completion.system_fingerprint,
        choices=[
            {
                "index": c.index,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": c.logprobs,
            }
            for c in completion.choices
        ],
    )
    return entry


async def _execute(
    suite: Suite,
    targets: list[Target],
    judges: list[Target],
    keys: dict[str, str | None],
    settings: RunSettings,
    run: RunDir,
) -> RunResult:
    totals = {t.label: count_requests(suite, settings.samples) for t in targets}
    live = settings.progress if settings.progress is not None else _is_terminal()
    progress = Progress(totals, live)
    state = _Run(run, settings, progress, Path(suite.source).parent)
    in_flight = sum(t.concurrency for t in [*targets, *judges])
    client = make_client(in_flight + 4, settings.timeout_s)
    renderer = Renderer()
    run.open_journal()
    paced: dict[str, tuple[Target, Provider, ModelLimits]] = {}
    for target in [*targets, *judges]:
        if target.id not in paced:
            paced[target.id] = (
                target,
                OpenAIProvider(client, target.base_url, keys[target.id]),
                ModelLimits(target.concurrency, target.rpm, target.tpm),
            )
    state.judges = {j.id: paced[j.id] for j in judges}
    workers: list[asyncio.Task[None]] = []
    for target in targets:
        _, sender, limits = paced[target.id]
        work = groups(suite, target, settings.samples, renderer)
        workers += [
            asyncio.create_task(state.worker(target, sender, limits, work))
            for _ in range(target.concurrency)
        ]
    drawing = asyncio.create_task(progress.draw_until_cancelled())
    interrupted = False
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        for task in workers:
            task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_interrupt)
    try:
        results = await asyncio.gather(*workers, return_exceptions=True)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        drawing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawing
        await client.aclose()
    failures = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    return _finish(suite, settings, run, state, interrupted, failures)


def _finish(
    suite: Suite,
    settings: RunSettings,
    run: RunDir,
    state: _Run,
    interrupted: bool,
    failures: list[BaseException],
) -> RunResult:
    planned = sum(run.manifest["planned"].values())
    rate = state.errors / state.requests if state.requests else 0.0
    status, reason = "complete", None
    if failures:
        status, reason = "failed", f"{type(failures[0]).__name__}: {failures[0]}"
    elif interrupted:
        status, reason = "interrupted", "interrupted by a signal; finished requests are kept"
    elif state.stopped_models:
        status, reason = "failed", "; ".join(state.stopped_models.values())
    elif rate > settings.max_error_rate:
        status = "failed"
        reason = (
            f"error rate {rate:.1%} ({state.errors} of {state.requests} requests) is above "
            f"--max-error-rate {settings.max_error_rate:.1%}"
        )
    frame = frame_of_journal(run.path, run.manifest)
    kept = frame[frame["selected"].fillna(True).astype(bool)]
    failed = int((~kept["passed"].fillna(False).astype(bool)).sum())
    counts = {
        "planned": planned,
        "requests": state.requests,
        "errors": state.errors,
        "samples": len(frame),
        "failed_samples": failed,
    }
    run.finish(status, reason=reason, counts=counts, per_model=state.per_model)
    frame.to_parquet(run.path / RESULTS, index=False)
    if failures and isinstance(failures[0], RunError):
        raise failures[0]
    return RunResult(
        run.path, status, state.requests, state.errors, reason, state.per_model, failed
    )


def _is_terminal() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")
