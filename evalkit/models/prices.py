"""OpenAI's models, prices and context windows from the genai-prices package.

genai-prices is a maintained price list; its wheel bundles a snapshot of it, and evalkit reads
only that snapshot (it never asks the package to fetch updates). Importing the package costs
about 0.25 s, 10 times what its data takes to read, so what evalkit uses of it (text models:
input, cached-input and output prices, context windows, the date each price applies from) is
kept in a small JSON file named after the installed package's version: the first command on
a machine reads the package, every later one reads that file. A file that cannot be written
(a read-only home) only means the package is read each time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGE = "genai-prices"
_MEMO_FORMAT = 2  # bumped when a memo's rows change shape (2: batch prices)
# models priced per token that do not take text prompts on chat or completions
_NOT_TEXT = (
    *("embedding", "tts", "whisper", "image", "realtime", "audio", "transcribe", "live"),
    *("moderation", "search", "computer-use", "deep-research", "ft:", "codex", "sora"),
)


@dataclass(frozen=True)
class Listed:
    """One model as genai-prices lists it (USD per million tokens)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None
    context_window: int | None
    as_of: str  # the date the price applies from ("" when the snapshot gives none)
    # on the Batch API: input, output, cached input; None when the snapshot lists no batch price
    batch: tuple[float, float, float | None] | None = None


def listed(name: str) -> Listed | None:
    """The OpenAI model `name` (its wire name, e.g. `gpt-4.1`), or None when the package does
    not list it or is not installed."""
    return _table().get(name)


def names() -> list[str]:
    """Every text model genai-prices lists for OpenAI, by name."""
    return sorted(_table())


def source() -> str:
    """Where the prices come from, for `evalkit models` (e.g. `genai-prices 0.2.3`)."""
    installed = _version()
    return f"{PACKAGE} {installed}" if installed else f"{PACKAGE} (not installed)"


@cache
def _table() -> dict[str, Listed]:
    installed = _version()
    if installed is None:
        return {}
    memo = _memo_path(installed)
    if memo is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            rows = json.loads(memo.read_text(encoding="utf-8"))
            return {name: _listed(row) for name, row in rows.items()}
    rows = _read_package(installed)
    if memo is not None:
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(rows), encoding="utf-8")
            os.replace(tmp, memo)
    return {name: _listed(row) for name, row in rows.items()}


def _listed(row: list[Any]) -> Listed:
    given, output, cached, window, as_of, batch = row
    return Listed(given, output, cached, window, as_of, tuple(batch) if batch else None)


def _version() -> str | None:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def _memo_path(installed: str) -> Path | None:
    """`$EVALKIT_PRICES_DIR`, else the user's cache folder (`$XDG_CACHE_HOME/evalkit`)."""
    folder = os.environ.get("EVALKIT_PRICES_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        folder = str(Path(base) / "evalkit")
    return Path(folder) / f"openai-prices-{installed}-{_MEMO_FORMAT}.json"


def _read_package(installed: str) -> dict[str, list[Any]]:
    """OpenAI's text models from the bundled snapshot: today's price of each, under its id and
    the exact names its entry matches."""
    from genai_prices import data_snapshot, types

    today = datetime.date.today()
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == "openai")
    rows: dict[str, list[Any]] = {}
    for model in provider.models:
        price, start = _current(model.prices, today, types)
        if price is None or not _is_text(model.id):
            continue
        given = (_mtok(price.input_mtok), _mtok(price.output_mtok))
        if given[0] is None or given[1] is None:
            continue
        cached = _mtok(price.cache_read_mtok)
        batch = _batch(getattr(model, "price_variants", None), today, types)
        row = [given[0], given[1], cached, model.context_window, start or "", batch]
        for name in [model.id, *_exact_names(model.match)]:
            rows.setdefault(name, row)
    return rows


def _current(prices: Any, today: datetime.date, types: Any) -> tuple[Any, str | None]:
    """The price that applies today, and the date it applies from (None: always)."""
    if not isinstance(prices, list):
        return prices, None
    best, start = None, None
    for conditional in prices:
        constraint = conditional.constraint
        if constraint is None:
            best = best or conditional.prices
        elif isinstance(constraint, types.StartDateConstraint) and constraint.start_date <= today:
            begins = constraint.start_date.isoformat()
            if start is None or begins > start:
                best, start = conditional.prices, begins
    return best, start


def _batch(variants: Any, today: datetime.date, types: Any) -> list[Any] | None:
    """The Batch API's prices (input, output, cached input) that apply today, if listed."""
    found = None
    for variant in variants or []:
        if getattr(variant, "when", None) != {"processing": "batch"}:
            continue
        constraint = variant.constraint
        starts = isinstance(constraint, types.StartDateConstraint)
        if constraint is None or (starts and constraint.start_date <= today):
            found = variant.prices
    if found is None:
        return None
    given = _mtok(found.input_mtok), _mtok(found.output_mtok)
    if given[0] is None or given[1] is None:
        return None
    return [given[0], given[1], _mtok(found.cache_read_mtok)]


def _mtok(value: Any) -> float | None:
    """A price per million tokens; a tiered price by its first tier (the base)."""
    if value is None:
        return None
    return float(getattr(value, "base", value))


def _is_text(name: str) -> bool:
    return not any(word in name for word in _NOT_TEXT)


def _exact_names(match: Any) -> list[str]:
    """The names a match clause accepts exactly (`equals`), anywhere in it."""
    if match is None:
        return []
    if hasattr(match, "equals"):
        return [match.equals]
    found: list[str] = []
    for part in getattr(match, "or_", None) or []:
        found += _exact_names(part)
    return found
