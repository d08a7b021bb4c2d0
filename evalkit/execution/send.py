"""Sending one request, in one place: reuse → cache → budget → limits → retries → entry.

A request a resumed run already answered is reused (nothing is sent); one the cache holds is
answered from it (free); one the budget cannot cover is refused (`BudgetReached`); the rest
wait for their model's limits and go out, retried per `retry.with_retries`. What comes back
is one request entry (`records.request_entry`), answer or error, never an exception from
the server. The tally counts what was sent for the run's summary and exit status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from evalkit.execution.budget import Budget, BudgetReached, max_cost
from evalkit.execution.limits import ModelLimits
from evalkit.execution.retry import with_retries
from evalkit.models.targets import Target
from evalkit.models.tokens import Counter
from evalkit.planning.plan import Request
from evalkit.providers import Completion, Provider, ProviderError
from evalkit.records.cache import Cache
from evalkit.records.encoding import encode
from evalkit.records.entries import ChoiceRecord, Provenance, RequestEntry, answer_of, request_entry
from evalkit.records.store import now_iso

# errors that will fail every request to the model: stop sending to it after the first
FATAL_FOR_MODEL = frozenset({"auth", "not_found", "insufficient_quota"})
# requests in a row that could not connect, each after all its retries: the server is down
# (or the base URL wrong), and the rest would each spend their retries finding that out
UNREACHABLE_AFTER = 10

Paced = tuple[Target, Provider, ModelLimits]  # a model, what sends to it, and its limits


@dataclass(frozen=True)
class SendSettings:
    """How hard to try: `--max-retries` attempts in all, back-off starting at `retry_initial_s`."""

    max_retries: int = 8
    retry_initial_s: float = 0.5
    batch: bool = False  # sent through the Batch API: reserved at its price


@dataclass(slots=True)
class Sent:
    """One request's entry; `choices`: its answer's choices as JSON text (for the journal
    line, see records.journal_line); `reused`: the earlier session's entry it copies."""

    entry: RequestEntry
    choices: list[str] | None = None
    reused: RequestEntry | None = None


class Sender:
    """Sends the requests of one run."""

    def __init__(
        self,
        settings: SendSettings,
        cache: Cache | None = None,
        budget: Budget | None = None,
        reusable: Mapping[str, RequestEntry] | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.budget = budget or Budget(None)
        self.reusable = reusable or {}
        self._counters: dict[str, Counter] = {}

    async def send(self, request: Request, provider: Provider, limits: ModelLimits) -> Sent:
        """The request's entry; raises BudgetReached when it may not be sent."""
        prior = self.reusable.get(request.key)
        if prior is not None:
            entry = cast(RequestEntry, dict(prior))
            entry["choices"] = [cast(ChoiceRecord, dict(c)) for c in prior.get("choices") or []]
            # the key hashes the body: another case with the same prompt has the same key,
            # and its answer is this case's only once it names this case
            entry["case_id"], entry["variant"] = request.case.key, request.variant
            entry["vars"], entry["must_pass"] = request.case.vars, request.case.must_pass
            return Sent(entry, reused=prior)
        started_at = now_iso()
        if self.cache is not None:
            cached = self.cache.get(request.key)
            if cached is not None:
                provenance = Provenance(started_at, 0, cached=True)
                return Sent(request_entry(request, cached.answer, provenance), cached.choices)
        reserved = 0.0
        if self.budget.limit is not None:
            reserved = self.most_cost(request)
            if not self.budget.reserve(reserved):
                raise BudgetReached()
        tokens = 0
        if limits.counts_tokens:
            tokens = len(request.wire) // 4 + (request.max_tokens or 256) * request.choices
        try:
            outcome, attempts = await with_retries(
                lambda: _attempt(request, provider, limits, tokens),
                self.settings.max_retries,
                self.settings.retry_initial_s,
            )
        except BaseException:
            self.budget.settle(reserved, 0.0)
            raise
        if isinstance(outcome, ProviderError):
            self.budget.settle(reserved, 0.0)
            provenance = Provenance(started_at, attempts, batch_id=outcome.batch_id)
            return Sent(request_entry(request, outcome, provenance))
        encoded = encode(answer_of(outcome))
        provenance = Provenance(started_at, attempts, batch_id=outcome.extra.get("batch_id"))
        entry = request_entry(request, encoded.answer, provenance)
        charged = entry["cost_usd"]
        if charged is None:  # no believable usage: charge the most the request could cost
            charged = reserved or self.most_cost(request)
            entry["charged_usd"] = charged
        self.budget.settle(reserved, charged)
        if self.cache is not None:
            self.cache.put(request, encoded.row())
        return Sent(entry, encoded.choices)

    def would_send(self, request: Request) -> bool:
        """Whether `send` would send it: neither an earlier session's answer nor cached."""
        if request.key in self.reusable:
            return False
        return self.cache is None or not self.cache.holds(request.key)

    def most_cost(self, request: Request) -> float:
        """What `send` would reserve for it against `--max-cost`."""
        return max_cost(request, self._counter(request.target), self.settings.batch)

    def _counter(self, target: Target) -> Counter:
        if target.id not in self._counters:
            self._counters[target.id] = Counter(target.info)
        return self._counters[target.id]


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


@dataclass
class Tally:
    """What this session sent, per model and in all (graders' calls count per model only)."""

    requests: int = 0
    errors: int = 0
    reused: int = 0  # answers an earlier session journaled, not sent again
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped_models: dict[str, str] = field(default_factory=dict)  # label -> why
    unreachable: dict[str, int] = field(
        default_factory=dict
    )  # label -> connection failures in a row

    @property
    def cached(self) -> int:
        return sum(int(s.get("cached", 0)) for s in self.per_model.values())

    def account(self, target: Target, entry: RequestEntry, judge: bool = False) -> None:
        error = entry.get("error_type") is not None
        label = f"{target.label} (judge)" if judge else target.label
        stats = self.per_model.setdefault(
            label, {"requests": 0, "errors": 0, "cached": 0, "cost_usd": 0.0}
        )
        stats["requests"] += 1
        stats["errors"] += error
        stats["cached"] += bool(entry.get("cached"))
        stats["cost_usd"] += entry.get("cost_usd") or 0.0
        if judge:
            return
        self.requests += 1
        self.errors += error
        error_type = entry.get("error_type")
        if error_type in FATAL_FOR_MODEL and target.label not in self.stopped_models:
            self.stopped_models[target.label] = (
                f"{target.label}: {entry.get('error')}; stopped sending to this model"
            )
        if entry.get("cached"):
            return
        in_a_row = self.unreachable.get(target.label, 0) + 1 if error_type == "connection" else 0
        self.unreachable[target.label] = in_a_row
        if in_a_row >= UNREACHABLE_AFTER and target.label not in self.stopped_models:
            self.stopped_models[target.label] = (
                f"{target.label}: {in_a_row} requests in a row could not connect "
                f"({entry.get('error')}); stopped sending to this model"
            )
