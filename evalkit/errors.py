"""Every failure a user can cause or meet is an `EvalkitError`; `exit_code` maps it to a code.

    EvalkitError              exit 4 unless a subclass says otherwise
    ├── InputError            exit 2: bad input, nothing was sent
    │   ├── SuiteError        problems in a suite, each `FILE:LINE: where: what`
    │   ├── TemplateError     a template that cannot be compiled or rendered
    │   ├── Unsendable        a prompt or parameter a model's endpoint cannot take
    │   ├── UsageError        a bad command-line option or argument (a bad --shard too)
    │   ├── MergeError        shard runs that cannot be merged: which input, and why
    │   └── ConfigError       bad options, unknown models, missing API keys
    │       └── UnknownModel  a model reference that cannot be used
    └── RunError              exit 3: a run whose journal, manifest or report cannot be written

A run that stops early for another reason (error rate, `--max-cost`, a signal) is no
exception: it returns a `RunResult` with that status, and `exit_code` makes it 3 too.

Validation turns `TemplateError`, `Unsendable` and `UnknownModel` into the `Problem`s of one
`SuiteError`; calling `Renderer`, `plan` or `resolve` directly raises them as they are.

These stay inside the modules that raise them, because they never reach the user as
exceptions: each is caught where it is raised and becomes something the user reads.

- `providers.ProviderError`: a request that failed; the sender retries it or journals
  an error record (its `error_type` and message are the report's error columns).
- `execution.budget.BudgetReached`: the next request would pass `--max-cost`; the run ends with
  status `budget`, which is exit 3.
- `suite.render_budget.RenderLimit` (and `TooSlow`): a template asked for too much;
  `suite/render.py` turns it into a `TemplateError`.
- `suite.images.NotAnImage`: a file or data URL that is no picture evalkit can send;
  `suite/render.py` turns it into a `TemplateError` at the line of the image.
- `scoring.threads.TimedOut`, `scoring.threads.TooManyStuck`: a check ran past its time
  limit or was not started; `scoring/scoring.py` turns them into a failed check with the reason.

Anything else that escapes is a bug (exit 4).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from evalkit.suite.locate import show_path


class EvalkitError(Exception):
    """Base of every error evalkit raises on purpose."""

    exit_code = 4


class InputError(EvalkitError):
    """The user's input is wrong; nothing was sent to any model."""

    exit_code = 2


class ConfigError(InputError):
    """A bad option, an unknown model or endpoint, or a missing API key."""


class UnknownModel(ConfigError):
    """A model reference that cannot be used: no known model or endpoint, or an unusable
    base URL or API key."""


class UsageError(InputError):
    """A command line typer could not parse: an unknown option, a bad value, a missing
    argument (typer has printed the usage)."""


class MergeError(InputError):
    """Run directories that `evalkit merge` refuses to put together (another suite, other
    models, a shard missing or given twice, one that did not complete); the message names
    the input and says why, since a merge that dropped a shard would look complete."""


class Unsendable(InputError):
    """A prompt or parameter this model's endpoint cannot take; the message says why."""


class TemplateError(InputError):
    """A template that cannot be compiled or rendered; `what` says why, `path` where.

    `undefined` tells a variable the case lacks (the case is at fault) from a broken
    template (the template is at fault), so the error can point at the right line.
    """

    def __init__(self, what: str, path: tuple[str | int, ...], undefined: bool = False) -> None:
        self.what = what
        self.path = path
        self.undefined = undefined
        self.field = show_path(path)
        super().__init__(f"{self.field}: {what}")


class RunError(EvalkitError):
    """A run, or its report, that cannot be written to the end (a full disk, a read-only
    folder); the message says what is kept and how to go on."""

    exit_code = 3


@dataclass(frozen=True)
class Problem:
    """One problem in a suite, located in the file the user wrote."""

    file: str
    line: int
    where: str
    what: str

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        place = f"{self.file}:{self.line}:" if self.line else f"{self.file}:"
        return f"{place}{where} {self.what}"


class SuiteError(InputError):
    """One or more problems in a suite; all are reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        super().__init__("\n".join(str(p) for p in self.problems))


INCONCLUSIVE = 5  # `run --sequential` stopped by --max-cases or --max-cost, undecided


def exit_code(
    error: BaseException | None = None,
    *,
    complete: bool = True,
    failed: bool = False,
    gates: Sequence[bool] | None = None,
    inconclusive: bool = False,
) -> int:
    """The exit code of a command; decided here and nowhere else (docs/design.md).

    With an `error`: its `exit_code` for an `EvalkitError` (2 bad input, 3 a run that could
    not complete), 3 for an interruption, 4 for anything else (a bug). Without: 3 when the
    run did not `complete`; then, when a gate was declared (`gates`: whether each of its
    rules held, the `--baseline` comparison included), 1 when one failed and 0 when all held,
    whatever samples failed; without a gate, 1 when it `failed` (a kept sample failed a
    required check), 0 when all is good. A sequential run that stopped undecided, complete
    or stopped by `--max-cost`, is `inconclusive`: INCONCLUSIVE (5), before any gate.
    """
    if error is not None:
        if isinstance(error, EvalkitError):
            return error.exit_code
        return 3 if isinstance(error, KeyboardInterrupt) else 4
    if not complete:
        return RunError.exit_code
    if inconclusive:
        return INCONCLUSIVE
    if gates is not None:
        return 0 if all(gates) else 1
    return 1 if failed else 0


def did_you_mean(word: str, choices: list[str]) -> str:
    """A ' (did you mean ...?)' hint when one of `choices` is close to `word`, else ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
