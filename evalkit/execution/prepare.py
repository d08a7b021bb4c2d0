"""Everything that can fail before a request is sent: models, validation, keys, local models.

A run that would fail for want of a key, a model or a valid case fails here, before the run
directory exists, so nothing is sent and nothing is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, SuiteError
from evalkit.execution.settings import RunSettings
from evalkit.models.targets import Target, check_key, resolve
from evalkit.planning.planner import Planner
from evalkit.planning.validate import validated
from evalkit.providers import Provider
from evalkit.records.store import file_sha256
from evalkit.scoring.grading import grader_model
from evalkit.suite.checkspec import GRADED_BY_A_MODEL
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite


def validated_targets(
    suite: Suite, settings: RunSettings, allow_overflow: bool = True
) -> tuple[list[Target], Planner]:
    """The models to run, and the planner validation walked: the run goes on with it."""
    env = os.environ if settings.environ is None else settings.environ
    specs = [ModelSpec(id=m) for m in settings.models] if settings.models else suite.models
    if not specs:
        raise ConfigError("no models to run: give --model provider/model, or models: in the suite")
    models = specs if settings.models else None
    shard = settings.shard.cases(suite) if settings.shard is not None else None
    problems, planner = validated(suite, models, env, allow_overflow, settings.samples, cases=shard)
    if problems:
        raise SuiteError(problems)
    targets = zip(planner.targets, specs, strict=True)
    return [_with_concurrency(t, s, settings) for t, s in targets], planner


@dataclass(frozen=True)
class Prepared:
    """A run ready to send: its models and graders, their keys, the local models loaded, and
    the planner validation walked (the run goes on with it)."""

    targets: list[Target]
    judges: list[Target]
    keys: dict[str, str | None]
    providers: dict[str, Provider]
    planner: Planner
    headers: dict[str, list[tuple[str, str]]]  # by target id: extra headers, values read
    secrets: dict[str, list[str]]  # by target id: the header values read from the environment


def prepare_run(suite: Suite, settings: RunSettings) -> Prepared:
    """Validate everything and read the keys: all that can fail does so before any request."""
    env = os.environ if settings.environ is None else settings.environ
    targets, planner = validated_targets(suite, settings, settings.allow_overflow)
    judges = [resolve(ModelSpec(id=m), suite.endpoints, env) for m in _judge_models(suite)]
    keys = _api_keys([*targets, *judges], env)
    headers, secrets = _headers([*targets, *judges], env)
    if settings.batch:
        local = [t.id for t in targets if t.provider == "local"]
        if local:
            raise ConfigError(
                f"{local[0]} runs in this process and has no Batch API: run it without --batch"
            )
    providers = _local_providers([*targets, *judges], Path(suite.source).parent)
    return Prepared(targets, judges, keys, providers, planner, headers, secrets)


def _local_providers(targets: list[Target], folder: Path) -> dict[str, Provider]:
    """Local models are checked (extra installed, GGUF present) before anything is sent."""
    from evalkit.providers.local import LocalProvider, gguf_path

    return {
        t.id: LocalProvider(gguf_path(t.model, t.path, folder), t.info.context_window)
        for t in targets
        if t.provider == "local"
    }


def _judge_models(suite: Suite) -> list[str]:
    """The models that grade judge and moderation checks."""
    found = {
        grader_model(check)
        for check in [*suite.checks, *(c for case in suite.cases for c in case.expect)]
        if check.kind in GRADED_BY_A_MODEL
    }
    return sorted(found)


def _with_concurrency(target: Target, spec: ModelSpec, settings: RunSettings) -> Target:
    if settings.concurrency and not spec.concurrency:
        return replace(target, concurrency=settings.concurrency)
    return target


def _headers(
    targets: list[Target], env: Mapping[str, str]
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[str]]]:
    """Each target's extra headers with their values, those from the environment read now (so
    a missing one fails before any request is sent) and kept apart, to be scrubbed."""
    headers: dict[str, list[tuple[str, str]]] = {}
    secrets: dict[str, list[str]] = {}
    for target in targets:
        headers[target.id], secrets[target.id] = [], []
        for name, given in target.headers:
            if isinstance(given, str):
                headers[target.id].append((name, given))
                continue
            value = env.get(given.env)
            if not value:
                raise ConfigError(
                    f"{target.id}: its endpoint's header {name} comes from the environment "
                    f"variable {given.env}, which is not set"
                )
            check_key(given.env, value)
            headers[target.id].append((name, value.strip()))
            secrets[target.id].append(value)
    return headers, secrets


def _api_keys(targets: list[Target], env: Mapping[str, str]) -> dict[str, str | None]:
    """Each target's key, read now so a missing one fails before any request is sent."""
    keys: dict[str, str | None] = {}
    for target in targets:
        name = target.api_key_env
        if name is None:
            keys[target.id] = None
        elif env.get(name):
            keys[target.id] = env[name]
        else:
            raise ConfigError(
                f"{target.id} needs an API key: set the environment variable {name} "
                "(evalkit reads keys only from the environment and never stores them)"
            )
    return keys


def run_manifest(suite: Suite, prepared: Prepared, settings: RunSettings) -> dict[str, Any]:
    """The manifest a new run starts with: what `--resume` needs to go on (never a key)."""
    targets, shard = prepared.targets, settings.shard
    return {
        "evalkit_version": version("evalkit"),
        "suite": {
            "name": suite.name,
            "path": suite.source,
            "abspath": str(Path(suite.source).resolve()) if suite.source else None,
            "sha256": file_sha256(suite.source) if suite.source else None,
        },
        "models": [
            {
                "id": t.id,
                "label": t.label,
                "base_url": t.base_url,
                "api_key_env": t.api_key_env,  # the variable's name, never its value
                "query": t.query,
                # literal values (never credentials: see suite/spec.py), else the variable
                "headers": {n: v if isinstance(v, str) else {"env": v.env} for n, v in t.headers},
                "concurrency": t.concurrency,
                "params": t.params.set_values(),
            }
            for t in targets
        ],
        "options": {
            "models": settings.models,
            "concurrency": settings.concurrency,
            "samples": settings.samples,
            "max_retries": settings.max_retries,
            "max_error_rate": settings.max_error_rate,
            "timeout_s": settings.timeout_s,
            "max_cost": settings.max_cost,
            "allow_overflow": settings.allow_overflow,
            "batch": settings.batch,
            "poll_interval_s": settings.poll_interval_s,
            "batch_topup": settings.batch_topup,
        },
        "params": suite.params.set_values(),
        "shard": shard.as_manifest() if shard is not None else None,
        "planned": {t.label: prepared.planner.requests_per_model for t in targets},
    }
