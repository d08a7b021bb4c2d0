"""An answer serialised once, for the cache row and the journal line.

Each choice's JSON text is encoded when the answer arrives (or kept as read from a cache row
this module wrote), the cache row is built from those texts, and the journal line splices
them in with each choice's check verdicts: a cached re-run journals its answers without
decoding and encoding them again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.records.entries import Answer

# json.dumps(v, separators=(",", ":"), default=str), its encoder built once: ASCII, one line
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_DECODER = json.JSONDecoder()
_ROW_HEAD = '{"choices":['  # how every cache row this module writes starts


@dataclass(slots=True)
class Encoded:
    """An answer and its choices' JSON texts (None: they must be encoded with the entry)."""

    answer: Answer
    choices: list[str] | None

    def row(self) -> str:
        """The cache row's text, built from the choices' texts."""
        rest = _JSON.encode({k: v for k, v in self.answer.items() if k != "choices"})
        texts = self.choices
        if texts is None:
            texts = [_JSON.encode(c) for c in self.answer["choices"]]
        return f"{_ROW_HEAD}{','.join(texts)}]{',' if len(rest) > 2 else ''}{rest[1:]}"


def encode(answer: Answer) -> Encoded:
    """Encode each of the answer's choices once, for the cache row and the journal line."""
    return Encoded(answer, [_JSON.encode(c) for c in answer["choices"]])


def decode(text: str) -> tuple[Any, list[str] | None]:
    """A cache row parsed, with its choices' texts when the row is one this module wrote (one
    ASCII line): they go into the journal as read, not decoded and encoded again. Raises
    ValueError (or RecursionError) when the row is not JSON."""
    if not (text.startswith(_ROW_HEAD) and text.isascii()) or "\n" in text or "\r" in text:
        return json.loads(text), None
    try:
        texts, choices, position = [], [], len(_ROW_HEAD)
        while True:
            choice, end = _DECODER.raw_decode(text, position)
            if not isinstance(choice, dict) or "checks" in choice:
                raise ValueError("not a choice this module wrote")
            choices.append(choice)
            texts.append(text[position:end])
            if text.startswith(",", end):
                position = end + 1
            elif text.startswith("]", end):
                break
            else:
                raise ValueError("not a list of choices")
        tail = text[end + 1 :]
        rest = {} if tail == "}" else json.loads("{" + tail[1:]) if tail[:1] == "," else None
        if not isinstance(rest, dict) or "choices" in rest:
            raise ValueError("not an answer this module wrote")
    except (ValueError, RecursionError):
        return json.loads(text), None
    return {"choices": choices, **rest}, texts


def journal_line(entry: Mapping[str, Any], choices: Sequence[str] | None = None) -> str:
    """The entry as one JSON line (without its newline); `choices`: its choices' texts as
    encoded before scoring, spliced in with each choice's verdicts, not encoded again."""
    listed = entry.get("choices")
    if choices is None or not isinstance(listed, list) or len(listed) != len(choices):
        return _JSON.encode(entry)
    head = _JSON.encode({k: v for k, v in entry.items() if k != "choices"})
    parts = ",".join(_with_checks(t, c) for t, c in zip(choices, listed, strict=True))
    return f'{head[:-1]}{"," if len(head) > 2 else ""}"choices":[{parts}]}}'


def _with_checks(text: str, choice: Mapping[str, Any]) -> str:
    if "checks" not in choice:
        return text
    checks = _JSON.encode(choice["checks"])
    return f'{text[:-1]}{"," if len(text) > 2 else ""}"checks":{checks}}}'
