"""Shards and merge as CI uses them: `evalkit` subprocesses against the fake server.

The sharded GitHub Actions workflow of docs/ci.md is read from the page and its `run:` steps
are run as written (the matrix jobs side by side), so the documented recipe is what is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import evalkit
from evalkit.planning.shard import Shard, shard_of, shard_sizes
from evalkit.records.frame import frame_of_journal
from fake_openai import FakeOpenAI
from tests.conftest import cli_env, run_evalkit, run_settings

ROOT = Path(__file__).parent.parent
SUITE = "suites/support-triage.yaml"
# columns that differ between two runs of the same requests: when and how fast they ran
TIMING = ["run_id", "latency_s", "ttft_s", "started_at"]


def suite_text(cases: int, failing: set[int] = frozenset(), name: str = "support-triage") -> str:
    """A suite of `cases` cases whose prompts all differ (no answer is cached within a run);
    the fake answers `reply`, so case i passes unless i is in `failing` or i % 5 == 0."""
    lines = [
        f"name: {name}",
        "models: [openai/gpt-4o-mini]",
        "params: {temperature: 0, max_tokens: 8}",
        'prompt: "Ticket {{ ticket }}: which queue?\\nANSWER: {{ reply }}"',
        "checks:",
        "  - equals: billing",
        "cases:",
    ]
    for i in range(cases):
        reply = "technical" if i in failing or i % 5 == 0 else "billing"
        lines.append(f"  - {{id: t{i:04d}, vars: {{ticket: '{i}', reply: {reply}}}}}")
    return "\n".join(lines) + "\n"


def write_suite(folder: Path, text: str) -> Path:
    path = folder / SUITE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def shim(folder: Path) -> str:
    """A PATH with an `evalkit` that is this interpreter running this tree, as `pip install`
    would put it on a runner's PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "evalkit"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m evalkit "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def env_for(server: FakeOpenAI, folder: Path, **extra: str) -> dict[str, str]:
    env = cli_env(server.url)
    env["PATH"] = shim(folder)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_dir_of(result: subprocess.CompletedProcess[str]) -> Path:
    found = re.search(r"^run directory: (.+)$", result.stdout, re.MULTILINE)
    assert found, result.stdout + result.stderr
    return Path(found[1])


def rows(run_dir: Path) -> pd.DataFrame:
    """A run's rows without timing, in case order: what two runs of one suite share."""
    frame = evalkit.load_run(run_dir).drop(columns=TIMING)
    return frame.sort_values(["case_id", "variant", "model", "sample"]).reset_index(drop=True)


def comparison_facts(comparison: evalkit.RunComparison) -> dict[str, Any]:
    facts = dict(vars(comparison))
    facts.pop("base_run"), facts.pop("new_run")
    return facts


# ----------------------------------------------------------------------------- the rule


def test_the_shard_of_a_case_is_the_documented_hash_of_its_id_alone() -> None:
    for case_id in ["refund", "t0001", "ünïcode-✓", ""]:
        expected = int(hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:16], 16) % 7 + 1
        assert shard_of(case_id, 7) == expected
    before = evalkit.Suite.model_validate(yaml.safe_load(suite_text(40)))
    grown = yaml.safe_load(suite_text(40))
    grown["cases"].insert(3, {"id": "inserted", "vars": {"ticket": "x", "reply": "billing"}})
    after = evalkit.Suite.model_validate(grown)
    shards = {c.key: shard_of(c.key, 4) for c in before.cases}
    assert {c.key: shard_of(c.key, 4) for c in after.cases if c.key != "inserted"} == shards
    sizes = shard_sizes(before, 4, models=2)
    assert sum(s.cases for s in sizes) == 40 and all(s.requests == 2 * s.cases for s in sizes)
    assert [s.cases for s in sizes] == [
        sum(1 for v in shards.values() if v == i) for i in (1, 2, 3, 4)
    ]
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("0/3", "I must be from 1 to 3"),
        ("4/3", "I must be from 1 to 3"),
        ("x", "write I/N"),
        ("1/0", "must be at least 1"),
        ("2/4/6", "write I/N"),
    ],
)
def test_a_bad_shard_is_a_usage_error_and_nothing_is_sent(
    openai: FakeOpenAI, tmp_path: Path, given: str, says: str
) -> None:
    write_suite(tmp_path, suite_text(6))
    for args, extra in [
        (["run", SUITE, "--shard", given], {}),
        (["run", SUITE], {"EVALKIT_SHARD": given}),
        (["validate", SUITE, "--shard", given], {}),
    ]:
        result = run_evalkit(*args, cwd=tmp_path, env={**cli_env(openai.url), **extra})
        assert result.returncode == 2, result.stderr
        assert f"--shard {given!r} (or EVALKIT_SHARD): " in result.stderr and says in result.stderr
    assert openai.count() == 0 and not (tmp_path / "reports").exists()


def test_validate_prints_every_shards_cases_and_requests(tmp_path: Path) -> None:
    write_suite(tmp_path, suite_text(50))
    result = run_evalkit(
        "validate", SUITE, "--shard", "2/3", cwd=tmp_path, env=cli_env("http://127.0.0.1:9/v1")
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    suite = evalkit.load_suite(tmp_path / SUITE)
    counts = [s.cases for s in shard_sizes(suite, 3, models=1)]
    assert [(w[1], int(w[2]), int(w[4])) for w in lines] == [
        (f"{i}/3:", counts[i - 1], counts[i - 1]) for i in (1, 2, 3)
    ]
    assert sum(counts) == 50 and lines[1][-1] == "--shard" and len(lines[0]) == 6


def test_the_flag_wins_over_the_environment(openai: FakeOpenAI, tmp_path: Path) -> None:
    write_suite(tmp_path, suite_text(12))
    env = {**cli_env(openai.url), "EVALKIT_SHARD": "nonsense"}
    result = run_evalkit("run", SUITE, "--shard", "3/3", "--out", "runs", cwd=tmp_path, env=env)
    assert result.returncode in (0, 1), result.stderr
    manifest = json.loads((tmp_path / run_dir_of(result) / "manifest.json").read_text())
    assert manifest["shard"] == {"index": 3, "count": 3}
    ids = [f"t{i:04d}" for i in range(12) if shard_of(f"t{i:04d}", 3) == 3]
    assert openai.count() == len(ids) == manifest["planned"]["openai/gpt-4o-mini"]
    assert sorted(evalkit.load_run(tmp_path / run_dir_of(result))["case_id"]) == ids


# ----------------------------------------------------------------------------- the CI recipe


def sharded_workflow() -> dict[str, Any]:
    """The sharded workflow as docs/ci.md writes it."""
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (found,) = [b for b in blocks if "name: prompt-regression-sharded" in b]
    workflow: dict[str, Any] = yaml.safe_load(found)
    return workflow


def run_steps(job: dict[str, Any], matrix: dict[str, Any]) -> list[str]:
    """The job's `run:` steps but the install; none may use `${{ }}` (so they run here)."""
    scripts = [s["run"] for s in job["steps"] if "run" in s and not s["run"].startswith("pip ")]
    assert scripts and not any("${{" in s for s in scripts)
    return scripts


def job_env(job: dict[str, Any], matrix: dict[str, Any]) -> dict[str, str]:
    """The job's `env:` with the matrix filled in; secrets are the test's own."""
    out = {}
    for name, value in (job.get("env") or {}).items():
        for key, given in matrix.items():
            value = value.replace(f"${{{{ matrix.{key} }}}}", str(given))
        if "${{" not in value:
            out[name] = value
    return out


def step_with(job: dict[str, Any], action: str, matrix: dict[str, Any]) -> dict[str, str]:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith(action)]
    values = {}
    for name, value in step["with"].items():
        for key, given in matrix.items():
            value = str(value).replace(f"${{{{ matrix.{key} }}}}", str(given))
        values[name] = value
    return values


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A `run:` step as GitHub runs it: bash --noprofile --norc -eo pipefail."""
    return subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    """Wait for a process (killing it past `timeout`): its exit code and output."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def test_the_sharded_workflow_of_the_docs_merges_and_gates_like_one_run(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    """1,000 cases as 4 shards in parallel, merged, reported and gated on a baseline: the
    same rows, report statistics and `compare` verdict as the unsharded run."""
    workflow = sharded_workflow()
    shard_job, merge_job = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    shards = shard_job["strategy"]["matrix"]["shard"]
    count = len(shards)
    regressed = set(range(1, 1000, 11)) - {i for i in range(1000) if i % 5 == 0}
    base_text, new_text = suite_text(1000), suite_text(1000, failing=regressed)

    # main's baseline: the suite before the change, run whole
    main = tmp_path / "main"
    write_suite(main, base_text)
    baseline = run_evalkit("run", SUITE, "--out", "runs", cwd=main, env=env_for(openai, main))
    assert baseline.returncode == 1, baseline.stderr  # one case in five fails by design
    merge_dir = tmp_path / "merge-job"
    merge_dir.mkdir()
    shutil.copytree(main / run_dir_of(baseline), merge_dir / "baseline")

    # the pull request: each matrix job in its own checkout, all at once
    jobs = []
    for shard in shards:
        checkout = tmp_path / f"shard-job-{shard}"
        write_suite(checkout, new_text)
        matrix = {"shard": shard}
        env = env_for(openai, checkout, **job_env(shard_job, matrix))
        assert env["EVALKIT_SHARD"] == f"{shard}/{count}"
        (script,) = run_steps(shard_job, matrix)
        jobs.append((checkout, matrix, bash(script, checkout, env)))
    ended = [finish(process) for _, _, process in jobs]
    for (checkout, matrix, _), (code, out, err) in zip(jobs, ended, strict=True):
        assert code == 0, out + err  # failed checks are the merge job's to judge
        upload = step_with(shard_job, "actions/upload-artifact", matrix)
        download = step_with(merge_job, "actions/download-artifact", {})
        assert re.fullmatch(download["pattern"].replace("*", ".*"), upload["name"])
        shutil.copytree(checkout / upload["path"], merge_dir / download["path"] / upload["name"])
    assert openai.count() == 2000  # the baseline's 1,000 and the shards' 1,000, none twice

    summary = tmp_path / "step-summary.md"
    env = env_for(openai, merge_dir, GITHUB_STEP_SUMMARY=str(summary))
    outputs = [finish(bash(s, merge_dir, env)) for s in run_steps(merge_job, {})]
    (code, out, err), *_ = outputs
    assert code == 1, out + err  # the change regressed: the gate fails the job
    assert f"merged {count} shard(s): 1000 cases, 1000 rows, status complete" in out
    assert "REGRESSION: pass rate fell" in out
    assert summary.read_text(encoding="utf-8").startswith("## evalkit: support-triage")
    assert "Verdict: regression" in summary.read_text(encoding="utf-8")
    merged = merge_dir / "merged"
    assert {"manifest.json", "journal.jsonl", "results.parquet", "report.md"} <= {
        p.name for p in merged.iterdir()
    }

    # the same change run whole, in a fresh checkout (and so a fresh cache)
    whole_dir = tmp_path / "whole"
    write_suite(whole_dir, new_text)
    whole = run_evalkit(
        "run", SUITE, "--out", "runs", cwd=whole_dir, env=env_for(openai, whole_dir)
    )
    assert whole.returncode == 1, whole.stderr
    whole_run = whole_dir / run_dir_of(whole)

    pd.testing.assert_frame_equal(rows(merged), rows(whole_run))
    assert not evalkit.load_run(merged)["cached"].any()
    base_run = merge_dir / "baseline"
    assert comparison_facts(evalkit.compare_runs(base_run, merged)) == comparison_facts(
        evalkit.compare_runs(base_run, whole_run)
    )
    statistics = ["cases", "samples", "pass_rate", "mean_score", "stop_rate", "cost_usd"]
    summaries = [evalkit.summarize(evalkit.load_run(r))[statistics] for r in (merged, whole_run)]
    pd.testing.assert_frame_equal(*summaries)
    gate = [
        run_evalkit("compare", str(base_run), str(r), cwd=tmp_path, env=cli_env(openai.url))
        for r in (merged, whole_run)
    ]
    assert [g.returncode for g in gate] == [1, 1] and gate[0].stdout == gate[1].stdout
    # the merged run reads back from its journal as from its Parquet file
    parquet, journal = evalkit.load_run(merged), frame_of_journal(merged)
    assert len(parquet) == 1000 and set(parquet["run_id"]) == {"merged"}
    by_case = ["case_id", "variant", "model", "sample"]
    pd.testing.assert_frame_equal(
        parquet.sort_values(by_case).reset_index(drop=True),
        journal.sort_values(by_case).reset_index(drop=True),
    )


# ----------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def split(fake_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One suite (30 cases) run as 3 shards in parallel processes sharing one cache
    directory, whose first 10 cases were answered before: shard-1..3/ hold the shards,
    whole/ the unsharded run."""
    fake_server.reset()
    fake_server.latency_ms = 0
    folder = tmp_path_factory.mktemp("split")
    cache = folder / "shared-cache"
    env = env_for(fake_server, folder)
    write_suite(folder, suite_text(10))
    warm = run_evalkit(
        "run", SUITE, "--out", "warm", "--cache-dir", str(cache), cwd=folder, env=env
    )
    assert warm.returncode == 1, warm.stderr
    write_suite(folder, suite_text(30))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "evalkit", "run", SUITE, "--out", f"shard-{i}"],
            cwd=folder,
            env={**env, "EVALKIT_SHARD": f"{i}/3", "EVALKIT_CACHE_DIR": str(cache)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 3)
    ]
    for code, out, err in [finish(p) for p in processes]:
        assert code in (0, 1), out + err
    assert fake_server.count() == 10 + 20  # the warm-up's cases came from the shared cache
    whole = run_evalkit(
        "run", SUITE, "--out", "whole", "--cache-dir", str(cache), cwd=folder, env=env
    )
    assert whole.returncode == 1, whole.stderr
    assert fake_server.count() == 30  # every answer was in the cache the shards shared
    yield folder


def shard_dir(split: Path, index: int) -> Path:
    (run_dir,) = (split / f"shard-{index}").iterdir()
    return run_dir


def merge(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_evalkit("merge", *map(str, args), cwd=cwd, env=cli_env("http://127.0.0.1:9/v1"))


def test_merge_keeps_every_rows_cached_flag_and_reads_like_the_whole_run(
    split: Path, tmp_path: Path, fake_server: FakeOpenAI
) -> None:
    # any order, trailing slashes, folders holding one run directory (CI artifacts)
    result = merge(
        f"{split}/shard-3/", shard_dir(split, 1), f"{split}/shard-2/", "--out", "m", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run directory: m\nmerged 3 shard(s): 30 cases, 30 rows")
    merged = evalkit.load_run(tmp_path / "m")
    shards = pd.concat([evalkit.load_run(shard_dir(split, i)) for i in (1, 2, 3)])
    flags = dict(zip(shards["case_id"], shards["cached"], strict=True))
    assert dict(zip(merged["case_id"], merged["cached"], strict=True)) == flags
    assert sorted(c for c, hit in flags.items() if hit) == [f"t{i:04d}" for i in range(10)]
    (whole,) = (split / "whole").iterdir()
    answered = ["cached", "cost_usd", "attempts"]  # how each answer was had
    kept = rows(tmp_path / "m").drop(columns=answered)
    pd.testing.assert_frame_equal(kept, rows(whole).drop(columns=answered))
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["shard"] is None
    assert manifest["counts"]["cached"] == 10 and manifest["counts"]["samples"] == 30
    assert manifest["planned"] == {"openai/gpt-4o-mini": 30}
    assert [i["shard"]["index"] for i in manifest["merge"]["inputs"]] == [1, 2, 3]
    report = run_evalkit("report", "m", cwd=tmp_path, env=cli_env("http://127.0.0.1:9/v1"))
    assert report.returncode == 0, report.stderr
    resume = run_evalkit("run", "--resume", "m", cwd=tmp_path, env=cli_env("http://127.0.0.1:9/v1"))
    assert resume.returncode == 2 and "this run is complete" in resume.stderr
    sent = fake_server.count()
    gated = run_evalkit(
        "run",
        SUITE,
        "--baseline",
        str(tmp_path / "m"),
        "--cache-dir",
        str(split / "shared-cache"),
        "--out",
        str(tmp_path / "gated"),
        cwd=split,
        env=cli_env(fake_server.url),
    )
    assert fake_server.count() == sent  # every answer came from the shards' cache
    assert gated.returncode == 0, gated.stderr
    assert "NO REGRESSION" in gated.stdout and "30 paired cases" in gated.stdout


def refused(cwd: Path, *inputs: str | Path) -> str:
    """What `evalkit merge INPUTS --out m` says when it refuses (exit 2, nothing written)."""
    result = merge(*inputs, "--out", "m", cwd=cwd)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not (cwd / "m").exists()
    return result.stderr.strip()


def test_merge_refuses_a_missing_shard_naming_it(split: Path, tmp_path: Path) -> None:
    said = refused(tmp_path, shard_dir(split, 1), shard_dir(split, 3))
    assert said == "shard 2/3 is missing: give the run directories of all 3 shards"
    said = refused(tmp_path, shard_dir(split, 2))
    assert said.startswith("shards 1/3, 3/3 are missing")


def test_merge_refuses_the_same_shard_twice(split: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir(split, 2), copy)
    said = refused(tmp_path, shard_dir(split, 1), shard_dir(split, 2), copy, shard_dir(split, 3))
    assert said == f"{shard_dir(split, 2)} and {copy} are both shard 2/3: give each shard once"


def test_merge_refuses_a_whole_run_among_shards_and_whole_runs(split: Path, tmp_path: Path) -> None:
    (whole,) = (split / "whole").iterdir()
    said = refused(tmp_path, shard_dir(split, 1), whole, shard_dir(split, 2))
    assert said.startswith(f"{whole} ran the whole suite (no --shard), so it cannot be merged")
    assert refused(tmp_path, whole).startswith(f"{whole} is not a shard")


def test_merge_refuses_another_suite_or_other_parameters(
    split: Path, tmp_path: Path, fake_server: FakeOpenAI
) -> None:
    fake_server.latency_ms = 0
    env = env_for(fake_server, tmp_path)
    write_suite(tmp_path, suite_text(30).replace("max_tokens: 8", "max_tokens: 9"))
    edited = run_evalkit("run", SUITE, "--shard", "2/3", "--out", "edited", cwd=tmp_path, env=env)
    write_suite(tmp_path, suite_text(30))  # the same file as the shards'
    other = run_evalkit(
        "run", SUITE, "--shard", "2/3", "--samples", "2", "--out", "other", cwd=tmp_path, env=env
    )
    split_in_two = run_evalkit(
        "run", SUITE, "--shard", "2/2", "--out", "two", cwd=tmp_path, env=env
    )
    first = shard_dir(split, 1)
    said = refused(tmp_path, first, tmp_path / run_dir_of(edited), shard_dir(split, 3))
    assert said.startswith(
        f"{tmp_path / run_dir_of(edited)} is a run of another suite than {first}"
    )
    said = refused(tmp_path, first, tmp_path / run_dir_of(other), shard_dir(split, 3))
    assert said.startswith(
        f"{tmp_path / run_dir_of(other)} ran with other --samples than {first} (2 against None)"
    )
    said = refused(tmp_path, first, tmp_path / run_dir_of(split_in_two))
    assert said.startswith(
        f"{tmp_path / run_dir_of(split_in_two)} is shard 2/2 but {first} is shard 1/3"
    )


def test_merge_refuses_a_case_in_two_inputs_or_in_the_wrong_shard(
    split: Path, tmp_path: Path
) -> None:
    second = tmp_path / "second"
    shutil.copytree(shard_dir(split, 2), second)
    first_journal = (shard_dir(split, 1) / "journal.jsonl").read_text()
    with (second / "journal.jsonl").open("a") as journal:
        journal.write(first_journal.splitlines(keepends=True)[0])
    (second / "results.parquet").unlink()  # so the run reads back from its journal
    case = json.loads(first_journal.splitlines()[0])["case_id"]
    said = refused(tmp_path, shard_dir(split, 1), second, shard_dir(split, 3))
    assert said.startswith(f"case {case!r} is in both {shard_dir(split, 1)} and {second}")
    swapped = []
    for real, claimed in ((1, 2), (2, 1)):
        copy = tmp_path / f"shard-{real}-as-{claimed}"
        shutil.copytree(shard_dir(split, real), copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["shard"]["index"] = claimed
        (copy / "manifest.json").write_text(json.dumps(manifest))
        swapped.append(copy)
    said = refused(tmp_path, *swapped, shard_dir(split, 3))
    assert re.match(rf"{swapped[1]}: case 't\d+' belongs to shard 2/3, not 1/3: ", said), said


def test_merge_refuses_what_is_not_one_run_and_an_existing_out(split: Path, tmp_path: Path) -> None:
    said = refused(tmp_path, shard_dir(split, 1), tmp_path / "missing-one")
    assert said == f"{tmp_path / 'missing-one'}: no such run directory"
    assert refused(tmp_path, split) == f"{split}: not a run directory (no manifest.json)"
    two = tmp_path / "two"
    for i in (1, 2):
        shutil.copytree(shard_dir(split, i), two / shard_dir(split, i).name)
    said = refused(tmp_path, two)
    assert said.startswith(f"{two} holds 2 run directories (") and "give the one to merge" in said
    (tmp_path / "m").mkdir()
    result = merge(
        shard_dir(split, 1), shard_dir(split, 2), shard_dir(split, 3), "--out", "m", cwd=tmp_path
    )
    assert result.returncode == 2 and "cannot create run directory m" in result.stderr


# ----------------------------------------------------------------------------- kill, resume


def test_a_killed_shard_is_refused_then_resumed_and_merged(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    write_suite(tmp_path, suite_text(24))
    env = env_for(openai, tmp_path)
    done = []
    for i in (1, 3):
        result = run_evalkit(
            "run", SUITE, "--shard", f"{i}/3", "--out", f"shard-{i}", cwd=tmp_path, env=env
        )
        assert result.returncode in (0, 1), result.stderr
        done.append(tmp_path / run_dir_of(result))
    openai.latency_ms = 150
    killed = subprocess.Popen(
        [sys.executable, "-m", "evalkit", "run", SUITE, "-j", "1", "--out", "shard-2"],
        cwd=tmp_path,
        env={**env, "EVALKIT_SHARD": "2/3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    journal = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list((tmp_path / "shard-2").glob("*/journal.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            journal = found[0]
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    assert journal is not None, "the shard never journaled two requests"
    openai.latency_ms = 0
    second = journal.parent
    assert json.loads((second / "manifest.json").read_text())["status"] == "running"

    said = refused(tmp_path, done[0], second, done[1])
    assert said.startswith(f"{second}: shard 2/3 did not complete (status 'running')")
    assert f"`evalkit run --resume {second}`" in said and "--allow-incomplete" in said

    partial = merge(
        done[0], second, done[1], "--out", "partial", "--allow-incomplete", cwd=tmp_path
    )
    assert partial.returncode == 0, partial.stderr
    assert "not complete, merged with --allow-incomplete: shard(s) 2/3" in partial.stdout
    manifest = json.loads((tmp_path / "partial" / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["merge"]["incomplete"] == ["2/3"]
    assert manifest["merge"]["allow_incomplete"] is True
    report = run_evalkit(
        "report", "partial", "--format", "md", cwd=tmp_path, env=cli_env("http://127.0.0.1:9/v1")
    )
    assert report.returncode == 0, report.stderr
    assert (
        "> **Run incomplete**: merged with --allow-incomplete: shard 2/3"
        in (tmp_path / "partial" / "report.md").read_text()
    )

    wrong = run_evalkit("run", "--resume", str(second), "--shard", "1/3", cwd=tmp_path, env=env)
    assert wrong.returncode == 2 and "it ran shard 2/3" in wrong.stderr
    before = openai.count()
    resumed = run_evalkit(
        "run", "--resume", str(second), cwd=tmp_path, env={**env, "EVALKIT_SHARD": "2/3"}
    )
    assert resumed.returncode in (0, 1), resumed.stderr
    shard_two = sum(1 for i in range(24) if shard_of(f"t{i:04d}", 3) == 2)
    assert len(evalkit.load_run(second)) == shard_two
    sent = openai.count() - before
    assert 0 < sent <= shard_two - 2  # what was journaled before the kill is not sent again

    result = merge(done[0], second, done[1], "--out", "m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the incomplete merge resumed as a whole run ends with the same rows
    finished = run_evalkit("run", "--resume", "partial", cwd=tmp_path, env=env)
    assert finished.returncode in (0, 1), finished.stderr
    for merged in ("m", "partial"):
        frame = rows(tmp_path / merged).drop(columns=["cached", "cost_usd", "attempts"])
        assert len(frame) == 24 and frame["case_id"].is_unique
    pd.testing.assert_frame_equal(
        rows(tmp_path / "m")[["case_id", "output", "passed"]],
        rows(tmp_path / "partial")[["case_id", "output", "passed"]],
    )


def test_merge_keeps_the_thumbnails_of_every_shards_pictures(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    from PIL import Image

    colours = ["red", "blue", "green", "yellow", "black", "white"]
    for colour in colours:
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.new("RGB", (32, 24), colour).save(tmp_path / "photos" / f"{colour}.png")
    cases = "\n".join(f"  - {{id: {c}, vars: {{name: {c}}}}}" for c in colours)
    (tmp_path / "s.yaml").write_text(
        "models: [openai/gpt-4o]\nparams: {max_tokens: 8, temperature: 0}\nprompt:\n"
        "  - role: user\n    content:\n      - 'What colour is {{ name }}?'\n"
        f"      - image: photos/{{{{ name }}}}.png\ncases:\n{cases}\n",
        encoding="utf-8",
    )
    env = cli_env(openai.url)
    shards = []
    for i in (1, 2):
        result = run_evalkit(
            "run", "s.yaml", "--shard", f"{i}/2", "--out", f"s{i}", cwd=tmp_path, env=env
        )
        assert result.returncode in (0, 1), result.stderr
        shards.append(tmp_path / run_dir_of(result))
    thumbnails = [
        {p.name for p in (s / "images").iterdir()} for s in shards if (s / "images").is_dir()
    ]
    result = merge(*shards, "--out", "m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    merged = {p.name for p in (tmp_path / "m" / "images").iterdir()}
    assert len(merged) == len(colours) and merged == set().union(*thumbnails)
    report = run_evalkit("report", "m", "--format", "html", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr


def test_a_new_shard_run_is_offered_only_an_unfinished_run_of_its_own_shard(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    suite = evalkit.load_suite(write_suite(tmp_path, suite_text(8)))
    first = evalkit.run_suite(suite, run_settings(tmp_path, shard=Shard(1, 2)))
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    (first.run_dir / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    offered: list[Path] = []

    def offer(run_dir: Path) -> bool:
        offered.append(run_dir)
        return False

    for shard in (Shard(2, 2), None, Shard(1, 2)):
        evalkit.run_suite(suite, run_settings(tmp_path, shard=shard, offer_resume=offer))
    assert offered == [first.run_dir]
