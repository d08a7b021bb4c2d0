"""Whole-suite checks that need more than the schema: models, templates, endpoints, ids.

Every case's prompt and expected values are rendered here, so a missing variable or a bad
regex is found before anything is sent. Problems are collected, not raised one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from evalkit.checkspec import Check, JudgeArg, ModerationArg, compile_regex
from evalkit.errors import Problem, TemplateError, UnknownModel, Unsendable
from evalkit.locate import show_path
from evalkit.plan import build_body, endpoint_for, layered_params, templated_tools
from evalkit.render import Rendered, Renderer
from evalkit.suite import Case, ModelSpec, Params, Suite, Variant
from evalkit.targets import Target, resolve
from evalkit.tokens import Counter, fits

_MAX_PROBLEMS = 100


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
    report = _Problems(suite)
    if not suite.cases:
        report.add(("cases",), "the suite has no cases")
    _check_ids(suite, report)
    targets = _resolve_models(suite, models, environ, report)
    context = _Context(suite, Renderer(), targets, report, allow_overflow)
    renderer = context.renderer
    variants = suite.variant_prompts()
    for index, case in enumerate(suite.cases):
        if report.full:
            break
        where = ("cases", index)
        for variant_name, variant in variants.items():
            try:
                rendered = renderer.prompt(suite, variant, case)
            except TemplateError as exc:
                what = f"case '{case.key}': {_in_variant(variant_name)}{exc.field}: {exc.what}"
                report.add(_template_spot(exc, case, where, variant_name), what)
                continue
            _check_endpoints(context, index, case, (variant_name, variant), rendered)
        path: tuple[str | int, ...]
        for index_in_suite, check in enumerate(suite.checks):
            path = ("checks", index_in_suite)
            _check_check(renderer, check, case.vars, case.key, path, report)
        for index_in_case, check in enumerate(case.expect):
            path = (*where, "expect", index_in_case)
            _check_check(renderer, check, case.vars, case.key, path, report)
            _check_judge(check, suite, path, environ, report)
    for index, check in enumerate(suite.checks):
        _check_judge(check, suite, ("checks", index), environ, report)
    return report.items


@dataclass
class _Context:
    """What the per-case checks share: the renderer, the models, and memos across cases."""

    suite: Suite
    renderer: Renderer
    targets: list[Target]
    report: _Problems
    allow_overflow: bool
    sendable: set[tuple[object, ...]] = field(default_factory=set)
    layers: dict[tuple[str, int], Params] = field(default_factory=dict)
    counters: dict[str, Counter] = field(default_factory=dict)


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


def _check_endpoints(
    context: _Context,
    index: int,
    case: Case,
    variant: tuple[str, Variant | None],
    rendered: Rendered,
) -> None:
    """Each (model, variant, prompt shape, params) is checked once; the window per case."""
    name, spec = variant
    suite, report = context.suite, context.report
    for target in context.targets:
        try:
            layered = layered_params(suite, target, spec, case, context.layers)
            params = templated_tools(context.renderer, layered, case)
        except ValidationError as exc:  # e.g. a case's tool_choice naming no declared tool
            where = ("cases", index, "params") if case.params else ("params",)
            report.add(where, f"case '{case.key}': {exc.errors()[0]['msg']}")
            continue
        except TemplateError as exc:
            report.add(("params",), f"case '{case.key}': {exc.field}: {exc.what}")
            continue
        if not context.allow_overflow:
            _check_window(context, index, case, name, rendered, params, target)
        key = (
            target.id,
            name,
            rendered.is_chat,
            rendered.suffix is not None,
            tuple(params.set_values()),
        )
        if key in context.sendable:
            continue
        context.sendable.add(key)
        path: tuple[str | int, ...] = ("prompt",)
        if rendered.suffix is not None:
            path = ("suffix",)
        elif name:
            path = ("variants", name)
        try:
            endpoint = endpoint_for(rendered, target.info)
        except Unsendable as exc:
            report.add(path, f"{_in_variant(name)}{exc}")
            continue
        try:
            build_body(endpoint, target.model, rendered, params)
        except Unsendable as exc:
            report.add(("params",), f"{target.id}: {exc}")
        if target.provider == "local":
            unsupported = [
                n for n in ("tools", "functions", "tool_choice") if getattr(params, n) is not None
            ]
            if params.response_format is not None and params.response_format.type == "json_schema":
                unsupported.append("response_format json_schema")
            if unsupported:
                what = ", ".join(unsupported)
                report.add(("params",), f"{target.id}: local models do not support {what}")


def _check_window(
    context: _Context,
    index: int,
    case: Case,
    variant: str,
    rendered: Rendered,
    params: Params,
    target: Target,
) -> None:
    """Prompt plus max_tokens must fit the context window. A prompt's UTF-8 bytes bound its
    tokens, so the tokenizer runs only for the rare prompt that might not fit."""
    window = target.info.context_window
    max_tokens = params.max_tokens or 1
    if rendered.is_chat:
        texts = [str(v) for message in rendered.messages or () for _, v in message]
        overhead = 4 * len(texts) + 3
    else:
        texts = [rendered.prompt or "", rendered.suffix or ""]
        overhead = 0
    if fits(sum(len(t.encode("utf-8")) for t in texts) + overhead, params.max_tokens, window):
        return  # UTF-8 bytes (plus the per-message overhead) bound the prompt's tokens
    counter = context.counters.setdefault(target.id, Counter(target.info))
    if rendered.is_chat:
        prompt = counter.body({"messages": rendered.message_dicts()})
    else:
        prompt = counter.body({"prompt": rendered.prompt or "", "suffix": rendered.suffix})
    if not fits(prompt, params.max_tokens, window):
        context.report.add(
            ("cases", index),
            f"case '{case.key}': {_in_variant(variant)}{prompt} prompt tokens + max_tokens "
            f"{max_tokens} exceed {target.label}'s context window of {window} "
            "(use --allow-overflow to send it anyway)",
        )


def _check_check(
    renderer: Renderer,
    check: Check,
    variables: dict[str, object],
    case_id: str,
    path: tuple[str | int, ...],
    report: _Problems,
) -> None:
    try:
        rendered = renderer.check(check, dict(variables), (check.label,))
        if rendered.kind == "regex":
            compile_regex(rendered.arg)
    except TemplateError as exc:
        report.add(path, f"case '{case_id}': check {exc.field}: {exc.what}")
    except PydanticCustomError as exc:
        report.add(path, f"case '{case_id}': {exc.message()}")


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
