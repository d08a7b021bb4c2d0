"""Resolve `provider/model` references into targets: where to send, with what key, at what price.

`openai/*` uses `OPENAI_BASE_URL` and `OPENAI_API_KEY` like the official SDK; a provider named
under the suite's `endpoints:` uses that endpoint's `base_url` and `api_key_env`. A base URL
or a key that cannot be sent over HTTP is refused here, before anything is sent, without
echoing it: either may hold a secret.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from evalkit.errors import UnknownModel, did_you_mean
from evalkit.models import prices
from evalkit.models.catalog import CATALOG, ModelInfo, generic, lookup, with_overrides
from evalkit.suite.endpoints import Endpoint, FromEnv, ModelSpec
from evalkit.suite.params import Params

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_CONCURRENCY = 16


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
    # a declared endpoint's extra headers: literal values, or the variables that hold them
    headers: tuple[tuple[str, str | FromEnv], ...] = ()
    query: str = ""  # its query parameters, URL-encoded, on every request URL

    @property
    def url_query(self) -> str:
        """`?query` for a request URL, or nothing."""
        return f"?{self.query}" if self.query else ""


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
        "cached_input_per_mtok": spec.cached_input_per_mtok,
        "reasoning": spec.reasoning,
    }
    if provider in endpoints:
        endpoint = endpoints[provider]
        check_base_url(endpoint.base_url, f"endpoint '{provider}': base_url")
        if endpoint.api_key_env and env.get(endpoint.api_key_env):
            check_key(endpoint.api_key_env, env[endpoint.api_key_env])
        base = generic(spec.id, endpoint.kind, endpoint.context_window or 8_192)
        listed = lookup(spec.id) if provider == "openai" else None
        if listed is not None:  # `openai` redeclared (e.g. `kind: responses`): still OpenAI's
            base = _on_endpoint(listed, endpoint)
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
            headers=tuple((endpoint.headers or {}).items()),
            query=urllib.parse.urlencode(endpoint.query or {}),
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
            known = [m.id for m in CATALOG] + [f"openai/{n}" for n in prices.names()]
            hint = did_you_mean(spec.id, known)
            raise UnknownModel(
                f"unknown model '{spec.id}'{hint}; to use a model evalkit does not "
                "know yet, give its kind (chat or completions) and prices in the suite"
            )
        info = generic(spec.id, spec.kind)
    base_url = ""
    if provider == "openai":
        base_url = check_base_url(env.get("OPENAI_BASE_URL", OPENAI_DEFAULT_URL), "OPENAI_BASE_URL")
        if env.get("OPENAI_API_KEY"):
            check_key("OPENAI_API_KEY", env["OPENAI_API_KEY"])
    return Target(
        id=spec.id,
        label=spec.label or spec.id,
        provider=provider,
        model=model,
        base_url=base_url,
        api_key_env="OPENAI_API_KEY" if provider == "openai" else None,
        info=with_overrides(info, **overrides),
        params=spec.params or Params(),
        concurrency=spec.concurrency or (1 if provider == "local" else DEFAULT_CONCURRENCY),
        rpm=spec.rpm,
        tpm=spec.tpm,
        path=spec.path,
    )


def _on_endpoint(info: ModelInfo, endpoint: Endpoint) -> ModelInfo:
    """A catalogue model on a declared endpoint named `openai`: its prices, window and
    reasoning kept, the endpoint's own `kind` and `context_window` (when given) winning;
    a moderation model stays one."""
    given = endpoint.model_fields_set
    kind = endpoint.kind if "kind" in given and info.kind != "moderation" else info.kind
    return with_overrides(info, kind=kind, context_window=endpoint.context_window)


_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # RFC 9110: visible ASCII, space, tab
_URL = re.compile(r"[\x21-\x7e]+")  # visible ASCII


def check_key(name: str, value: str) -> None:
    """Refuse a key (the value of the variable `name`) that no HTTP header can carry.

    Surrounding whitespace is allowed (the provider sends the key stripped); line breaks,
    other control characters and non-ASCII are not. The message never shows the key.
    """
    if not value.strip():
        raise UnknownModel(f"{name} is blank: set it to the API key")
    if "\r" in value or "\n" in value:
        raise UnknownModel(
            f"{name} holds a line break (a .env file saved with CRLF line ends?); "
            "an API key must be one line"
        )
    if not _HEADER_VALUE.fullmatch(value):
        raise UnknownModel(
            f"{name} holds a character an HTTP header cannot carry (non-ASCII or a control "
            "character); an API key is printable ASCII"
        )


def check_base_url(url: str, where: str) -> str:
    """`url` without its trailing slash, when requests can be sent under it.

    Refused: anything but http(s)://host[:port][/path], and credentials in any part of it
    (user:password@, a query, a fragment), so no URL evalkit stores holds a secret. The
    message never shows the URL.
    """
    refused = f"{where} is not usable"
    if not _URL.fullmatch(url):
        raise UnknownModel(f"{refused}: a URL is printable ASCII without spaces")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnknownModel(f"{refused}: it must be http://host/... or https://host/...")
    if "@" in parts.netloc:
        raise UnknownModel(
            f"{refused}: it holds credentials (user:password@); give the key in an environment "
            "variable (OPENAI_API_KEY, or the endpoint's api_key_env) instead"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise UnknownModel(
            f"{refused}: it has a query or a fragment (?... or #...); a base URL ends in its path"
        )
    try:
        _ = parts.port
    except ValueError:
        raise UnknownModel(f"{refused}: its port is not a number from 0 to 65535") from None
    return url.rstrip("/")
