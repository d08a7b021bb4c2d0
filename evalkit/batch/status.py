"""`evalkit batches RUNDIR`: each batch a run journaled, as the Batch API sees it now; cancel.

Why from the manifest alone: a batch run may be checked (or stopped) from another machine or
a later day, with only its run directory at hand; the manifest holds each model's base URL,
query, header names and the name of its key's variable, never a secret.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.batch.client import BatchClient
from evalkit.batch.provider import TERMINAL, known_batches
from evalkit.errors import ConfigError, InputError
from evalkit.providers import ProviderError
from evalkit.records.fold import fold
from evalkit.records.store import read_journal, read_manifest


@dataclass(frozen=True)
class BatchState:
    """One batch of a run: what the journal says and what the API says now."""

    model: str
    batch_id: str | None  # None: uploaded, never created
    file_id: str
    requests: int
    status: str  # the API's status now (or "not created", or the error asking for it)
    completed: int = 0
    failed: int = 0
    cancelled: bool = False  # asked to cancel by this call


def batch_states(
    run_dir: Path, cancel: bool = False, environ: Mapping[str, str] | None = None
) -> list[BatchState]:
    """The run's batches, in the order they were sent; `cancel`: cancel those still running
    (lines already done are kept: `--resume` sends the rest in a new batch)."""
    manifest = read_manifest(run_dir)
    journaled = fold(read_journal(run_dir)).prior.batches
    if not journaled:
        raise InputError(f"{run_dir}: this run sent no batches (it ran without --batch)")
    env = os.environ if environ is None else environ
    models = {m.get("label"): m for m in manifest.get("models", []) if isinstance(m, dict)}
    return asyncio.run(_states(known_batches(list(journaled)), models, env, cancel))


async def _states(
    known: Mapping[str, Any],
    models: Mapping[Any, dict[str, Any]],
    env: Mapping[str, str],
    cancel: bool,
) -> list[BatchState]:
    states = []
    for label, batches in known.items():
        model = models.get(label)
        if model is None:
            raise InputError(f"the journal names model {label!r}, which the manifest lacks")
        client = _client(model, env)
        try:
            for batch in batches.batches:
                states.append(await _state(client, label, batch, cancel))
        finally:
            await client.aclose()
    return states


async def _state(client: BatchClient, label: str, batch: Any, cancel: bool) -> BatchState:
    requests = len(batch.keys)
    if batch.batch_id is None:
        return BatchState(label, None, batch.file_id, requests, "not created")
    try:
        state = await client.get(batch.batch_id)
        asked = cancel and state.get("status") not in TERMINAL
        if asked:
            state = await client.cancel(batch.batch_id)
    except ProviderError as exc:
        return BatchState(label, batch.batch_id, batch.file_id, requests, f"unknown ({exc})")
    counts = state.get("request_counts") or {}
    return BatchState(
        label,
        batch.batch_id,
        batch.file_id,
        requests,
        str(state.get("status")),
        int(counts.get("completed") or 0),
        int(counts.get("failed") or 0),
        asked,
    )


def _client(model: dict[str, Any], env: Mapping[str, str]) -> BatchClient:
    """A client for a manifest's model: its key and header values read from `env` now."""
    key_env = model.get("api_key_env")
    key = env.get(key_env) if isinstance(key_env, str) else None
    if isinstance(key_env, str) and not key:
        raise ConfigError(
            f"{model.get('id')} needs an API key: set the environment variable {key_env}"
        )
    headers, secrets = [], []
    for name, value in (model.get("headers") or {}).items():
        if isinstance(value, dict):
            value = env.get(str(value.get("env")), "")
            secrets.append(value)
        headers.append((str(name).lower(), str(value)))
    return BatchClient(
        str(model.get("base_url")), key, headers, str(model.get("query") or ""), secrets
    )
