"""The official OpenAI API description as a validator, for every test that checks a body.

Why: request bodies (chat, completions, moderations, responses) and the Batch API's create
request are checked against the same pruned copy of the spec,
`tests/data/openai-openapi/openapi.pruned.json`, which `scripts/prune_openapi.py` regenerates.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO / "tests" / "data" / "openai-openapi"
SPEC_PATH = SPEC_DIR / "openapi.pruned.json"
BASE_URI = "urn:openai-openapi"
# The request schema of each endpoint evalkit sends to, by the name evalkit gives it.
SCHEMA_NAMES: dict[str, str] = {
    "chat": "CreateChatCompletionRequest",
    "completions": "CreateCompletionRequest",
    "moderations": "CreateModerationRequest",
    "responses": "CreateResponse",
    "batches": "CreateBatchRequest",
}


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    # The API tells a Responses input item's kinds apart by its `type` (the schema's
    # discriminator), which JSON Schema's oneOf does not read: a message with content parts
    # is both an EasyInputMessage and an InputMessage, so "exactly one" would refuse it.
    item = loaded["components"]["schemas"]["InputItem"]
    item["anyOf"] = item.pop("oneOf")
    return loaded


@cache
def validator(endpoint: str) -> Draft202012Validator:
    """A validator for one endpoint's request schema, `#/components/...` refs resolving."""
    resource = Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
    ref = f"{BASE_URI}#/components/schemas/{SCHEMA_NAMES[endpoint]}"
    return Draft202012Validator({"$ref": ref}, registry=registry)


@cache
def declared_properties(endpoint: str) -> frozenset[str]:
    """Every top-level property the request schema names (through allOf and $ref).

    The spec has no `additionalProperties: false`, so a misspelt key would validate; this
    closes that gap.
    """
    schemas = spec()["components"]["schemas"]
    names: set[str] = set()

    def walk(schema: dict[str, Any]) -> None:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            walk(schemas[ref.rsplit("/", 1)[1]])
        names.update(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            walk(part)

    walk(schemas[SCHEMA_NAMES[endpoint]])
    return frozenset(names)


def spec_errors(endpoint: str, body: dict[str, Any]) -> list[str]:
    """Why `body` is not a valid request for `endpoint`; [] when it is."""
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in validator(endpoint).iter_errors(body)
    ]
    unknown = sorted(set(body) - declared_properties(endpoint))
    errors += [f"{name}: not a parameter of the {endpoint} endpoint" for name in unknown]
    errors += [f"{k}: null is never sent" for k, v in body.items() if v is None]
    return errors


def assert_valid(endpoint: str, body: dict[str, Any]) -> None:
    errors = spec_errors(endpoint, body)
    assert not errors, f"{endpoint} body {body!r} is not valid: {errors}"
