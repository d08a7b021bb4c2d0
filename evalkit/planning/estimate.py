"""The cost estimate: before anything is sent, requests, tokens, what each model can cost,
and the cases that overflow a context window.

`evalkit run --dry-run` prints this, from the same planning pass as validation (`planner.py`);
every run checks the context windows by the same rule (`Planner.overflow`, `tokens.fits`), so
a case whose prompt plus `max_tokens` cannot fit its model is bad input (exit 2) unless
`--allow-overflow` says to send it anyway (the server will answer with an error row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, overload

from evalkit.errors import Problem, SuiteError
from evalkit.models.tokens import fits
from evalkit.planning.plan import Group
from evalkit.planning.planner import Planner, overflow_text
from evalkit.suite.spec import Suite


@dataclass
class ModelEstimate:
    model: str
    requests: int = 0  # first-round requests
    prompt_tokens: int = 0
    max_completion_tokens: int = 0
    min_cost_usd: float = 0.0  # every prompt paid, no completion
    max_cost_usd: float = 0.0  # every completion budget used, including max_tokens escalation
    batch_min_cost_usd: float = 0.0  # the same through the Batch API (--batch)
    batch_max_cost_usd: float = 0.0
    exact_tokens: bool = True  # False when the model's tokenizer is not available offline
    overflows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DryRun(Sequence[ModelEstimate]):
    """`evalkit run --dry-run`: the estimate of each model (this is a sequence of them), and
    the cases over a context window, which the run would refuse."""

    suite: str  # the suite's file
    estimates: list[ModelEstimate]
    problems: list[Problem]  # empty with allow_overflow
    batch: bool = False  # asked with --batch: the table shows the Batch API's costs too

    @overload
    def __getitem__(self, index: int) -> ModelEstimate: ...
    @overload
    def __getitem__(self, index: slice) -> list[ModelEstimate]: ...
    def __getitem__(self, index: int | slice) -> ModelEstimate | list[ModelEstimate]:
        return self.estimates[index]

    def __len__(self) -> int:
        return len(self.estimates)

    def __iter__(self) -> Iterator[ModelEstimate]:
        return iter(self.estimates)

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "models": [e.as_dict() for e in self.estimates]}

    def raise_for_problems(self) -> None:
        """A `SuiteError` naming every case over its context window, if there is one."""
        if self.problems:
            raise SuiteError(self.problems)


def estimate(planner: Planner) -> list[ModelEstimate]:
    """The dry-run estimate per model, case by case for every model (one walk)."""
    results = {
        t.label: ModelEstimate(t.label, exact_tokens=planner.counter(t).exact)
        for t in planner.targets
    }
    for planned in planner.walk():
        for group in planned.groups:
            _count(results[group.target.label], group, planner.prompt_tokens(group))
    return list(results.values())


def _count(result: ModelEstimate, group: Group, prompt: int) -> None:
    """One case × variant's first-round requests, added to its model's estimate."""
    info = group.target.info
    max_tokens = group.params.max_tokens
    budget = max_tokens if max_tokens is not None else max(1, info.context_window - prompt)
    rounds = _round_budgets(budget, group.max_tokens_cap if group.select != "all" else None)
    completion = sum(rounds) * (group.params.n or 1) * group.samples
    result.requests += group.samples
    result.prompt_tokens += prompt * group.samples
    result.max_completion_tokens += completion
    result.min_cost_usd += info.cost(prompt * group.samples, 0)
    result.max_cost_usd += info.cost(prompt * group.samples * len(rounds), completion)
    result.batch_min_cost_usd += info.cost(prompt * group.samples, 0, batch=True)
    result.batch_max_cost_usd += info.cost(
        prompt * group.samples * len(rounds), completion, batch=True
    )
    if not fits(prompt, max_tokens, info.context_window):
        result.overflows.append(
            {
                "case_id": group.case.key,
                "variant": group.variant,
                "prompt_tokens": prompt,
                "max_tokens": budget,
                "context_window": info.context_window,
            }
        )


def overflow_problems(suite: Suite, estimates: list[ModelEstimate]) -> list[Problem]:
    """One located problem per case that cannot fit a model's context window."""
    problems = []
    for model in estimates:
        for over in model.overflows:
            index = next(i for i, c in enumerate(suite.cases) if c.key == over["case_id"])
            file, line = suite.locator.line_of(("cases", index))
            what = overflow_text(
                over["case_id"],
                over["variant"],
                over["prompt_tokens"],
                over["max_tokens"],
                model.model,
                over["context_window"],
            )
            problems.append(Problem(file or suite.source, line, f"cases[{index}]", what))
    return problems


def _round_budgets(max_tokens: int, cap: int | None) -> list[int]:
    """max_tokens of each possible round: doubling up to the cap when resampling escalates."""
    rounds = [max_tokens]
    while cap is not None and rounds[-1] < cap:
        rounds.append(min(cap, rounds[-1] * 2))
    return rounds


def table(estimates: list[ModelEstimate], batch: bool = False) -> str:
    """The dry-run table, one line per model (`batch`: with the Batch API's costs beside)."""
    header = ["model", "requests", "prompt tokens", "max completion", "min $", "max $"]
    header += ["batch min $", "batch max $"] if batch else []
    rows = [(*header, "overflows")]
    for e in estimates:
        approx = "" if e.exact_tokens else "~"
        costs = [e.min_cost_usd, e.max_cost_usd]
        costs += [e.batch_min_cost_usd, e.batch_max_cost_usd] if batch else []
        rows.append(
            (
                e.model,
                f"{e.requests:,}",
                f"{approx}{e.prompt_tokens:,}",
                f"{e.max_completion_tokens:,}",
                *(f"{c:.4f}" for c in costs),
                str(len(e.overflows)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
