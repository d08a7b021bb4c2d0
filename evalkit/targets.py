"""Resolve `provider/model` references into targets: where to send, with what key, at what price.

`openai/*` uses `OPENAI_BASE_URL` and `OPENAI_API_KEY` like the official SDK; a provider named
under the suite's `endpoints:` uses that endpoint's `base_url` and `api_key_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from evalkit.catalog import CATALOG, ModelInfo, generic, lookup, with_overrides
from evalkit.errors import did_you_mean
from evalkit.suite import Endpoint, ModelSpec, Params

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_CONCURRENCY = 16


class UnknownModel(ValueError):
    """A model reference that names no known model or endpoint."""


@dataclass(frozen=True)
class Target:
    """One model as the runner sees it."""

    id: str  # provider/model as written in the suite or on the command line
    label: str  # how reports name it
    provider: str  # 'openai', 'local', or the name of a declared endpoint
    model: str  # the model name sent on the wire
    base_url: str
    api_key_env: str | None  # the variable's name; the key itself is read only when sending
    info: ModelInfo
    params: Params
    concurrency: int
    rpm: int | None = None
    tpm: int | None = None
    path: str | None = None  # GGUF file of a local model (None: the packaged one)


def resolve(
    spec: ModelSpec, endpoints: Mapping[str, Endpoint], environ: Mapping[str, str] | None = None
) -> Target:
    """The target for `spec`; raises `UnknownModel` with a message for the user."""
    env = os.environ if environ is None else environ
    provider, model = spec.id.split("/", 1)
    overrides = {
        "kind": spec.kind,
        "context_window": spec.context_window,
        "input_per_mtok": spec.input_per_mtok,
        "output_per_mtok": spec.output_per_mtok,
    }
    if provider in endpoints:
        endpoint = endpoints[provider]
        base = generic(spec.id, endpoint.kind, endpoint.context_window or 8_192)
        return Target(
            id=spec.id,
            label=spec.label or (endpoint.label and f"{endpoint.label}/{model}") or spec.id,
            provider=provider,
            model=model,
            base_url=endpoint.base_url,
            api_key_env=endpoint.api_key_env,
            info=with_overrides(base, **overrides),
            params=(spec.params or Params()).over(endpoint.params),
            concurrency=spec.concurrency or endpoint.concurrency,
            rpm=spec.rpm or endpoint.rpm,
            tpm=spec.tpm or endpoint.tpm,
        )
    if provider not in ("openai", "local"):
        raise UnknownModel(
            f"unknown provider '{provider}' in '{spec.id}': use openai/..., local/..., "
            f"or declare '{provider}' under endpoints:"
        )
    info = lookup(spec.id)
    if info is None and provider == "local" and spec.path:
        info = generic(spec.id, "both", spec.context_window or 2048)
        info = with_overrides(info, supports_suffix=False)
    if info is None:
        if provider == "local":
            raise UnknownModel(
                f"unknown local model '{spec.id}': evalkit ships local/gemma-3-270m; "
                "for another model give `path:` to its GGUF file"
            )
        if spec.kind is None:
            hint = did_you_mean(spec.id, [m.id for m in CATALOG])
            raise UnknownModel(
                f"unknown model '{spec.id}'{hint}; to use a model evalkit does not "
                "know yet, give its kind (chat or completions) and prices in the suite"
            )
        info = generic(spec.id, spec.kind)
    base_url = env.get("OPENAI_BASE_URL", OPENAI_DEFAULT_URL) if provider == "openai" else ""
    return Target(
        id=spec.id,
        label=spec.label or spec.id,
        provider=provider,
        model=model,
        base_url=base_url.rstrip("/"),
        api_key_env="OPENAI_API_KEY" if provider == "openai" else None,
        info=with_overrides(info, **overrides),
        params=spec.params or Params(),
        concurrency=spec.concurrency or (1 if provider == "local" else DEFAULT_CONCURRENCY),
        rpm=spec.rpm,
        tpm=spec.tpm,
        path=spec.path,
    )
