"""Known models: which endpoint each speaks, its context window, its dated prices.

Prices are USD per million tokens. OpenAI's come from the genai-prices package (`prices.py`)
for every model it lists, so a model newer than this table is usable by name; this table
keeps what that package lacks: which endpoint a model speaks, insert mode, the local model,
shutdown dates, tokenizers, and the context windows evalkit knows better (the instruct
model's 4,096). A suite can override any field for its own models (`ModelSpec`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

# "responses": sent to the Responses API (/v1/responses), whatever the prompt's shape
EndpointKind = Literal["chat", "completions", "both", "moderation", "responses"]


@dataclass(frozen=True)
class ModelInfo:
    """What evalkit knows about one model before sending it anything."""

    id: str  # provider/model
    kind: EndpointKind
    context_window: int
    input_per_mtok: float
    output_per_mtok: float
    prices_as_of: str
    encoding: str | None = None  # tiktoken encoding name, when one applies
    supports_suffix: bool = False
    deprecated: str | None = None  # shutdown date, when announced
    note: str = ""
    cached_input_per_mtok: float | None = None  # prompt tokens from the prompt cache; None: full
    # a reasoning model (o1, o3, gpt-5...): its chat requests take `max_completion_tokens` (not
    # `max_tokens`), only the default temperature, and `reasoning_effort`
    reasoning: bool = False
    price_source: str = "evalkit"  # where the prices come from (`evalkit models` shows it)
    # per million tokens on the Batch API: input, output, cached input (None: none listed);
    # None: half the online prices, OpenAI's standing batch discount
    batch_prices: tuple[float, float, float | None] | None = None

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1]

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """Dollar cost of one request at this model's listed prices (`batch`: the Batch API's):
        `cached_tokens` of the prompt at the cached-input price (when the model has one);
        completion tokens include any hidden reasoning tokens, which are billed as output."""
        input_price, output_price, cached_price = self.prices(batch)
        if cached_price is None:
            cached_price, cached_tokens = input_price, 0
        fresh = prompt_tokens - cached_tokens
        return (
            fresh * input_price + cached_tokens * cached_price + completion_tokens * output_price
        ) / 1_000_000

    def prices(self, batch: bool = False) -> tuple[float, float, float | None]:
        """Per million tokens: input, output and cached input (None: billed as input)."""
        online = (self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)
        if not batch:
            return online
        if self.batch_prices is not None:
            return self.batch_prices
        return online[0] / 2, online[1] / 2, online[2] / 2 if online[2] is not None else None

    def usage(
        self, prompt_tokens: int | None, completion_tokens: int | None, choices: int = 1
    ) -> tuple[int | None, int | None]:
        """The token counts a server reported, each None when missing or not believable:
        negative, or more than this model's context window holds (per choice, for the
        completion), so that no server can bill a negative or impossible amount."""
        window = min(self.context_window, USAGE_CEILING)
        return believable(prompt_tokens, window), believable(completion_tokens, window * choices)

    def usage_cost(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = None,
        batch: bool = False,
    ) -> float | None:
        """What believable counts cost; None (unknown) when either count is unknown (an
        unknown cached count bills the whole prompt at the input price)."""
        if prompt_tokens is None or completion_tokens is None:
            return None
        return self.cost(prompt_tokens, completion_tokens, cached_tokens or 0, batch)


USAGE_CEILING = 100_000_000
"""No request is believed to use more tokens than this, whatever context window it declares."""


def believable(count: object, most: int = USAGE_CEILING) -> int | None:
    """`count` if it is a whole number from 0 to `most`, else None (unknown)."""
    if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= most:
        return count
    return None


def believable_cost(amount: object) -> float | None:
    """A recorded cost, or None (unknown) when it cannot be one: negative, not a finite number."""
    if isinstance(amount, int | float) and not isinstance(amount, bool) and 0 <= amount < math.inf:
        return float(amount)
    return None


def _openai(
    name: str,
    kind: EndpointKind,
    window: int,
    price_in: float,
    price_out: float,
    as_of: str,
    encoding: str,
    **extra: str | bool | float,
) -> ModelInfo:
    return ModelInfo(
        f"openai/{name}",
        kind,
        window,
        price_in,
        price_out,
        as_of,
        encoding,
        **extra,  # type: ignore[arg-type]
    )


CATALOG: tuple[ModelInfo, ...] = (
    # cached-input prices as published with prompt caching, 2024-10-01
    _openai(
        "gpt-4o",
        "chat",
        128_000,
        2.50,
        10.00,
        "2024-10-01",
        "o200k_base",
        cached_input_per_mtok=1.25,
    ),
    _openai(
        "gpt-4o-mini",
        "chat",
        128_000,
        0.15,
        0.60,
        "2024-10-01",
        "o200k_base",
        cached_input_per_mtok=0.075,
    ),
    _openai("gpt-4-turbo", "chat", 128_000, 10.00, 30.00, "2024-04-09", "cl100k_base"),
    _openai("gpt-4-1106-preview", "chat", 128_000, 10.00, 30.00, "2023-11-06", "cl100k_base"),
    _openai("gpt-4-0125-preview", "chat", 128_000, 10.00, 30.00, "2024-01-25", "cl100k_base"),
    _openai("gpt-4", "chat", 8_192, 30.00, 60.00, "2023-03-14", "cl100k_base"),
    _openai("gpt-4-0613", "chat", 8_192, 30.00, 60.00, "2023-06-13", "cl100k_base"),
    _openai("gpt-4-32k", "chat", 32_768, 60.00, 120.00, "2023-03-14", "cl100k_base"),
    _openai("gpt-3.5-turbo", "chat", 16_385, 0.50, 1.50, "2024-01-25", "cl100k_base"),
    _openai("gpt-3.5-turbo-0125", "chat", 16_385, 0.50, 1.50, "2024-01-25", "cl100k_base"),
    _openai("gpt-3.5-turbo-1106", "chat", 16_385, 1.00, 2.00, "2023-11-06", "cl100k_base"),
    _openai(
        "gpt-3.5-turbo-instruct",
        "completions",
        4_096,
        1.50,
        2.00,
        "2023-09-18",
        "cl100k_base",
        supports_suffix=True,
    ),
    _openai("babbage-002", "completions", 16_384, 0.40, 0.40, "2023-08-22", "cl100k_base"),
    _openai("davinci-002", "completions", 16_384, 2.00, 2.00, "2023-08-22", "cl100k_base"),
    _openai(
        "text-davinci-003",
        "completions",
        4_097,
        20.00,
        20.00,
        "2023-01-01",
        "p50k_base",
        supports_suffix=True,
        deprecated="2024-01-04",
    ),
    _openai(
        "text-davinci-002",
        "completions",
        4_097,
        20.00,
        20.00,
        "2023-01-01",
        "p50k_base",
        supports_suffix=True,
        deprecated="2024-01-04",
    ),
    _openai(
        "text-curie-001",
        "completions",
        2_049,
        2.00,
        2.00,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "text-babbage-001",
        "completions",
        2_049,
        0.50,
        0.50,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "text-ada-001",
        "completions",
        2_049,
        0.40,
        0.40,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "davinci",
        "completions",
        2_049,
        20.00,
        20.00,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "curie",
        "completions",
        2_049,
        2.00,
        2.00,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "babbage",
        "completions",
        2_049,
        0.50,
        0.50,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    _openai(
        "ada",
        "completions",
        2_049,
        0.40,
        0.40,
        "2023-01-01",
        "r50k_base",
        deprecated="2024-01-04",
    ),
    ModelInfo(
        "openai/omni-moderation-latest",
        "moderation",
        32_768,
        0.0,
        0.0,
        "2024-09-26",
        "o200k_base",
        note="moderations endpoint, free",
    ),
    ModelInfo(
        "openai/text-moderation-latest",
        "moderation",
        32_768,
        0.0,
        0.0,
        "2023-08-01",
        "cl100k_base",
        note="moderations endpoint, free",
    ),
    ModelInfo(
        "local/gemma-3-270m",
        "both",
        2_048,  # run at n_ctx 2048 (the model takes 32k; memory and speed say 2k here)
        0.0,
        0.0,
        "2025-08-14",
        None,
        supports_suffix=False,
        note="embedded: Gemma 3 270M Q4_K_M via llama-cpp-python (extra 'local')",
    ),
)

_BY_ID = {m.id: m for m in CATALOG}


def lookup(model_id: str) -> ModelInfo | None:
    """The catalogue entry for `provider/model`, its prices from genai-prices when that lists
    the model; None when neither knows it."""
    from evalkit.models import prices

    hand = _BY_ID.get(model_id)
    provider, _, name = model_id.partition("/")
    found = None
    if provider == "openai" and (hand is None or hand.kind != "moderation"):
        found = prices.listed(name)
    if found is None:
        return hand
    priced = {
        "input_per_mtok": found.input_per_mtok,
        "output_per_mtok": found.output_per_mtok,
        "cached_input_per_mtok": found.cached_input_per_mtok,
        "prices_as_of": found.as_of or "its snapshot",
        "price_source": prices.source(),
        "batch_prices": found.batch,
    }
    if hand is not None:
        return replace(hand, **priced)  # type: ignore[arg-type]
    return ModelInfo(
        model_id,
        "chat",
        found.context_window or DEFAULT_WINDOW,
        encoding="o200k_base",
        reasoning=bool(_REASONING.match(name)) and "chat" not in name,
        note=""
        if found.context_window
        else f"context window not listed: {DEFAULT_WINDOW:,} assumed",
        **priced,  # type: ignore[arg-type]
    )


DEFAULT_WINDOW = 128_000
_REASONING = re.compile(r"^(o\d|gpt-[5-9])")


def known() -> list[ModelInfo]:
    """Every model usable by name: this table's and every OpenAI text model genai-prices
    lists (for `evalkit models`)."""
    from evalkit.models import prices

    listed = [f"openai/{name}" for name in prices.names() if f"openai/{name}" not in _BY_ID]
    found = [lookup(model_id) for model_id in [*_BY_ID, *listed]]
    return [info for info in found if info is not None]


def generic(model_id: str, kind: EndpointKind = "both", context_window: int = 8_192) -> ModelInfo:
    """An entry for a model served by a user-declared endpoint: no prices known (free)."""
    return ModelInfo(model_id, kind, context_window, 0.0, 0.0, "", None, supports_suffix=True)


def with_overrides(info: ModelInfo, **fields: object) -> ModelInfo:
    """`info` with the fields a suite set explicitly (None means 'not set')."""
    return replace(info, **{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]
