"""The workers of a run: each takes a case × variant × model, sends its samples, scores them.

Before a request goes out it is looked for, in order, among the requests a resumed run
already finished (not sent again), in the response cache (free), and against the budget
(refused past `--max-cost`); only then does it wait for its model's limits and go out, with
retries. Every finished request is journaled before it counts as done.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.budget import Budget, max_cost
from evalkit.cache import Cache
from evalkit.checks import Verdict, broken, negated
from evalkit.checkspec import GRADED_BY_A_MODEL, Check, JudgeArg
from evalkit.judge import judge_request, parse_verdict
from evalkit.limits import ModelLimits
from evalkit.moderation import moderation_request, moderation_spec, parse_result
from evalkit.plan import Group, Request
from evalkit.progress import Progress
from evalkit.providers import Completion, Provider, ProviderError
from evalkit.retry import policy, wait_after
from evalkit.sampling import every_sample_hit_length, samples_of, select
from evalkit.scoring import Scorer
from evalkit.store import RunDir, now_iso
from evalkit.targets import Target
from evalkit.tokens import Counter


def grader_model(check: Check) -> str:
    """The provider/model that grades a judge or moderation check."""
    if check.kind == "judge":
        return JudgeArg.model_validate(check.arg).model
    return moderation_spec(check.arg).model


# errors that will fail every request to the model: stop sending to it after the first
FATAL_FOR_MODEL = frozenset({"auth", "not_found", "insufficient_quota"})
_WIRE_KEYS = frozenset({"model", "messages", "prompt", "suffix"})
_ANSWER_KEYS = ("prompt_tokens", "completion_tokens", "system_fingerprint", "latency_s", "ttft_s")


class BudgetReached(Exception):
    """The next request would take the run past `--max-cost`."""


class Prior:
    """What an earlier (killed or interrupted) session of this run already journaled."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}  # key -> successful request entry
        self.selections: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.judged: dict[str, dict[str, Any]] = {}  # judge request key -> judge entry


class Dispatcher:
    """State shared by the workers of one run."""

    def __init__(
        self,
        run: RunDir,
        settings: Any,
        progress: Progress,
        suite_folder: Path,
        cache: Cache | None = None,
        budget: Budget | None = None,
        prior: Prior | None = None,
    ) -> None:
        self.run = run
        self.settings = settings
        self.progress = progress
        self.scorer = Scorer(suite_folder)
        self.cache = cache
        self.budget = budget or Budget(None)
        self.prior = prior or Prior()
        self.judges: dict[str, tuple[Target, Provider, ModelLimits]] = {}
        self.requests = 0
        self.errors = 0
        self.reused = 0
        self.per_model: dict[str, dict[str, Any]] = {}
        self.stopped_models: dict[str, str] = {}
        self._counters: dict[str, Counter] = {}

    async def worker(
        self, target: Target, provider: Provider, limits: ModelLimits, work: Iterator[Group]
    ) -> None:
        for group in work:
            if target.label in self.stopped_models or self.budget.exhausted:
                return
            try:
                await self.run_group(group, provider, limits)
            except BudgetReached:
                return

    async def run_group(self, group: Group, provider: Provider, limits: ModelLimits) -> None:
        """All samples of one case × variant × model, resampled and selected per the suite."""
        entries: list[dict[str, Any]] = []
        max_tokens = group.params.max_tokens
        rounds = 0
        while True:
            numbers = range(rounds * group.samples, (rounds + 1) * group.samples)
            if group.select == "until_stop":
                round_entries = []
                for number in numbers:
                    request = group.request(number, max_tokens)
                    entry = await self.finish(request, group, provider, limits, rounds)
                    round_entries.append(entry)
                    if any(c.get("finish_reason") == "stop" for c in entry.get("choices") or []):
                        break
            else:
                round_entries = list(
                    await asyncio.gather(
                        *(
                            self.finish(
                                group.request(n, max_tokens), group, provider, limits, rounds
                            )
                            for n in numbers
                        )
                    )
                )
            entries += round_entries
            rounds += 1
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
            self._journal_selection(group, found, chosen, rounds, max_tokens)
        graded = {n: c for n, c in group.checks.items() if c.kind in GRADED_BY_A_MODEL}
        if graded:
            prompt = _prompt_text(group)
            picked = {number: choice for number, choice in found if number in chosen}
            await asyncio.gather(
                *(
                    self.grade(group, name, check, number, prompt, choice.get("text") or "")
                    for number, choice in picked.items()
                    for name, check in graded.items()
                )
            )

    def _journal_selection(
        self,
        group: Group,
        found: list[tuple[int, dict[str, Any]]],
        chosen: list[int],
        rounds: int,
        max_tokens: int | None,
    ) -> None:
        slot = (group.case.key, group.variant, group.target.label)
        entry = {
            "kind": "select",
            "case_id": slot[0],
            "variant": slot[1],
            "model": slot[2],
            "policy": group.select,
            "samples": [number for number, _ in found],
            "selected": chosen,
            "rounds": rounds,
            "max_tokens": max_tokens,
        }
        if self.prior.selections.get(slot) != entry:
            self.run.append(entry)

    async def finish(
        self, request: Request, group: Group, provider: Provider, limits: ModelLimits, round_: int
    ) -> dict[str, Any]:
        """Send (or reuse), score, journal and count one request."""
        prior = self.prior.requests.get(request.key)
        if prior is not None:
            entry = dict(prior)
            entry["choices"] = [dict(c) for c in prior.get("choices") or []]
        else:
            entry = await self.send(request, provider, limits)
        entry["round"] = round_
        if entry.get("error_type") is None:
            await self.scorer.score(entry, group.checks)
        entry["check_meta"] = {n: [c.weight, c.required] for n, c in group.checks.items()}
        if prior is None or entry != prior:  # a reused answer is re-journaled only if rescored
            self.run.append(entry)
        if prior is not None:
            self.reused += 1
        self.account(group.target, entry)
        return entry

    async def grade(
        self, group: Group, name: str, check: Check, number: int, prompt: str, output: str
    ) -> None:
        """A judge or moderation check: one more request, journaled with its verdict."""
        grader = grader_model(check)
        target, provider, limits = self.judges[grader]
        if check.kind == "judge":
            request = judge_request(
                target, check.arg, group.case, group.variant, prompt, output, number
            )
        else:
            request = moderation_request(target, group.case, group.variant, output, number)
        prior = self.prior.judged.get(request.key)
        if prior is not None and prior.get("check") == name:
            return
        result = await self.send(request, provider, limits)
        text = (result.get("choices") or [{}])[0].get("text") or ""
        verdict: Verdict
        if result.get("error_type"):
            verdict = broken(f"{check.kind} call failed: {result['error']}")
        elif check.kind == "judge":
            verdict = parse_verdict(text, JudgeArg.model_validate(check.arg).threshold)
        else:
            verdict = parse_result(text, check.arg)
        verdict = negated(check, verdict)
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
        """The cache's answer, or the server's (with retries); raises BudgetReached."""
        started_at = now_iso()
        if self.cache is not None:
            answer = self.cache.get(request.key)
            if answer is not None:
                return _entry(request, started_at, 0, answer=answer, cached=True)
        reserved = 0.0
        if self.budget.limit is not None:
            reserved = max_cost(request, self._counter(request.target))
            if not self.budget.reserve(reserved):
                raise BudgetReached()
        tokens = 0
        if limits.counts_tokens:
            tokens = len(request.wire) // 4 + (request.max_tokens or 256) * request.choices
        attempts = 1
        try:
            try:
                completion = await _attempt(request, provider, limits, tokens)
            except ProviderError as first:
                max_attempts, initial = self.settings.max_retries, self.settings.retry_initial_s
                if not first.retryable or max_attempts <= 1:
                    raise
                await asyncio.sleep(wait_after(first, 1, initial))
                async for attempt in policy(max_attempts - 1, initial, earlier_attempts=1):
                    with attempt:
                        attempts += 1
                        completion = await _attempt(request, provider, limits, tokens)
        except ProviderError as exc:
            self.budget.settle(reserved, 0.0)
            return _entry(request, started_at, attempts, error=exc)
        except BaseException:
            self.budget.settle(reserved, 0.0)
            raise
        answer = _answer(completion)
        entry = _entry(request, started_at, attempts, answer=answer)  # copies the choices
        charged = entry["cost_usd"]
        if charged is None:  # no believable usage: charge the most the request could cost
            charged = reserved or max_cost(request, self._counter(request.target))
            entry["charged_usd"] = charged
        self.budget.settle(reserved, charged)
        if self.cache is not None:
            self.cache.put(request, answer)
        return entry

    def _counter(self, target: Target) -> Counter:
        if target.id not in self._counters:
            self._counters[target.id] = Counter(target.info)
        return self._counters[target.id]

    def account(self, target: Target, entry: dict[str, Any], judge: bool = False) -> None:
        error = entry.get("error_type") is not None
        label = f"{target.label} (judge)" if judge else target.label
        stats = self.per_model.setdefault(
            label, {"requests": 0, "errors": 0, "cached": 0, "cost_usd": 0.0}
        )
        stats["requests"] += 1
        stats["errors"] += error
        stats["cached"] += bool(entry.get("cached"))
        cost = entry.get("cost_usd") or 0.0
        stats["cost_usd"] += cost
        if judge:
            return
        self.requests += 1
        self.errors += error
        tokens = (entry.get("prompt_tokens") or 0) + (entry.get("completion_tokens") or 0)
        self.progress.record(target.label, tokens, cost, error, bool(entry.get("cached")))
        if entry.get("error_type") in FATAL_FOR_MODEL and target.label not in self.stopped_models:
            self.stopped_models[target.label] = (
                f"{target.label}: {entry['error']}; stopped sending to this model"
            )


async def _attempt(
    request: Request, provider: Provider, limits: ModelLimits, tokens: int
) -> Completion:
    """One attempt: wait for the model's limits, send, give the slot back (shrinking on 429)."""
    await limits.acquire(tokens)
    pause: float | None = None
    ok = False
    try:
        completion = await provider.complete(request)
        ok = True
        return completion
    except ProviderError as exc:
        if exc.error_type == "rate_limit":
            pause = exc.retry_after if exc.retry_after is not None else 1.0
        raise
    finally:
        await limits.release(pause, ok)
        await asyncio.sleep(0)  # let a waiting worker send into the free slot


def _answer(completion: Completion) -> dict[str, Any]:
    """What the cache keeps of an answer (never an error)."""
    return {
        "choices": [
            {
                "index": c.index,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": c.logprobs,
                **({"tool_calls": c.tool_calls} if c.tool_calls else {}),
            }
            for c in completion.choices
        ],
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "system_fingerprint": completion.system_fingerprint,
        "latency_s": completion.latency_s,
        "ttft_s": completion.ttft_s,
    }


def _prompt_text(group: Group) -> str:
    if group.rendered.is_chat:
        return "\n".join(
            f"{m['role']}: {m.get('content') or json.dumps(m.get('tool_calls'))}"
            for m in group.rendered.message_dicts()
        )
    return (group.rendered.prompt or "") + (
        f"[insert here]{group.rendered.suffix}" if group.rendered.suffix is not None else ""
    )


def _entry(
    request: Request,
    started_at: str,
    attempts: int,
    answer: dict[str, Any] | None = None,
    error: ProviderError | None = None,
    cached: bool = False,
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
        "must_pass": request.case.must_pass,
        "prompt": body.get("messages") if request.endpoint == "chat" else body.get("prompt"),
        "suffix": body.get("suffix"),
        "params": {k: v for k, v in body.items() if k not in _WIRE_KEYS},
        "max_tokens": request.max_tokens,
        "seed": body.get("seed"),
        "started_at": started_at,
        "attempts": attempts,
        "cached": cached,
    }
    if error is not None:
        entry.update(error_type=error.error_type, error=error.message, status=error.status)
        return entry
    assert answer is not None
    entry.update({k: answer.get(k) for k in _ANSWER_KEYS})
    entry["choices"] = [dict(c) for c in answer.get("choices") or []]
    pt, ct = target.info.usage(entry["prompt_tokens"], entry["completion_tokens"], request.choices)
    entry["prompt_tokens"], entry["completion_tokens"] = pt, ct
    # a cache hit costs nothing; its original usage is kept
    entry["cost_usd"] = 0.0 if cached else target.info.usage_cost(pt, ct)
    return entry
