"""The planning pass: one per run, shared by validation, the estimate, resume and the run.

Validation walks the planner (collecting what cannot be rendered or sent, located later by
`validate.py`), the estimate and `--resume` walk it again, and each model's workers pull
that model's stream from it. A case's prompts and checks are rendered once and held only
until every model's stream has passed the case, so a 100,000-case suite never sits in memory
as renders or requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from evalkit.errors import TemplateError, Unsendable
from evalkit.models.targets import Target
from evalkit.models.tokens import (
    IMAGE_MAX_TOKENS,
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    Counter,
    fits,
)
from evalkit.planning.plan import Group, Request, check_columns, endpoint_for, layered_params
from evalkit.suite.checkspec import Check, compile_regex
from evalkit.suite.params import Params
from evalkit.suite.render import Rendered, Renderer
from evalkit.suite.spec import Case, Suite, Variant


@dataclass
class Renders:
    """What a planner has rendered: prompts (case × variant), checks (case × check), and
    tool definitions (case × distinct definitions)."""

    prompts: int = 0
    checks: int = 0
    tools: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """What a collecting walk found instead of raising: the stage, the error, and where."""

    stage: Literal["prompt", "check", "params", "endpoint"]
    error: TemplateError | Unsendable | ValidationError | PydanticCustomError
    variant: str = ""
    rendered: Rendered | None = None  # the prompt an endpoint could not take
    path: tuple[str | int, ...] = ()  # where a check is written in the suite


@dataclass(frozen=True, slots=True)
class CasePlan:
    """One case for every variant and model: its groups, and (collecting) its failures."""

    index: int
    case: Case
    groups: list[Group]
    failures: list[Failure]


@dataclass(slots=True)
class _Held:
    """One case's renders, kept for the passes that have not reached the case yet."""

    case: Case
    prompts: dict[str, Rendered]  # by variant
    checks: dict[str, Check]  # by column name
    tools: dict[str, dict[str, Any]]  # rendered tool definitions by their source (JSON)
    size: int  # estimated bytes
    waiting: int = 0  # model streams still to pass this case


KEEP_BYTES = 128 * 2**20  # how much of its renders (estimated) a planner holds for later passes
_CASE_BYTES = 800  # one held case beyond its text (measured: ~820 bytes for a one-message prompt)


class Planner:
    """The one planning pass of a run: a case's prompts (per variant) and checks are rendered
    once, shared by validation, the estimate, resume and every model's stream.

    Renders are held until every model's stream has passed their case, up to `keep`
    estimated bytes; past that a later pass renders the case again. `renders` counts what
    was rendered (so a test can tell a case was rendered once).
    """

    def __init__(
        self,
        suite: Suite,
        targets: list[Target],
        samples: int | None = None,
        keep: int = KEEP_BYTES,
        cases: Sequence[int] | None = None,
    ) -> None:
        self.suite = suite
        # the indices of the cases this run plans, in the suite's order: all, or a shard's
        self.cases: Sequence[int] = range(len(suite.cases)) if cases is None else cases
        self.targets = targets
        self.samples = samples or suite.samples
        self.keep = keep
        self.renders = Renders()
        self._renderer = Renderer(Path(suite.source).parent if suite.source else None)
        self._variants = suite.variant_prompts()
        self._layers: dict[tuple[str, int], Params] = {}
        self._held: dict[int, _Held] = {}
        self._held_bytes = 0
        self._passed = {t.id: 0 for t in targets}  # cases each model's stream has passed
        self._counters: dict[str, Counter] = {}

    @property
    def requests_per_model(self) -> int:
        """First-round requests per model: cases × variants × samples."""
        return len(self.cases) * len(self._variants) * self.samples

    @property
    def held(self) -> int:
        """How many cases' renders are held for passes still to come."""
        return len(self._held)

    def groups(self, target: Target) -> Iterator[Group]:
        """One model's stream, case by case, lazily (the model's workers share it)."""
        self._passed.setdefault(target.id, 0)
        for index in self.cases:
            held = self._case(index)
            for name, variant in self._variants.items():
                yield self._group(held, name, variant, target)
            self._pass(target, index)

    def walk(self, collect: bool = False) -> Iterator[CasePlan]:
        """Every case for every model, case by case, without moving any model's stream.

        Collecting, what cannot be rendered or sent is a `Failure` of its case and the walk
        goes on; otherwise it raises.
        """
        for index in self.cases:
            case = self.suite.cases[index]
            failures: list[Failure] | None = [] if collect else None
            held = self._case(index, failures)
            groups = []
            for name, variant in self._variants.items():
                if name not in held.prompts:
                    continue  # its failure is recorded
                for target in self.targets:
                    try:
                        groups.append(self._group(held, name, variant, target))
                    except (ValidationError, TemplateError) as exc:
                        if failures is None:
                            raise
                        failures.append(Failure("params", exc, name))
                    except Unsendable as exc:
                        if failures is None:
                            raise
                        failures.append(Failure("endpoint", exc, name, held.prompts[name]))
            yield CasePlan(index, case, groups, failures or [])

    def first_round_keys(self) -> dict[tuple[str, str, str], set[str]]:
        """The first-round request keys of each case × variant × model label (for resume)."""
        return {
            (group.case.key, group.variant, group.target.label): {
                request.key for request in group.first_round()
            }
            for case in self.walk()
            for group in case.groups
        }

    def counter(self, target: Target) -> Counter:
        counter = self._counters.get(target.id)
        if counter is None:
            counter = self._counters[target.id] = Counter(target.info)
        return counter

    def prompt_tokens(self, group: Group) -> int:
        """The prompt tokens of the group's requests, counted on what is sent."""
        return self.counter(group.target).body(group.prompt_part())

    def overflow(self, group: Group) -> int | None:
        """The prompt tokens when prompt + max_tokens cannot fit the model's context window
        (`tokens.fits`, as the estimate decides), else None. UTF-8 bytes bound the tokens,
        so the tokenizer runs only for the rare prompt that might not fit."""
        part = group.prompt_part()
        window, max_tokens = group.target.info.context_window, group.params.max_tokens
        if fits(_byte_bound(part), max_tokens, window):
            return None
        tokens = self.counter(group.target).body(part)
        return None if fits(tokens, max_tokens, window) else tokens

    def _case(self, index: int, failures: list[Failure] | None = None) -> _Held:
        """The case's renders: held ones, or rendered now and held if a stream will want them."""
        held = self._held.get(index)
        if held is None:
            held = self._render(index, failures)
            waiting = sum(1 for passed in self._passed.values() if passed <= index)
            if not failures and waiting and self._held_bytes + held.size <= self.keep:
                held.waiting = waiting
                self._held[index] = held
                self._held_bytes += held.size
        return held

    def _pass(self, target: Target, index: int) -> None:
        """`target`'s stream is past case `index`: the last one to pass releases it."""
        self._passed[target.id] = index + 1
        held = self._held.get(index)
        if held is not None:
            held.waiting -= 1
            if held.waiting <= 0:
                del self._held[index]
                self._held_bytes -= held.size

    def _render(self, index: int, failures: list[Failure] | None) -> _Held:
        case = self.suite.cases[index]
        prompts: dict[str, Rendered] = {}
        size = _CASE_BYTES
        for name, variant in self._variants.items():
            self.renders.prompts += 1
            try:
                prompts[name] = rendered = self._renderer.prompt(self.suite, variant, case)
            except TemplateError as exc:
                if failures is None:
                    raise
                failures.append(Failure("prompt", exc, name))
                continue
            size += _text_size(rendered)
        checks: dict[str, Check] = {}
        paths: list[tuple[str | int, ...]] = [("checks", i) for i in range(len(self.suite.checks))]
        paths += [("cases", index, "expect", i) for i in range(len(case.expect))]
        named = check_columns([*self.suite.checks, *case.expect])
        for (name, check), path in zip(named.items(), paths, strict=True):
            self.renders.checks += 1
            try:
                checks[name] = done = self._renderer.check(check, case.vars, (check.label,))
                if done.kind == "regex":
                    compile_regex(done.arg)
            except (TemplateError, PydanticCustomError) as exc:
                if failures is None:
                    raise
                failures.append(Failure("check", exc, path=path))
        return _Held(case, prompts, checks, {}, size)

    def _group(self, held: _Held, name: str, variant: Variant | None, target: Target) -> Group:
        params = layered_params(self.suite, target, variant, held.case, self._layers)
        if params.tools is not None or params.functions is not None:
            params = self._tools(held, params)
        if self.suite.select == "best_logprob" and params.logprobs in (None, False):
            params = Params.model_validate({**params.set_values(), "logprobs": True})
        rendered = held.prompts[name]
        endpoint = endpoint_for(rendered, target.info)
        cap = self.suite.max_tokens_cap
        if cap is None and params.max_tokens is not None:
            cap = 4 * params.max_tokens
        return Group(
            held.case,
            name,
            target,
            endpoint,
            rendered,
            params,
            held.checks,
            self.samples,
            self.suite.select,
            cap,
            self.suite.resample_temperature,
        )

    def _tools(self, held: _Held, params: Params) -> Params:
        """Tool and function definitions are templates too: rendered with the case's vars,
        once per case and definition whichever models share it."""
        values = params.set_values()
        source = json.dumps([values.get("tools"), values.get("functions")], sort_keys=True)
        rendered = held.tools.get(source)
        if rendered is None:
            self.renders.tools += 1
            rendered = {
                key: self._renderer.leaves(values[key], held.case.vars, ("params", key))
                for key in ("tools", "functions")
                if key in values
            }
            held.tools[source] = rendered
        if all(rendered[key] == values[key] for key in rendered):
            return params
        return Params.model_validate({**values, **rendered})


def _text_size(rendered: Rendered) -> int:
    size = len(rendered.prompt or "") + len(rendered.suffix or "")
    for message in rendered.messages or ():
        for _, value in message:
            size += len(value) if isinstance(value, str) else sum(len(p[1]) for p in value)
    return size


def _byte_bound(part: dict[str, Any]) -> int:
    """At least `Counter.body(part)`: no token is shorter than one UTF-8 byte, and no image
    costs more than IMAGE_MAX_TOKENS."""
    if "messages" in part:
        return REPLY_PRIMING + sum(
            TOKENS_PER_MESSAGE + TOKENS_PER_NAME + sum(map(_value_bound, message.values()))
            for message in part["messages"]
        )
    return sum(len(v.encode("utf-8")) for v in part.values() if isinstance(v, str))


def _value_bound(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):  # content parts
        return sum(
            IMAGE_MAX_TOKENS
            if p.get("type") == "image_url"
            else len(str(p.get("text", "")).encode("utf-8"))
            for p in value
        )
    return 0


def overflow_text(
    case_id: str, variant: str, prompt: int, max_tokens: int | None, model: str, window: int
) -> str:
    """What validation and the dry run say of a case over a model's context window."""
    in_variant = f"variant '{variant}': " if variant else ""
    return (
        f"case '{case_id}': {in_variant}{prompt} prompt tokens + max_tokens {max_tokens or 1} "
        f"exceed {model}'s context window of {window} (use --allow-overflow to send it anyway)"
    )


def plan(suite: Suite, target: Target, samples: int | None = None) -> Iterator[Request]:
    """Every first-round request for `target`, case by case, lazily."""
    for group in Planner(suite, [target], samples).groups(target):
        yield from group.first_round()
