"""The workers of a run: each takes a case × variant × model, sends its samples, scores them.

Each request is sent (or reused, or answered from the cache) by `send.Sender`; the workers
run the resampling rounds, score every answer, journal it before it counts as done, pick
the samples the suite keeps, and hand those to `grading.Grader`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from evalkit.execution.budget import Budget, BudgetReached
from evalkit.execution.limits import ModelLimits
from evalkit.execution.progress import Progress
from evalkit.execution.sampling import every_sample_hit_length, samples_of, select
from evalkit.execution.send import Paced, Sender, SendSettings, Tally
from evalkit.models.targets import Target
from evalkit.planning.plan import Group, Request
from evalkit.providers import Provider
from evalkit.records.cache import Cache
from evalkit.records.entries import RequestEntry, select_entry
from evalkit.records.fold import Prior
from evalkit.records.store import RunDir
from evalkit.scoring.grading import Grader
from evalkit.scoring.scoring import Scorer


class Dispatcher:
    """State shared by the workers of one run; `tally` is what they sent."""

    def __init__(
        self,
        run: RunDir,
        settings: SendSettings,
        progress: Progress,
        suite_folder: Path,
        judges: Mapping[str, Paced] | None = None,
        cache: Cache | None = None,
        budget: Budget | None = None,
        prior: Prior | None = None,
        topup: Mapping[str, Paced] | None = None,
    ) -> None:
        """`topup`: by model id, where a resampling round after the first goes instead (a
        batch run's `--batch-topup online`)."""
        self.run = run
        self.progress = progress
        self.scorer = Scorer(suite_folder)
        self.budget = budget or Budget(None)
        self.prior = prior or Prior()
        self.tally = Tally()
        self.sender = Sender(settings, cache, self.budget, self.prior.requests)
        self.grader = Grader(judges or {}, self.sender, run, self.tally, self.prior.judged)
        self.topup = topup or {}

    async def worker(
        self, target: Target, provider: Provider, limits: ModelLimits, work: Iterator[Group]
    ) -> None:
        for group in work:
            if target.label in self.tally.stopped_models or self.budget.exhausted:
                return
            try:
                await self.run_group(group, provider, limits)
            except BudgetReached:
                return

    async def run_group(self, group: Group, provider: Provider, limits: ModelLimits) -> None:
        """All samples of one case × variant × model, resampled and selected per the suite."""
        entries: list[RequestEntry] = []
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
            elif len(numbers) == 1:  # one sample: no task of its own to gather it
                request = group.request(numbers[0], max_tokens)
                round_entries = [await self.finish(request, group, provider, limits, rounds)]
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
                and every_sample_hit_length(_plain(round_entries))
            ):
                max_tokens = min(cap, max_tokens * 2)
                continue
            break
        found = samples_of(_plain(entries))
        chosen = select(group.select, found)
        if group.select != "all":
            slot = (group.case.key, group.variant, group.target.label)
            numbers_found = [number for number, _ in found]
            selection = select_entry(slot, group.select, numbers_found, chosen, rounds, max_tokens)
            if self.prior.selections.get(slot) != selection:
                self.run.append(selection)
        picked = {number: choice for number, choice in found if number in chosen}
        await self.grader.grade_group(group, cast(Mapping[int, Any], picked))

    async def finish(
        self, request: Request, group: Group, provider: Provider, limits: ModelLimits, round_: int
    ) -> RequestEntry:
        """Send (or reuse), score, journal and count one request."""
        if round_ > 0 and group.target.id in self.topup:
            _, provider, limits = self.topup[group.target.id]
        sent = await self.sender.send(request, provider, limits)
        entry = sent.entry
        entry["round"] = round_
        if entry.get("error_type") is None:
            await self.scorer.score(cast(dict[str, Any], entry), group.checks)
        entry["check_meta"] = {n: [c.weight, c.required] for n, c in group.checks.items()}
        if sent.reused is None or entry != sent.reused:  # reused: re-journaled only if rescored
            self.run.append(entry, sent.choices)
        if sent.reused is not None:
            self.tally.reused += 1
        self.account(group.target, entry)
        return entry

    def account(self, target: Target, entry: RequestEntry) -> None:
        self.tally.account(target, entry)
        tokens = (entry.get("prompt_tokens") or 0) + (entry.get("completion_tokens") or 0)
        error = entry.get("error_type") is not None
        cost = entry.get("cost_usd") or 0.0
        self.progress.record(target.label, tokens, cost, error, bool(entry.get("cached")))


def _plain(entries: list[RequestEntry]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], entries)
