"""Whatever bytes a suite file holds, loading fails only with an EvalkitError."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit import EvalkitError, check_suite, load_suite

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "prompt",
        "cases",
        "models",
        "params",
        "checks",
        "variants",
        "suffix",
        "samples",
        "vars",
        "expect",
        "id",
    ]
)
_suites = st.dictionaries(_keys, _json, max_size=6)
_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(path: Path) -> None:
    with contextlib.suppress(EvalkitError):
        check_suite(load_suite(path))


@given(text=st.text(max_size=300))
@_settings
def test_random_yaml_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    _load(path)


@given(data=_suites)
@_settings
def test_random_suite_shaped_data(tmp_path: Path, data: dict[str, object]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    _load(path)


@given(lines=st.lists(_json | st.text(max_size=40), max_size=5))
@_settings
def test_random_jsonl_lines(tmp_path: Path, lines: list[object]) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines), encoding="utf-8"
    )
    _load(path)


@given(raw=st.binary(max_size=200))
@_settings
def test_random_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(raw)
    _load(path)
