"""A run directory: `manifest.json`, an append-only `journal.jsonl`, `results.parquet`, and
`images/` (thumbnails of the pictures a run sent, see images.py).

Each finished request is one journal line, written and flushed before it counts as done, so
a killed run loses nothing that finished. A torn last line (the process died mid-write) is
ignored when reading, and a line that is not an entry (see readback.py) is skipped with a
warning. The manifest holds what a resume needs: suite path and hash, models, options. A
file that cannot be written (a full disk, a read-only directory) is a clear error, never a
half-written manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from evalkit.errors import InputError, RunError
from evalkit.records.encoding import journal_line
from evalkit.records.images import FOLDER as IMAGES
from evalkit.records.images import ImageRefs
from evalkit.records.readback import journal_problem

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
RESULTS = "results.parquet"
WARN_LINES = 5  # lines skipped with a warning of their own; the rest are counted


@dataclass
class _Appended:
    """What this process appended to one journal, so that reading it back can tell its own
    lines (written from entries, not to be re-validated) from lines others wrote."""

    device: int
    inode: int
    lines_before: int | None  # lines the journal held when opened; None: cannot be told
    size: int  # bytes after this process's last append


_APPENDED: dict[str, _Appended] = {}  # by the journal's absolute path


_NOW: list[Any] = [-1, ""]  # the last millisecond asked for, and its text


def now_iso() -> str:
    """The time now, UTC, to the millisecond; formatted once per millisecond (a run asks for
    it once per request, thousands of times a second)."""
    now = time.time()
    millisecond = int(now * 1000)
    if millisecond != _NOW[0]:
        moment = datetime.fromtimestamp(millisecond / 1000, timezone.utc)
        _NOW[:] = [millisecond, moment.isoformat(timespec="milliseconds")]
    return str(_NOW[1])


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
        self._failure: str | None = None  # why the journal could not be written
        self._appended_key = ""  # the open journal's key in _APPENDED, found once per open
        self._images = ImageRefs(path / IMAGES)

    @classmethod
    def create(cls, root: Path, run_id: str, manifest: dict[str, Any]) -> RunDir:
        path = root / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise InputError(f"cannot create run directory {path}: {exc.strerror}") from None
        run = cls(path, {"schema_version": SCHEMA_VERSION, "run_id": run_id, **manifest})
        run.manifest.update(status="running", started_at=now_iso(), finished_at=None)
        try:
            write_atomically(path / MANIFEST, run._manifest_text())
        except OSError as exc:  # nothing was sent: leave nothing behind either
            shutil.rmtree(path, ignore_errors=True)
            raise InputError(
                f"cannot create run directory {path}: cannot write {MANIFEST} ({exc.strerror})"
            ) from None
        return run

    def open_journal(self) -> None:
        """Open for appending (once), first cutting a torn last line a killed writer left
        behind; InputError when the journal cannot be written (a read-only run directory)."""
        if self._journal is not None:
            return
        path = self.path / JOURNAL
        try:
            if path.is_file() and path.stat().st_size:
                _cut_torn_tail(path)
            self._journal = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot append to the journal {path}: {exc.strerror}") from None
        self._appended_key = os.path.abspath(path)
        _APPENDED.pop(self._appended_key, None)
        with contextlib.suppress(OSError):
            _APPENDED[self._appended_key] = _appended(path, os.fstat(self._journal.fileno()))

    def append(self, entry: Mapping[str, Any], choices: Sequence[str] | None = None) -> None:
        """Write one finished request (`choices`: its choices' JSON texts, see
        records.journal_line); fails loudly (RunError) if it cannot be written, and every
        later append repeats why."""
        if self._journal is None:
            raise RunError(self._failure or f"the journal {self.path / JOURNAL} is not open")
        if entry.get("endpoint") in ("chat", "responses"):
            prompt = self._images.messages(entry.get("prompt"))
            if prompt is not entry.get("prompt"):
                entry = {**entry, "prompt": prompt}
        line = journal_line(entry, choices) + "\n"  # ASCII
        try:
            self._journal.write(line)
            self._journal.flush()
        except OSError as exc:
            _APPENDED.pop(self._appended_key, None)  # its end is unknown
            journal, self._journal = self._journal, None
            with contextlib.suppress(OSError):
                journal.close()  # its buffer cannot be written either; drop it
            self._failure = (
                f"cannot write the journal {self.path / JOURNAL}: {exc.strerror}; "
                "everything written before this request is kept"
            )
            raise RunError(self._failure) from None
        appended = _APPENDED.get(self._appended_key)
        if appended is not None:
            appended.size += len(line)

    def close_journal(self) -> None:
        """Flush the journal to disk and close it; RunError when the disk refuses."""
        journal, self._journal = self._journal, None
        if journal is None:
            return
        try:
            journal.flush()
            os.fsync(journal.fileno())
        except OSError as exc:
            raise RunError(
                f"cannot write the journal {self.path / JOURNAL}: {exc.strerror}; "
                "its last lines may be lost"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                journal.close()

    def write_results(self, results: list[dict[str, Any]] | pd.DataFrame) -> str | None:
        """Write `results.parquet` from a run's rows (`rows.records`, without pandas) or a
        DataFrame; why it could not be written (a full disk), or None. A partial file is
        removed: the journal holds every result, and load_run reads it."""
        from evalkit.records.table import write_frame, write_rows

        path = self.path / RESULTS
        try:
            if isinstance(results, list):
                write_rows(results, path)
            else:
                write_frame(results, path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            return f"cannot write {RESULTS} ({exc}); the journal holds every result"
        return None

    def finish(self, status: str, **fields: Any) -> None:
        self.close_journal()
        self.manifest.update(status=status, finished_at=now_iso(), **fields)
        self.write_manifest()

    def write_manifest(self) -> None:
        """Replace the manifest atomically; a failure (a full disk) is a RunError saying that
        the old manifest is whole and the run can be resumed."""
        try:
            write_atomically(self.path / MANIFEST, self._manifest_text())
        except OSError as exc:
            raise RunError(
                f"cannot write {self.path / MANIFEST} ({exc.strerror}); it still holds the run's "
                f"earlier state and the journal every finished request: "
                f"`evalkit run --resume {self.path}` continues the run once it can be written"
            ) from None

    def _manifest_text(self) -> str:
        return json.dumps(self.manifest, indent=2, default=str) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` through a temporary file, so that a crash or a full disk leaves
    the old file whole and no temporary file behind; raises the OSError."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


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


def _appended(path: Path, stat: os.stat_result) -> _Appended:
    """The journal at `path` as this process opens it for appending (`stat` of the open file)."""
    # lines are counted as `read_journal` reads them (universal newlines): only when the
    # earlier lines hold no carriage return can their number be told from b"\n"
    before: int | None = 0
    with path.open("rb") as earlier:
        left = stat.st_size
        while left > 0 and before is not None:
            chunk = earlier.read(min(left, 1 << 20))
            if not chunk or b"\r" in chunk:
                before = None
            else:
                before += chunk.count(b"\n")
                left -= len(chunk)
    return _Appended(stat.st_dev, stat.st_ino, before, stat.st_size)


def _own_lines_from(path: Path) -> int | None:
    """The line number after which every line of `path` was appended by this process, when
    the file is still exactly what this process left (None otherwise)."""
    appended = _APPENDED.get(os.path.abspath(path))
    if appended is None or appended.lines_before is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    if (stat.st_dev, stat.st_ino, stat.st_size) != (
        appended.device,
        appended.inode,
        appended.size,
    ):
        return None
    return appended.lines_before


def read_journal(run_dir: Path, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Every complete journal entry, in order. A torn last line (the writer died mid-line) is
    skipped quietly; a line that is not an entry (not JSON, `{}`, a request without its key)
    is skipped with a warning on standard error, unless `warn` is False. Lines this process
    appended itself (the file unchanged since) are entries by construction and are only
    parsed."""
    path = run_dir / JOURNAL
    if not path.exists():
        return
    own_after = _own_lines_from(path)
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
                own = own_after is not None and number > own_after
                problem = None if own else journal_problem(entry)
            if problem is None:
                yield entry
                continue
            skipped += 1
            if warn and skipped <= WARN_LINES:
                print(f"warning: {path}:{number}: {problem}; line skipped", file=sys.stderr)
    if warn and skipped > WARN_LINES:
        more = skipped - WARN_LINES
        print(f"warning: {path}: {more} more line(s) that are not entries skipped", file=sys.stderr)
