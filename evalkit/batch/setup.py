"""A run's batch senders: one `BatchProvider` per model, given what the journal holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalkit.batch.client import BatchClient
from evalkit.batch.lines import MAX_LINES
from evalkit.batch.provider import BatchProvider, known_batches
from evalkit.execution.limits import ModelLimits
from evalkit.models.targets import Target
from evalkit.records.store import RunDir

DEFAULT_POLL_S = 60.0
MAX_BATCH_ATTEMPTS = 3  # a request's line sent in at most this many batches


def batch_senders(
    targets: Sequence[Target],
    keys: Mapping[str, str | None],
    headers: Mapping[str, list[tuple[str, str]]],
    secrets: Mapping[str, list[str]],
    run: RunDir,
    journaled: list[Mapping[str, Any]],
    poll_s: float | None,
    retry_initial_s: float,
    note: Callable[[str], None],
) -> dict[str, tuple[Target, BatchProvider, ModelLimits]]:
    """Each model's batch sender; its limits hold a whole batch in flight."""
    known = known_batches(journaled)
    senders = {}
    for target in targets:
        client = BatchClient(
            target.base_url,
            keys.get(target.id),
            headers.get(target.id, []),
            target.query,
            secrets.get(target.id, []),
            retry_initial_s=retry_initial_s,
        )
        provider = BatchProvider(
            client, target, run, poll_s or DEFAULT_POLL_S, known.get(target.label), note
        )
        senders[target.id] = (target, provider, ModelLimits(MAX_LINES))
    return senders
