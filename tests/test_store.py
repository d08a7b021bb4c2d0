"""The run directory: journal durability, torn lines, unreadable runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit import InputError, load_run
from evalkit.records.store import SCHEMA_VERSION, RunDir, read_journal


def _run(tmp_path: Path) -> RunDir:
    run = RunDir.create(tmp_path, "r1", {"suite": {"name": "s"}})
    run.open_journal()
    return run


def _entry(case: str) -> dict[str, object]:
    return {
        "key": case,
        "case_id": case,
        "variant": "",
        "model": "m",
        "sample": 0,
        "choices": [{"index": 0, "text": "out", "finish_reason": "stop"}],
        "started_at": "2026-01-01T00:00:00.000+00:00",
    }


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append(_entry("a"))
    run.append(_entry("b"))
    run.close_journal()
    with (run.path / "journal.jsonl").open("a") as journal:
        journal.write('{"key": "c", "case_id": "c", "cho')  # the process died here
    assert [e["case_id"] for e in read_journal(run.path)] == ["a", "b"]
    frame = load_run(run.path)  # still "running": read from the journal
    assert frame["case_id"].tolist() == ["a", "b"] and frame["output"].tolist() == ["out"] * 2


def test_manifest_is_replaced_atomically_and_records_status(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.finish("interrupted", reason="signal")
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["schema_version"] == SCHEMA_VERSION
    assert not (run.path / "manifest.json.tmp").exists()


def test_missing_and_foreign_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such run directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(InputError, match="not a run directory"):
        load_run(tmp_path)


def test_a_run_from_a_newer_evalkit_is_refused(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "r1", {})
    run.manifest["schema_version"] = SCHEMA_VERSION + 1
    run.write_manifest()
    with pytest.raises(InputError, match="newer evalkit"):
        load_run(run.path)


def test_an_existing_run_directory_is_never_overwritten(tmp_path: Path) -> None:
    RunDir.create(tmp_path, "r1", {})
    with pytest.raises(InputError, match="cannot create run directory"):
        RunDir.create(tmp_path, "r1", {})


def test_a_full_disk_fails_loudly_and_keeps_what_was_written(
    openai: object, tmp_path: Path
) -> None:
    """The file-size limit stands in for a full disk: the journal write fails mid-run."""
    import subprocess
    import sys

    cases = "".join(f"  - {{id: c{i}, vars: {{a: answer{i}}}}}\n" for i in range(200))
    (tmp_path / "s.yaml").write_text(
        "models: [openai/gpt-3.5-turbo]\nprompt: [{role: user, content: 'ANSWER: {{ a }}'}]\n"
        "cases:\n" + cases
    )
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from evalkit.cli import main\n"
        "sys.exit(main(['run', 's.yaml', '--out', 'runs', '--no-cache', '-j', '1']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert "cannot write the journal" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    kept = list(read_journal(run_dir))
    assert 10 < len(kept) < 200
    assert [e["case_id"] for e in kept] == [f"c{i}" for i in range(len(kept))]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "journal" in manifest["reason"]


def test_results_are_written_beside_the_journal(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append(_entry("a"))
    run.close_journal()
    frame = load_run(run.path)
    assert run.write_results(frame) is None
    run.finish("complete")
    assert load_run(run.path).equals(frame)  # read back from results.parquet


def test_results_that_cannot_be_written_leave_no_file_and_say_why(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append(_entry("a"))
    run.close_journal()
    frame = load_run(run.path)
    results = run.path / "results.parquet"
    results.symlink_to(tmp_path / "no such folder" / "results.parquet")  # opening it fails
    reason = run.write_results(frame)
    assert reason is not None and reason.startswith("cannot write results.parquet (")
    assert reason.endswith("the journal holds every result")
    assert not results.exists() and not results.is_symlink()


def test_a_line_spliced_from_encoded_choices_reads_back_as_the_entry(tmp_path: Path) -> None:
    entry = _entry("a")
    texts = [json.dumps(c, separators=(",", ":")) for c in entry["choices"]]  # type: ignore[attr-defined]
    entry["choices"][0]["checks"] = {"x": [True, 1.0, ""]}  # type: ignore[index]
    run = _run(tmp_path)
    run.append(entry, texts)
    run.close_journal()
    (line,) = (run.path / "journal.jsonl").read_text().splitlines()
    assert json.loads(line) == entry
    assert [e for e in read_journal(run.path)] == [entry]
