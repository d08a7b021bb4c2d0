"""The response cache: SQLite (WAL), keyed by the request key, so no answer is paid for twice.

The key hashes (endpoint URL, the full body with its model, sample index): sampled repeats
never collide, and a changed prompt, parameter or model never hits. Only answers are cached,
never errors. A cache that cannot be opened (corrupt, locked, unwritable) is not fatal: the
run goes on without it and says so once, since results live in the run's journal anyway. A
row that is not an answer (see readback.py) is a miss, with a warning: the request is sent and
its answer replaces the row.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from evalkit.records.encoding import Encoded, decode
from evalkit.records.entries import Answer
from evalkit.records.images import ImageRefs, has_images
from evalkit.records.readback import answer_problem

if TYPE_CHECKING:
    from evalkit.planning.plan import Request

DEFAULT_DIR = ".evalkit"
FILE = "cache.sqlite"
_FLUSH_EVERY = 200
_KEYS_IN_MEMORY = 1_000_000  # up to this many cached answers, their keys are held in a set


def cache_dir(explicit: str | Path | None = None) -> Path:
    """`--cache-dir`, else `EVALKIT_CACHE_DIR`, else `.evalkit/` under the current directory."""
    return Path(explicit or os.environ.get("EVALKIT_CACHE_DIR") or DEFAULT_DIR)


class Cache:
    """Reads and writes answers; `read=False` is `--refresh` (write without reading)."""

    def __init__(self, folder: Path, read: bool = True) -> None:
        self.path = folder / FILE
        self.read = read
        self._pending: list[tuple[Any, ...]] = []
        self._db: sqlite3.Connection | None = None
        self._keys: set[str] | None = None
        self._images = ImageRefs()
        self.unusable = 0  # rows read that were not answers
        try:
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, url TEXT, model TEXT,"
                " sample INTEGER, body TEXT, answer TEXT, created_at REAL)"
            )
            (count,) = db.execute("SELECT count(*) FROM answers").fetchone()
            if count <= _KEYS_IN_MEMORY:  # a miss then costs a set lookup, not a query
                self._keys = {key for (key,) in db.execute("SELECT key FROM answers")}
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            print(
                f"warning: cache {self.path} is unusable ({exc}); running without the cache",
                file=sys.stderr,
            )

    def holds(self, key: str) -> bool:
        """Whether a row is kept for `key` (read, not decoded: `get` may still find it unusable)."""
        if self._db is None or not self.read:
            return False
        if self._keys is not None:
            return key in self._keys
        try:
            query = "SELECT 1 FROM answers WHERE key = ?"
            return self._db.execute(query, (key,)).fetchone() is not None
        except sqlite3.Error:
            return False

    def get(self, key: str) -> Encoded | None:
        """The answer kept for `key`, with its choices' texts as stored (see records.decode)."""
        if self._db is None or not self.read:
            return None
        if self._keys is not None and key not in self._keys:
            return None
        try:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        texts: list[str] | None = None
        try:
            answer, texts = decode(row[0])
        except (TypeError, ValueError, RecursionError):
            answer = None
            problem: str | None = "not JSON"
        else:
            problem = answer_problem(answer) or _not_unicode(row[0], answer)
        if problem is not None:
            self._unusable(key, problem)
            return None
        return Encoded(cast(Answer, answer), texts)

    def _unusable(self, key: str, problem: str) -> None:
        self.unusable += 1
        if self.unusable == 1:
            print(
                f"warning: cache {self.path}: the row for request {key} is not an answer "
                f"({problem}); sending the request again",
                file=sys.stderr,
            )

    def put(self, request: Request, answer: str) -> None:
        """Keep an answer (its JSON text, `Encoded.row`) under its request's key, with the
        key's parts for `explain`."""
        if self._db is None:
            return
        if self._keys is not None:
            self._keys.add(request.key)
        url = f"{request.target.base_url}/{request.endpoint}{request.target.url_query}"
        model = str(request.body.get("model"))
        wire = request.wire
        if has_images(wire):  # the key covers the pictures; the row needs only their hashes
            wire = json.dumps(self._images.body(request.body), separators=(",", ":"))
        row = (
            request.key,
            url,
            model,
            request.sample,
            wire,
            answer,
            time.time(),
        )
        self._pending.append(row)
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._db is None or not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            print(f"warning: could not write to the cache {self.path}: {exc}", file=sys.stderr)

    def close(self) -> None:
        if self.unusable > 1:
            print(
                f"warning: cache {self.path}: {self.unusable} rows were not answers; "
                "their requests were sent again",
                file=sys.stderr,
            )
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None


def stats(folder: Path) -> dict[str, Any]:
    """Entries, size on disk, and entries per model."""
    path = folder / FILE
    if not path.exists():
        return {"path": str(path), "entries": 0, "bytes": 0, "models": {}}
    db = sqlite3.connect(path)
    try:
        models = dict(db.execute("SELECT model, count(*) FROM answers GROUP BY model").fetchall())
    finally:
        db.close()
    size = sum(p.stat().st_size for p in folder.glob(FILE + "*"))
    return {"path": str(path), "entries": sum(models.values()), "bytes": size, "models": models}


def clear(folder: Path) -> int:
    """Delete every cached answer; returns how many there were."""
    removed = stats(folder)["entries"]
    for path in folder.glob(FILE + "*"):
        path.unlink()
    return int(removed)


def explain(folder: Path, run_dir: Path, case: str, model: str) -> list[dict[str, Any]]:
    """Each request of `case` × `model` in a run: its key, the key's parts, and whether the
    cache holds it now (for `evalkit cache explain`)."""
    from evalkit.errors import InputError
    from evalkit.records.fold import fold
    from evalkit.records.store import read_journal, read_manifest

    read_manifest(run_dir)
    found = []
    for entry in fold(read_journal(run_dir)).requests.values():
        if entry.get("case_id") != case:
            continue
        if model not in (entry.get("model"), entry.get("model_id")):
            continue
        stored = lookup_entry(folder, entry["key"])
        body = stored["body"] if stored else _body_from_journal(entry)
        found.append(
            {
                "key": entry["key"],
                "variant": entry.get("variant", ""),
                "sample": entry.get("sample"),
                "in_cache": stored is not None,
                "url": stored["url"]
                if stored
                else f"(not cached; endpoint {entry.get('endpoint')})",
                "model": entry.get("model_id"),
                "body": body,
            }
        )
    if not found:
        raise InputError(f"{run_dir}: no request for case '{case}' and model '{model}'")
    return found


def _body_from_journal(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The request body as sent, rebuilt from its journal line."""
    body: dict[str, Any] = {"model": str(entry.get("model_id", "")).split("/", 1)[-1]}
    prompt = entry.get("prompt")
    if entry.get("endpoint") == "responses" and isinstance(prompt, list):
        # the journal keeps the instructions as a system message before the input items
        first = prompt[0] if prompt else None
        if isinstance(first, dict) and first.get("role") == "system":
            body["instructions"], prompt = first.get("content"), prompt[1:]
        body["input"] = prompt
    else:
        body["messages" if entry.get("endpoint") == "chat" else "prompt"] = prompt
    if entry.get("suffix") is not None:
        body["suffix"] = entry["suffix"]
    return {**body, **(entry.get("params") or {})}


def lookup_entry(folder: Path, key: str) -> dict[str, Any] | None:
    """The stored row for `key` (for `evalkit cache explain`), or None."""
    path = folder / FILE
    if not path.exists():
        return None
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT url, model, sample, body, created_at FROM answers WHERE key = ?", (key,)
        ).fetchone()
    finally:
        db.close()
    if row is None:
        return None
    try:
        body: Any = json.loads(row[3])
    except (TypeError, ValueError, RecursionError):
        body = f"(not JSON: {str(row[3])[:200]!r})"  # a row changed by hand still explains
    return {"url": row[0], "model": row[1], "sample": row[2], "body": body, "created_at": row[4]}


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _not_unicode(raw: str, answer: Any) -> str | None:
    """Why a cached answer is unusable if it holds a lone surrogate, which earlier evalkit
    releases could store (a server's token cut an emoji): it breaks the journal and Parquet."""
    if not _SURROGATE_ESCAPE.search(raw):  # emoji are stored as escaped pairs; most rows have none
        return None
    try:
        json.dumps(answer, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "text that is not valid Unicode"
    return None
