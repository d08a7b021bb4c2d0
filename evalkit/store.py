"""A run directory: `manifest.json`, an append-only `journal.jsonl`, `results.parquet`.

Each finished request is one journal line, written and flushed before it counts as done, so
a killed run loses nothing that finished. A torn last line (the process died mid-write) is
ignored when reading. The manifest holds what a resume needs: suite path and hash, models,
options.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from evalkit.entries import journal_problem
from evalkit.errors import InputError, RunError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
RESULTS = "results.parquet"
WARN_LINES = 5  # lines skipped with a warning of their own; the rest are counted


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def new_run_id(suite_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", suite_name).strip("-")[:40] or "suite"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


class RunDir:
    """Writes one run directory; `append` is called once per finished request."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._journal: IO[str] | None = None

    @classmethod
    def create(cls, root: Path, run_id: str, manifest: dict[str, Any]) -> RunDir:
        path = root / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise InputError(f"cannot create run directory {path}: {exc.strerror}") from None
        run = cls(path, {"schema_version": SCHEMA_VERSION, "run_id": run_id, **manifest})
        run.manifest.update(status="running", started_at=now_iso(), finished_at=None)
        run.write_manifest()
        return run

    def open_journal(self) -> None:
        """Open for appending, first cutting a torn last line a killed writer left behind."""
        path = self.path / JOURNAL
        if path.is_file() and path.stat().st_size:
            _cut_torn_tail(path)
        self._journal = path.open("a", encoding="utf-8")

    def append(self, entry: dict[str, Any]) -> None:
        """Write one finished request; fails loudly (RunError) if it cannot be written."""
        if self._journal is None:
            raise RunError(f"the journal {self.path / JOURNAL} is closed after a write failed")
        try:
            self._journal.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
            self._journal.flush()
        except OSError as exc:
            journal, self._journal = self._journal, None
            with contextlib.suppress(OSError):
                journal.close()  # its buffer cannot be written either; drop it
            raise RunError(
                f"cannot write the journal {self.path / JOURNAL}: {exc.strerror}; "
                "everything written before this request is kept"
            ) from None

    def close_journal(self) -> None:
        if self._journal is not None:
            try:
                self._journal.flush()
                os.fsync(self._journal.fileno())
            finally:
                self._journal.close()
                self._journal = None

    def finish(self, status: str, **fields: Any) -> None:
        self.close_journal()
        self.manifest.update(status=status, finished_at=now_iso(), **fields)
        self.write_manifest()

    def write_manifest(self) -> None:
        """Replace the manifest atomically: a crash leaves the old one or the new one."""
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / MANIFEST)


def _cut_torn_tail(path: Path) -> None:
    """Truncate the file after its last newline (reading only its tail)."""
    with path.open("rb+") as journal:
        end = journal.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - 65536)
            journal.seek(start)
            chunk = journal.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                if keep != end:
                    journal.truncate(keep)
                return
            position = start
        journal.truncate(0)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest; a clear error for a directory that is not a run."""
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{run_dir}: not a run directory (no {MANIFEST})") from None
    except ValueError as exc:
        raise InputError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: manifest is not a JSON object")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            f"{run_dir}: written by a newer evalkit (run schema {version}, this evalkit reads "
            f"up to {SCHEMA_VERSION}); upgrade evalkit to read it"
        )
    return dict(manifest)


def read_journal(run_dir: Path, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Every complete journal entry, in order. A torn last line (the writer died mid-line) is
    skipped quietly; a line that is not an entry (not JSON, `{}`, a request without its key)
    is skipped with a warning on standard error, unless `warn` is False."""
    path = run_dir / JOURNAL
    if not path.exists():
        return
    skipped = 0
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                break
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                problem: str | None = "not JSON"
            else:
                problem = journal_problem(entry)
            if problem is None:
                yield entry
                continue
            skipped += 1
            if warn and skipped <= WARN_LINES:
                print(f"warning: {path}:{number}: {problem}; line skipped", file=sys.stderr)
    if warn and skipped > WARN_LINES:
        more = skipped - WARN_LINES
        print(f"warning: {path}: {more} more line(s) that are not entries skipped", file=sys.stderr)
