"""Every failure a user can cause or meet is an `EvalkitError`; the CLI maps each to an exit code.

    EvalkitError              exit 4 unless a subclass says otherwise
    ├── InputError            exit 2: bad input, nothing was sent
    │   ├── SuiteError        problems in a suite, each `FILE:LINE: where: what`
    │   └── ConfigError       bad options, unknown models, missing API keys
    └── RunError              exit 3: a run that could not complete

Anything else that escapes is a bug (exit 4).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


class EvalkitError(Exception):
    """Base of every error evalkit raises on purpose."""

    exit_code = 4


class InputError(EvalkitError):
    """The user's input is wrong; nothing was sent to any model."""

    exit_code = 2


class ConfigError(InputError):
    """A bad option, an unknown model or endpoint, or a missing API key."""


class RunError(EvalkitError):
    """A run that could not complete (error rate, budget, interruption)."""

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


def did_you_mean(word: str, choices: list[str]) -> str:
    """A ' (did you mean ...?)' hint when one of `choices` is close to `word`, else ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
