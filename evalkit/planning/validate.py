"""Whole-suite checks that need more than the schema: models, templates, endpoints, ids.

Validation walks the run's own planner (`planner.py`) collecting: every case's prompts and
expected values are rendered there, so a missing variable or a bad regex is found before
anything is sent, and the run reuses those renders. Problems are collected and located here,
not raised one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from evalkit.errors import Problem, TemplateError, UnknownModel, Unsendable, did_you_mean
from evalkit.models.targets import Target, resolve
from evalkit.planning.plan import Group, build_body
from evalkit.planning.planner import KEEP_BYTES, CasePlan, Failure, Planner, overflow_text
from evalkit.suite.checkspec import Check, JudgeArg, ModerationArg
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.gates import GateRule
from evalkit.suite.locate import show_path
from evalkit.suite.spec import Case, Suite

_MAX_PROBLEMS = 100

Spot = tuple[str | int, ...]  # a place in the suite, as `Locator.line_of` takes it


def check_suite(
    suite: Suite,
    models: list[ModelSpec] | None = None,
    environ: Mapping[str, str] | None = None,
    allow_overflow: bool = False,
) -> list[Problem]:
    """Every problem in `suite` that loading could not see; [] when it is ready to run.

    `models` replaces the suite's own list (the CLI's `--model`). A case whose prompt plus
    `max_tokens` cannot fit a model's context window is a problem unless `allow_overflow`.
    """
    return validated(suite, models, environ, allow_overflow, keep=0)[0]


def validated(
    suite: Suite,
    models: list[ModelSpec] | None = None,
    environ: Mapping[str, str] | None = None,
    allow_overflow: bool = False,
    samples: int | None = None,
    keep: int = KEEP_BYTES,
    cases: Sequence[int] | None = None,
) -> tuple[list[Problem], Planner]:
    """`check_suite`'s problems, and the planner they were found with: the run goes on with
    it, so what validation rendered (up to `keep` bytes) is not rendered again. `cases`: the
    indices of the cases to plan and render (a shard's), else all; ids are checked in all."""
    report = _Problems(suite)
    if not suite.cases:
        report.add(("cases",), "the suite has no cases")
    _check_ids(suite, report)
    targets = _resolve_models(suite, models, environ, report)
    planner = Planner(suite, targets, samples, keep, cases)
    sendable: set[tuple[object, ...]] = set()
    for planned in planner.walk(collect=True):
        if report.full:
            break
        for failure in planned.failures:
            report.add(*_locate(failure, planned))
        for group in planned.groups:
            if not allow_overflow:
                _check_window(planner, planned.index, group, report)
            _check_sendable(group, sendable, report)
        for index, check in enumerate(planned.case.expect):
            path = ("cases", planned.index, "expect", index)
            _check_judge(check, suite, path, environ, report)
    for index, check in enumerate(suite.checks):
        _check_judge(check, suite, ("checks", index), environ, report)
    labels = [target.label for target in planner.targets]
    for index, rule in enumerate(suite.gate):
        _check_gate(rule, index, suite, labels, report)
    return report.items, planner


class _Problems:
    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.items: list[Problem] = []
        self._seen: set[tuple[str, int, str]] = set()

    @property
    def full(self) -> bool:
        return len(self.items) >= _MAX_PROBLEMS

    def add(self, path: tuple[str | int, ...], what: str) -> None:
        file, line = self.suite.locator.line_of(path)
        if (file, line, what) in self._seen or self.full:
            return
        self._seen.add((file, line, what))
        self.items.append(Problem(file or self.suite.source, line, show_path(path), what))


def _template_spot(
    exc: TemplateError, case: Case, where: tuple[str | int, ...], variant: str
) -> tuple[str | int, ...]:
    """Where to point: the case's vars for a missing variable, else the broken template."""
    if exc.undefined:
        return (*where, "vars") if case.vars else where
    if exc.path[:1] == ("suffix",):
        return (*where, "suffix") if case.suffix is not None else ("suffix",)
    if case.messages is not None or case.prompt is not None:
        return (*where, *exc.path)
    return ("variants", variant, *exc.path) if variant else exc.path


def _in_variant(name: str) -> str:
    return f"variant '{name}': " if name else ""


def _check_ids(suite: Suite, report: _Problems) -> None:
    first: dict[str, int] = {}
    for index, case in enumerate(suite.cases):
        if case.key in first:
            file, line = suite.locator.line_of(("cases", first[case.key]))
            report.add(
                ("cases", index, "id"),
                f"duplicate case id '{case.key}' (first at {file}:{line})",
            )
        else:
            first[case.key] = index


def _resolve_models(
    suite: Suite,
    models: list[ModelSpec] | None,
    environ: Mapping[str, str] | None,
    report: _Problems,
) -> list[Target]:
    """The targets to run; each label once, since a run keeps each model's rows by label."""
    targets = []
    first: dict[str, int] = {}  # label -> index of the model that has it
    for index, spec in enumerate(models if models is not None else suite.models):
        where: tuple[str | int, ...] = ("models", index) if models is None else ()
        try:
            target = resolve(spec, suite.endpoints, environ)
        except UnknownModel as exc:
            report.add(where, str(exc))
            continue
        if target.label not in first:
            first[target.label] = index
            targets.append(target)
        elif models is not None:
            report.add(where, f"--model {spec.id} is given twice")
        else:
            file, line = suite.locator.line_of(("models", first[target.label]))
            report.add(
                (*where, "label") if spec.label else where,
                f"two models are labelled '{target.label}' (first at {file}:{line}), so one's "
                "results would replace the other's: give each a distinct label",
            )
    return targets


def _locate(failure: Failure, planned: CasePlan) -> tuple[Spot, str]:
    """Where a failure of the planning pass points, and what it says."""
    case, exc, variant = planned.case, failure.error, failure.variant
    where: Spot = ("cases", planned.index)
    if isinstance(exc, TemplateError) and failure.stage == "prompt":
        what = f"{_in_variant(variant)}{exc.field}: {exc.what}"
        return _template_spot(exc, case, where, variant), f"case '{case.key}': {what}"
    if isinstance(exc, TemplateError) and failure.stage == "check":
        return failure.path, f"case '{case.key}': check {exc.field}: {exc.what}"
    if failure.stage == "check":  # a templated regex that does not compile
        return failure.path, f"case '{case.key}': {exc}"
    if isinstance(exc, TemplateError):  # in a tool definition
        return ("params",), f"case '{case.key}': {exc.field}: {exc.what}"
    if isinstance(exc, ValidationError):  # e.g. a case's tool_choice naming no declared tool
        spot = (*where, "params") if case.params else ("params",)
        return spot, f"case '{case.key}': {exc.errors()[0]['msg']}"
    spot = ("prompt",)  # an endpoint the model does not have
    if failure.rendered is not None and failure.rendered.suffix is not None:
        spot = ("suffix",)
    elif variant:
        spot = ("variants", variant)
    return spot, f"{_in_variant(variant)}{exc}"


def _check_window(planner: Planner, index: int, group: Group, report: _Problems) -> None:
    """Prompt plus max_tokens must fit the context window (the estimate's rule)."""
    tokens = planner.overflow(group)
    if tokens is not None:
        target, case = group.target, group.case
        window = target.info.context_window
        what = overflow_text(
            case.key, group.variant, tokens, group.params.max_tokens, target.label, window
        )
        report.add(("cases", index), what)


def _check_sendable(group: Group, sendable: set[tuple[object, ...]], report: _Problems) -> None:
    """The body each (model, variant, prompt shape, params) makes, checked once."""
    target, rendered, params = group.target, group.rendered, group.params
    key = (
        target.id,
        group.variant,
        rendered.is_chat,
        rendered.suffix is not None,
        tuple(params.set_values()),
    )
    if key in sendable:
        return
    sendable.add(key)
    if group.endpoint == "responses" and _responses_problem(group, report):
        return
    try:
        build_body(group.endpoint, target.model, rendered, params, target.info.reasoning)
    except Unsendable as exc:
        report.add(("params",), f"{target.id}: {exc}")
    if target.info.reasoning and group.resample_temperature not in (None, 1):
        report.add(
            ("resample_temperature",),
            f"{target.id} is a reasoning model: it takes only the default temperature 1, so "
            "resample_temperature cannot apply to it",
        )
    if target.provider == "local":
        unsupported = [
            n for n in ("tools", "functions", "tool_choice") if getattr(params, n) is not None
        ]
        if params.response_format is not None and params.response_format.type == "json_schema":
            unsupported.append("response_format json_schema")
        if unsupported:
            what = ", ".join(unsupported)
            report.add(("params",), f"{target.id}: local models do not support {what}")


def _responses_problem(group: Group, report: _Problems) -> bool:
    """What no body can fix on the Responses API (kind: responses); True when found."""
    target = group.target
    if target.provider == "local":
        report.add(("models",), f"{target.id}: local models do not speak the Responses API")
        return True
    if group.select == "best_logprob":
        report.add(
            ("select",),
            f"{target.id}: select: best_logprob ranks samples by their logprobs, which the "
            "Responses API (kind: responses) does not return; use first_stop or until_stop",
        )
        return True
    return False


def _check_gate(
    rule: GateRule, index: int, suite: Suite, labels: list[str], report: _Problems
) -> None:
    """Every name a gate rule uses is a model, variant or check of this run."""
    names = {
        "model": labels,
        "variant": [v for v in suite.variant_prompts() if v],
        "check": sorted(
            {c.label for c in [*suite.checks, *(c for case in suite.cases for c in case.expect)]}
        ),
    }
    used: list[tuple[str, str | None, str]] = []  # (what it names, the name, its key)
    if rule.pass_rate is not None:
        used = [(k, getattr(rule.pass_rate, k), k) for k in ("model", "variant", "check")]
    elif (comparison := rule.comparison) is not None:
        side = comparison.dimension
        used = [(side, comparison.side, side), (side, comparison.than, "than")]
    for what, name, key in used:
        if name is None or name in names[what]:
            continue
        known = ", ".join(names[what]) or "none"
        problem = f"{what} '{name}' is not one of this run's {what}s ({known})"
        problem += did_you_mean(name, names[what])
        if rule.expression is not None:  # from the command line: no line to point at
            report.items.append(Problem("--gate", 0, "", f"{rule.expression!r}: {problem}"))
        else:
            report.add(("gate", index, rule.kind, key), problem)


def _check_judge(
    check: Check,
    suite: Suite,
    path: tuple[str | int, ...],
    environ: Mapping[str, str] | None,
    report: _Problems,
) -> None:
    if check.kind not in ("judge", "moderation"):
        return
    if check.kind == "judge":
        model = JudgeArg.model_validate(check.arg).model
    else:
        model = ModerationArg.model_validate(check.arg if isinstance(check.arg, dict) else {}).model
    try:
        target = resolve(ModelSpec(id=model), suite.endpoints, environ)
    except (UnknownModel, ValueError) as exc:  # or a reference not written provider/model
        report.add(path, f"{check.kind}: {exc}")
        return
    if (target.info.kind == "moderation") != (check.kind == "moderation"):
        what = "a moderation model" if check.kind == "moderation" else "a chat or completions model"
        report.add(path, f"{check.kind}: {model} is not {what}")
