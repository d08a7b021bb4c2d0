"""`run --sequential` against the loopback fake: rounds stop once decided, and say so.

The fake answers `ANSWER: <text>` with the text, so a candidate suite whose template gives a
wrong answer for some cases is a prompt change that breaks them; a small model is one with
`max_tokens: 1`, which cuts two-word answers. A changed first line makes every candidate
prompt new to the cache, so each case it uses is one the fake must answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit import SequentialSettings, Shard, load_run, load_suite, run_suite
from evalkit.errors import INCONCLUSIVE, UsageError
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings

CHAT = "/v1/chat/completions"


def _gate_suite(tmp_path: Path, name: str, wrong: set[int], cases: int, header: str = "") -> Path:
    """Case i wants `a{i}`; the cases in `wrong` answer `nope`. A `header` line (naming the
    case, so no two prompts are alike) makes every prompt new to the cache."""
    prompt = f"{header} {{{{ want }}}}\\nANSWER: {{{{ out }}}}" if header else "ANSWER: {{ out }}"
    lines = [
        "name: gate",
        "models: [openai/gpt-4o-mini]",
        "params: {max_tokens: 5}",  # what --max-cost reserves for a request stays small
        f'prompt: [{{role: user, content: "{prompt}"}}]',
        "checks: [{equals: '{{ want }}'}]",
        "cases:",
    ]
    for i in range(cases):
        out = "nope" if i in wrong else f"a{i}"
        lines.append(f"  - {{id: c{i}, vars: {{out: {out}, want: a{i}}}}}")
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _choice_suite(tmp_path: Path, cases: int, two_words: set[int], samples: int = 1) -> Path:
    """Two models: `small` (max_tokens 1) fails the cases whose answer has two words."""
    lines = [
        "name: pick",
        f"samples: {samples}",
        "models:",
        "  - {id: openai/gpt-4o-mini, label: small, params: {max_tokens: 1, temperature: 0}}",
        "  - {id: openai/gpt-4o, label: big, params: {temperature: 0}}",
        "prompt: [{role: user, content: 'ANSWER: {{ out }}'}]",
        "checks: [{equals: '{{ out }}'}]",
        "cases:",
    ]
    for i in range(cases):
        out = f"x{i} y" if i in two_words else f"x{i}"
        lines.append(f"  - {{id: c{i}, vars: {{out: '{out}'}}}}")
    path = tmp_path / "pick.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _baseline(tmp_path: Path, cases: int) -> Path:
    return run_suite(
        load_suite(_gate_suite(tmp_path, "base", set(), cases)), run_settings(tmp_path)
    ).run_dir


def _cli(server: FakeOpenAI, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    done = run_evalkit(
        "run",
        *args,
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
        cwd=tmp_path,
        env={**cli_env(server.url), "EVALKIT_CACHE_DIR": str(tmp_path / "cache")},
    )
    return done.returncode, done.stdout, done.stderr


def _run_dir(stdout: str) -> Path:
    line = next(x for x in stdout.splitlines() if x.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


def _record(run_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text())["sequential"]
    return record


def test_a_clear_regression_stops_early_and_exits_1(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _baseline(tmp_path, 200)
    openai.reset()
    new = _gate_suite(tmp_path, "new", {i for i in range(200) if i % 5 < 2}, 200, "Be brief.")
    code, out, err = _cli(openai, tmp_path, str(new), "--baseline", str(base), "--sequential")
    assert code == 1, out + err
    record = _record(_run_dir(out))
    sent = openai.count(CHAT)
    assert record["verdict"] == "regression" and record["stopped"] == "decided"
    assert sent == record["cases_sent"] < 100  # at most half of the suite was sent
    assert record["high"] < 0 or record["low"] < 0  # the interval is about candidate - baseline
    assert f"sequential gate: REGRESSION after {sent} of 200 cases" in out


def test_no_difference_runs_the_whole_suite_and_exits_0(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _baseline(tmp_path, 60)
    openai.reset()
    new = _gate_suite(tmp_path, "new", set(), 60, "Be brief.")
    code, out, err = _cli(openai, tmp_path, str(new), "--baseline", str(base), "--sequential")
    assert code == 0, out + err
    record = _record(_run_dir(out))
    assert openai.count(CHAT) == 60 and record["cases_sent"] == 60
    assert record["verdict"] == "no regression" and record["not_sent"]["cases"] == []
    assert record["low"] == record["high"] == 0.0  # every case is in: the suite's exact mean
    assert [r["sent"] for r in record["rounds"]] == [20, 50, 60]


def test_a_two_model_choice_decides_and_exits_0(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = _choice_suite(tmp_path, 200, {i for i in range(200) if i % 2})
    code, out, err = _cli(openai, tmp_path, str(suite), "--sequential")
    assert code == 0, out + err  # small fails many samples: the decision is the result
    record = _record(_run_dir(out))
    assert record["mode"] == "choice" and (record["a"], record["b"]) == ("small", "big")
    assert record["verdict"] == "B better" and record["low"] > 0
    assert openai.count(CHAT) == 2 * record["cases_sent"] < 200
    assert f"sequential choice: big better after {record['cases_sent']} of 200 cases" in out


def test_a_margin_says_the_dearer_model_is_not_better(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = _choice_suite(tmp_path, 300, set())  # both answer every case alike
    code, out, err = _cli(openai, tmp_path, str(suite), "--sequential", "--margin", "0.1")
    assert code == 0, out + err
    record = _record(_run_dir(out))
    assert record["verdict"] == "not better by margin" and record["dearer"] == "B"
    assert record["cases_sent"] < 300 and record["high"] < 0.1
    assert "big is not better by 10%: choose small" in out


def test_max_cases_is_inconclusive_with_its_own_exit_code(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = _baseline(tmp_path, 100)
    openai.reset()
    new = _gate_suite(tmp_path, "new", {7, 50}, 100, "Be brief.")  # too small to call in 30
    args = (str(new), "--baseline", str(base), "--sequential", "--max-cases", "30")
    code, out, err = _cli(openai, tmp_path, *args)
    assert code == INCONCLUSIVE == 5, out + err
    record = _record(_run_dir(out))
    assert record["verdict"] == "inconclusive" and record["stopped"] == "max-cases"
    assert openai.count(CHAT) == record["cases_sent"] == 30
    assert "INCONCLUSIVE (undecided at max-cases) after 30 of 100 cases" in out


def test_the_manifest_records_the_decision_and_rows_exist_only_for_sent_cases(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = _baseline(tmp_path, 200)
    new = _gate_suite(tmp_path, "new", {i for i in range(200) if i % 2}, 200, "Be brief.")
    asked = SequentialSettings(baseline=base, order_seed=7)
    result = run_suite(load_suite(new), run_settings(tmp_path, sequential=asked))
    assert result.exit_code == 1 and result.status == "complete"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    record = manifest["sequential"]
    assert (
        record["order_seed"] == 7 and record["alpha"] == 0.05 and record["outcome"] == "pass_fail"
    )
    assert record["suite_cases"] == record["compared_cases"] == 200 and record["cached_first"] == 0
    assert record["rounds"][0] == {**record["rounds"][0], "cases": 20, "sent": 20}
    assert record["cases_used"] == record["cases_sent"] == record["rounds"][-1]["sent"]
    sent = record["order"][: record["cases_sent"]]
    frame = load_run(result.run_dir)
    assert set(frame["case_id"]) == set(sent) and frame["error"].isna().all()
    assert record["not_sent"] == {
        "reason": "not sent because of the decision",
        "cases": [f"c{i}" for i in range(200) if f"c{i}" not in set(sent)],
    }
    cost = record["cost"]
    assert cost["spent_usd"] > 0 and cost["per_case_usd"] == pytest.approx(
        cost["spent_usd"] / len(sent)
    )
    assert cost["saved_usd"] == pytest.approx(cost["per_case_usd"] * (200 - len(sent)))
    assert manifest["counts"]["planned"] == len(sent) == manifest["planned"]["openai/gpt-4o-mini"]


def test_the_report_and_compare_say_the_decision(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _baseline(tmp_path, 200)
    new = _gate_suite(tmp_path, "new", {i for i in range(200) if i % 2}, 200, "Be brief.")
    code, out, _ = _cli(
        openai, tmp_path, str(new), "--baseline", str(base), "--sequential", "--report"
    )
    run_dir = _run_dir(out)
    assert code == 1
    markdown = (run_dir / "report.md").read_text()
    assert "**Sequential decision:** sequential gate: REGRESSION after" in markdown
    html = (run_dir / "report.html").read_text()
    assert (
        'class="banner bad" id="sequential">Sequential decision: sequential gate: REGRESSION'
        in html
    )
    compared = run_evalkit("compare", str(base), str(run_dir), cwd=tmp_path)
    assert "sequential gate: REGRESSION after" in compared.stdout


def test_sequential_with_a_shard_is_refused_before_sending(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    suite = _choice_suite(tmp_path, 40, set())
    code, _, err = _cli(openai, tmp_path, str(suite), "--sequential", "--shard", "1/2")
    assert code == 2 and "a shard must not decide alone" in err and "docs/sequential.md" in err
    assert openai.count(CHAT) == 0
    settings = run_settings(tmp_path, sequential=SequentialSettings(), shard=Shard(1, 2))
    with pytest.raises(UsageError, match="cannot run with --shard"):
        run_suite(load_suite(suite), settings)


def test_sequential_options_need_sequential_and_a_choice_needs_two_models(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    suite = _gate_suite(tmp_path, "one", set(), 10)
    code, _, err = _cli(openai, tmp_path, str(suite), "--margin", "0.05")
    assert code == 2 and "--margin goes with --sequential" in err
    code, _, err = _cli(openai, tmp_path, str(suite), "--sequential")
    assert code == 2 and "chooses between two models; this run has 1" in err
    code, _, err = _cli(openai, tmp_path, str(suite), "--sequential", "--gate", "pass_rate>=0.9")
    assert code == 2 and "--gate goes without --sequential" in err
    assert openai.count(CHAT) == 0


def test_the_order_seed_makes_the_order_reproducible(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = load_suite(_choice_suite(tmp_path, 120, {i for i in range(120) if i % 3 == 0}))

    def decided(seed: int, out: str) -> dict[str, Any]:
        asked = SequentialSettings(order_seed=seed)
        settings = run_settings(tmp_path, sequential=asked, cache=False, out=tmp_path / out)
        record = run_suite(suite, settings).sequential
        assert record is not None
        return record

    first, again, other = decided(3, "a"), decided(3, "b"), decided(4, "c")
    assert first["order"] == again["order"] and first["rounds"] == again["rounds"]
    assert first["cases_sent"] == again["cases_sent"] and first["verdict"] == again["verdict"]
    assert other["order"] != first["order"] and sorted(other["order"]) == sorted(first["order"])


def test_cached_cases_are_used_first_and_cost_nothing(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = load_suite(_choice_suite(tmp_path, 100, set()))
    capped = SequentialSettings(order_seed=1, max_cases=20)
    earlier = run_suite(suite, run_settings(tmp_path, sequential=capped)).sequential
    assert earlier is not None and earlier["verdict"] == "inconclusive"
    openai.reset()
    later = run_suite(suite, run_settings(tmp_path, sequential=SequentialSettings(order_seed=2)))
    record = later.sequential
    assert record is not None and record["cached_first"] == 20
    assert set(record["order"][:20]) == set(earlier["order"][:20])
    assert openai.count(CHAT) == 2 * (record["cases_sent"] - 20)  # the first round was free


def test_samples_resample_within_each_round(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = _choice_suite(tmp_path, 100, {i for i in range(100) if i % 2}, samples=3)
    code, out, err = _cli(openai, tmp_path, str(suite), "--sequential")
    assert code == 0, out + err
    record = _record(_run_dir(out))
    frame = load_run(_run_dir(out))
    assert record["verdict"] == "B better" and record["cases_sent"] < 100
    assert len(frame) == 3 * 2 * record["cases_sent"]  # every sent case, all its samples


def test_max_cost_stops_undecided_as_inconclusive(openai: FakeOpenAI, tmp_path: Path) -> None:
    base = _baseline(tmp_path, 200)
    openai.reset()
    new = _gate_suite(tmp_path, "new", {7, 50}, 200, "Be brief.")
    args = (str(new), "--baseline", str(base), "--sequential", "--max-cost", "0.0002")
    code, out, err = _cli(openai, tmp_path, *args)
    record = _record(_run_dir(out))
    assert code == INCONCLUSIVE, out + err
    assert record["verdict"] == "inconclusive" and record["stopped"] == "max-cost"
    assert record["rounds"][0]["sent"] == 20  # the first round was paid for whole
    assert 20 <= record["cases_used"] <= record["cases_sent"] == openai.count(CHAT) < 200
    assert "INCONCLUSIVE (undecided at max-cost)" in out


def test_a_killed_sequential_run_resumes_where_it_stopped(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = _baseline(tmp_path, 200)
    new = _gate_suite(tmp_path, "new", {i for i in range(200) if i % 4 == 0}, 200, "Be brief.")
    asked = SequentialSettings(baseline=base)
    whole = run_suite(load_suite(new), run_settings(tmp_path, sequential=asked, cache=False))
    assert whole.sequential is not None and whole.sequential["cases_sent"] > 30
    journal = whole.run_dir / "journal.jsonl"
    kept = journal.read_text().splitlines(keepends=True)[:30]  # killed in its second round
    journal.write_text("".join(kept))
    manifest = json.loads((whole.run_dir / "manifest.json").read_text())
    manifest.update(status="interrupted")
    (whole.run_dir / "manifest.json").write_text(json.dumps(manifest))
    openai.reset()
    code, out, err = _cli(openai, tmp_path, "--resume", str(whole.run_dir), "--no-cache")
    again = _record(whole.run_dir)
    assert code == 1, out + err
    assert again["order"] == whole.sequential["order"] and again["verdict"] == "regression"
    assert again["cases_sent"] == whole.sequential["cases_sent"]
    assert openai.count(CHAT) == again["cases_sent"] - 30  # the journal's 30 were reused
    assert len(load_run(whole.run_dir)) == again["cases_sent"]


def test_with_batch_each_round_is_one_batch_per_model(openai: FakeOpenAI, tmp_path: Path) -> None:
    suite = _choice_suite(tmp_path, 200, {i for i in range(200) if i % 5 == 0})
    args = (str(suite), "--sequential", "--batch", "--poll-interval", "0.05")
    code, out, err = _cli(openai, tmp_path, *args)
    assert code == 0, out + err
    record = _record(_run_dir(out))
    assert record["verdict"] == "B better" and len(record["rounds"]) >= 2
    stats = openai.batch_stats()
    assert stats["created"] == 2 * len(record["rounds"])
    assert stats["lines"] == 2 * record["cases_sent"] and openai.count(CHAT) == 0
