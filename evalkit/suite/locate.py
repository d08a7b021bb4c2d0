"""Where each value of a suite was written: (file, line) for every key and list item.

Validation errors carry a path into the data (`cases[3].expect[0]`); this maps the path
back to the file the user wrote, so every message can start `FILE:LINE:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]


# (file, line of the key or list item, line where its value starts); a plain tuple, since a
# 100,000-case suite records a million of them
Spot = tuple[str, int, int]


@dataclass
class Locator:
    """Spots by data path; a path not recorded falls back to its nearest recorded parent."""

    file: str
    spots: dict[Path, Spot] = field(default_factory=dict)

    def add(self, path: Path, key_line: int, value_line: int | None = None, file: str = "") -> None:
        self.spots[path] = (file or self.file, key_line, value_line or key_line)

    def line_of(self, path: Path, value: bool = False) -> tuple[str, int]:
        """The file and line of `path`: of the value when `value`, else of its key."""
        for end in range(len(path), -1, -1):
            spot = self.spots.get(path[:end])
            if spot is not None:
                file, key_line, value_line = spot
                return file, value_line if (value and end == len(path)) else key_line
        return self.file, 1


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "tuple", "set"})


def _is_key(part: str) -> bool:
    return part.isidentifier() and part not in _TYPE_TAGS and not part[0].isupper()


def data_path(data: Any, loc: tuple[Any, ...]) -> Path:
    """The part of a pydantic error location that names real keys and indexes in `data`.

    Pydantic inserts union member names ('str', 'list[Message]', ...) into locations; those
    are not in the user's file and are dropped.
    """
    out: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and _is_key(part):
            out.append(part)  # a missing or unknown key: the last real step
            node = None
    return tuple(out)


def show_path(path: Path) -> str:
    """`cases[3].expect[0]` for ('cases', 3, 'expect', 0)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
