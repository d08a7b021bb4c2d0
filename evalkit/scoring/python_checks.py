"""The `python` check: a function from the suite's folder, called on each output.

This runs the suite author's code: only use suites you trust. Whatever it does (raises,
exits, returns nonsense) is that check's failure, never the run's: loading and calling are
wrapped so that nothing escapes, and its answer is read by one contract (`as_verdict`).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import numbers
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from evalkit.scoring.checks import MAX_REASON_CHARS, Record, Verdict, broken


def load_module(folder: Path, name: str) -> ModuleType | str:
    """The module `name` (`a.b`: `a/b.py` under `folder`), or why it could not be loaded.

    This runs the suite author's code: only use suites you trust. Whatever the module raises
    while it loads (SystemExit included) is returned as the reason, never raised.
    """
    path = Path(folder, *name.split(".")).with_suffix(".py")
    spec_name = f"evalkit_user_{name}"
    try:
        if not path.is_file():
            return f"ImportError: no module file {path}"
        spec = importlib.util.spec_from_file_location(spec_name, path)
        if spec is None or spec.loader is None:
            return f"ImportError: cannot load {path}"
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec_name] = module  # dataclasses and pickle look their module up here
        spec.loader.exec_module(module)
        return module
    except BaseException as exc:
        sys.modules.pop(spec_name, None)
        return _describe(exc)


def call_python(module: ModuleType | str, ref: str, output: str, record: Record) -> Verdict:
    """`module:function` called as function(output, record), its answer read by the contract
    of `as_verdict`. Anything it raises, SystemExit and KeyboardInterrupt included, is this
    check's failure: a check never ends the run or decides its exit code."""
    try:
        if isinstance(module, str):
            return broken(f"python {ref}: {module}")
        function = getattr(module, ref.split(":", 1)[1], None)
        if not callable(function):
            return broken(
                f"python {ref}: AttributeError: {module.__file__} has no function "
                f"{ref.split(':', 1)[1]}"
            )
        return as_verdict(function(output, copy.deepcopy(dict(record))))  # its own copy
    except BaseException as exc:
        return broken(f"python {ref}: {_describe(exc)}")


def as_verdict(value: Any) -> Verdict:
    """A python check's answer: a bool; a finite real number (clamped to 0..1, passing at 0.5);
    a (bool, reason) pair; or a dict with a bool `pass` and optional `score` (a finite real
    number, clamped) and `reason`. Anything else raises TypeError or ValueError."""
    flag = _as_bool(value)
    if flag is not None:
        return Verdict(flag, float(flag), "" if flag else "returned False")
    if isinstance(value, numbers.Real):
        score = _as_score(value, "returned")
        return Verdict(score >= 0.5, score, "" if score >= 0.5 else f"score {score:.2f}")
    if isinstance(value, tuple) and len(value) == 2:
        passed = _as_bool(value[0])
        if passed is None:
            raise TypeError(f"returned ({type(value[0]).__name__}, ...); the first must be a bool")
        return Verdict(passed, float(passed), _text(value[1]))
    if isinstance(value, Mapping) and "pass" in value:
        passed = _as_bool(value["pass"])
        if passed is None:
            raise TypeError(f"'pass' is {type(value['pass']).__name__}; expected a bool")
        score = float(passed)
        if value.get("score") is not None:
            score = _as_score(value["score"], "'score' is")
        return Verdict(passed, score, _text(value.get("reason") or ""))
    raise TypeError(
        f"returned {type(value).__name__}; expected a bool, a number, a (bool, reason) pair "
        "or a dict with 'pass'"
    )


def _as_bool(value: Any) -> bool | None:
    """True or False for a bool (numpy's too), None for anything else."""
    if isinstance(value, bool):
        return value
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "kind", None) == "b" and getattr(value, "shape", None) == ():
        return bool(value)
    return None


def _as_score(value: Any, what: str) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} {type(value).__name__}; expected a number")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"{what} {score}; expected a finite number")
    return max(0.0, min(1.0, score))


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_REASON_CHARS]


def _describe(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose str() fails."""
    try:
        message = str(exc)
    except BaseException:
        message = "(its message could not be read)"
    return f"{type(exc).__name__}: {message}"[:MAX_REASON_CHARS] if message else type(exc).__name__
