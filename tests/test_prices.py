"""OpenAI models by name, with prices and context windows from the genai-prices package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from evalkit import UnknownModel, load_run, load_suite, run_suite
from evalkit.models import prices
from evalkit.models.catalog import lookup
from evalkit.models.targets import resolve
from evalkit.planning.planner import plan
from evalkit.suite.endpoints import ModelSpec
from fake_openai import FakeOpenAI
from tests.conftest import run_settings

Write = Callable[[str, str], Path]


def _package_price(name: str) -> tuple[float, float, float | None]:
    """The package's own answer, read here independently of evalkit's table."""
    from genai_prices import Usage, calc_price

    million = 1_000_000
    fresh = calc_price(Usage(input_tokens=million), model_ref=name, provider_id="openai")
    out = calc_price(Usage(output_tokens=million), model_ref=name, provider_id="openai")
    cached = calc_price(
        Usage(input_tokens=million, cache_read_tokens=million),
        model_ref=name,
        provider_id="openai",
    )
    return float(fresh.total_price), float(out.total_price), float(cached.total_price)


@pytest.mark.parametrize("name", ["gpt-4.1", "gpt-4o", "o3", "gpt-5", "gpt-4"])
def test_prices_match_the_package(name: str) -> None:
    info = lookup(f"openai/{name}")
    assert info is not None and info.price_source.startswith("genai-prices ")
    fresh, out, cached = _package_price(name)
    assert (info.input_per_mtok, info.output_per_mtok) == pytest.approx((fresh, out))
    if info.cached_input_per_mtok is not None:
        assert info.cached_input_per_mtok == pytest.approx(cached)


def test_a_model_newer_than_the_table_runs_by_name_and_costs_the_packages_price(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 400},
    }
    openai.script([{"usage": usage}])
    path = write("s.yaml", 'prompt: "Q"\nparams: {max_tokens: 8}\ncases: [{id: a}]\n')
    settings = run_settings(tmp_path, models=["openai/gpt-4.1"])
    frame = load_run(run_suite(load_suite(path), settings).run_dir)
    fresh, out, cached = _package_price("gpt-4.1")
    expected = (600 * fresh + 400 * cached + 100 * out) / 1_000_000
    assert frame["cost_usd"].tolist() == pytest.approx([expected])


def test_a_reasoning_model_by_name_gets_max_completion_tokens(write: Write) -> None:
    path = write("s.yaml", 'prompt: "Q"\nparams: {max_tokens: 32}\ncases: [{id: a}]\n')
    suite = load_suite(path)
    for name in ("o3-mini", "o4-mini", "gpt-5"):
        target = resolve(ModelSpec(id=f"openai/{name}"), {}, {"OPENAI_API_KEY": "sk-test"})
        assert target.info.reasoning, name
        [request] = plan(suite, target)
        assert request.body["max_completion_tokens"] == 32 and "max_tokens" not in request.body
    chat = resolve(ModelSpec(id="openai/gpt-5-chat-latest"), {}, {})
    assert not chat.info.reasoning  # the chat snapshot of gpt-5 does not reason


def test_the_table_keeps_what_the_package_lacks() -> None:
    instruct = lookup("openai/gpt-3.5-turbo-instruct")
    assert instruct is not None
    assert instruct.kind == "completions" and instruct.supports_suffix
    assert instruct.context_window == 4096  # the package says 16,385; the model takes 4,096
    assert instruct.price_source.startswith("genai-prices")
    moderation = lookup("openai/omni-moderation-latest")
    assert moderation is not None and moderation.price_source == "evalkit"


def test_an_unknown_model_still_says_what_it_might_be() -> None:
    with pytest.raises(UnknownModel, match=r"did you mean 'openai/gpt-4\.1'"):
        resolve(ModelSpec(id="openai/gpt-4.11"), {}, {})


def test_what_is_read_from_the_package_is_kept_and_read_back_without_it(
    tmp_path: Path,
) -> None:
    """The first process reads genai-prices (0.25 s of imports) and keeps a small file; the
    next reads that file and never imports the package."""
    code = (
        "import sys; from evalkit.models.catalog import lookup; "
        "info = lookup('openai/gpt-4.1'); "
        "print(info.input_per_mtok, 'genai_prices' in sys.modules)"
    )
    env = {**os.environ, "EVALKIT_PRICES_DIR": str(tmp_path / "prices")}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.stdout.split() == ["2.0", "True"], first.stderr
    assert second.stdout.split() == ["2.0", "False"], second.stderr
    [kept] = (tmp_path / "prices").iterdir()
    assert kept.name == f"openai-prices-{prices.source().split()[-1]}-2.json"
    assert json.loads(kept.read_text())["gpt-4.1"][:2] == [2.0, 8.0]


def test_a_folder_that_cannot_be_written_only_means_the_package_is_read_each_time(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    code = "from evalkit.models.catalog import lookup; print(lookup('openai/o3').input_per_mtok)"
    env = {**os.environ, "EVALKIT_PRICES_DIR": str(blocked / "prices")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "2.0", done.stderr
