"""Prune the official OpenAI API description to the request bodies evalkit sends.

    python scripts/prune_openapi.py PATH/openapi.json [--output FILE]

The result (by default `tests/data/openai-openapi/openapi.pruned.json`) keeps the spec's
`openapi` and `info` members and, under `components`, only what the request-body schemas of
the operations in `OPERATIONS` reach through `$ref`, transitively; every kept component is
copied verbatim, so validating against the pruned copy is validating against the full spec.
The output depends on the input alone (sorted keys, fixed indentation, a final newline):
the same openapi.json always gives the same bytes, which `tests/test_request_bodies.py`
checks whenever the full spec is at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The paths of the POST operations evalkit sends (online in evalkit/providers/openai.py; /batches
# for the Batch API, whose input lines carry the bodies of the others).
OPERATIONS = (
    "/chat/completions",
    "/completions",
    "/moderations",
    "/responses",
    "/batches",
)
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "data"
    / "openai-openapi"
    / "openapi.pruned.json"
)
_COMPONENTS = "#/components/"


class PruneError(Exception):
    """The spec is not shaped as expected (a missing operation, an unsupported `$ref`)."""


def request_schema_refs(spec: dict[str, Any]) -> list[str]:
    """The `$ref` of each operation's JSON request body, in `OPERATIONS` order."""
    refs = []
    for path in OPERATIONS:
        try:
            schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"][
                "schema"
            ]
            ref = schema["$ref"]
        except (KeyError, TypeError) as exc:
            raise PruneError(f"POST {path} has no JSON request body $ref ({exc!r})") from exc
        refs.append(ref)
    return refs


def _refs_in(node: Any) -> Iterator[str]:
    """Every `$ref` string anywhere inside `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs_in(item)


def _component(ref: str) -> tuple[str, str]:
    """`#/components/<kind>/<name>[/...]` → (kind, name), JSON-pointer escapes undone."""
    if not ref.startswith(_COMPONENTS):
        raise PruneError(f"unsupported $ref {ref!r}: only {_COMPONENTS}... refs are followed")
    parts = ref[len(_COMPONENTS) :].split("/")
    if len(parts) < 2 or "%" in ref:
        raise PruneError(f"unsupported $ref {ref!r}")
    kind, name = (p.replace("~1", "/").replace("~0", "~") for p in parts[:2])
    return kind, name


def prune(spec: dict[str, Any]) -> dict[str, Any]:
    """The pruned description: `openapi`, `info` and the components the request bodies reach."""
    components: dict[str, Any] = spec.get("components", {})
    kept: dict[str, dict[str, Any]] = {}
    pending = request_schema_refs(spec)
    while pending:
        kind, name = _component(pending.pop())
        if name in kept.get(kind, {}):
            continue
        try:
            body = components[kind][name]
        except KeyError as exc:
            raise PruneError(f"$ref to a missing component: {kind}/{name}") from exc
        kept.setdefault(kind, {})[name] = body
        pending.extend(_refs_in(body))
    try:
        return {"openapi": spec["openapi"], "info": spec["info"], "components": kept}
    except KeyError as exc:
        raise PruneError(f"the spec has no {exc} member") from exc


def dumps(pruned: dict[str, Any]) -> str:
    """Compact yet diff-friendly: one member a line, sorted keys, a final newline."""
    return json.dumps(pruned, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Prune openapi.json to the request bodies evalkit sends."
    )
    parser.add_argument("spec", type=Path, help="the full openapi.json")
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}"
    )
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
        text = dumps(prune(spec))
    except (OSError, ValueError, PruneError) as exc:
        print(f"prune_openapi: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(text.encode("utf-8"))
    schemas = len(json.loads(text)["components"].get("schemas", {}))
    print(f"wrote {args.output} ({schemas} schemas, {len(text.encode('utf-8'))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
