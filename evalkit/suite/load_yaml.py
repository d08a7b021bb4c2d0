"""YAML text → plain data and where each value was written, parsed once and bounded as it is.

A suite may be hostile: 600 bytes of aliases can stand for 10**9 strings (a "billion
laughs"), and lists nested 100,000 deep crash libyaml's C composer. So the nodes are composed
here, from libyaml's events, by a composer that refuses nesting deeper than `MAX_DEPTH`, an
alias inside the node it names, and aliases that repeat more than `MAX_ALIAS_NODES` nodes in
all, at the event that passes the bound: before the next node is built, and long before
anything is constructed from them. The text is parsed once (no screening pass over the event
stream first); the composer's other errors say what libyaml's would.

Every key and list item is then located (`Locator`), and duplicate keys and lone UTF-16
surrogates are located problems.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml import (
    AliasEvent,
    MappingEndEvent,
    MappingNode,
    MappingStartEvent,
    ScalarEvent,
    ScalarNode,
    SequenceEndEvent,
    SequenceNode,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.composer import ComposerError

from evalkit.errors import Problem
from evalkit.suite.locate import Locator, show_path

MAX_DEPTH = 100  # lists and mappings nested deeper than this are refused
MAX_ALIAS_NODES = 1_000_000  # nodes a YAML file's aliases may repeat, in all
SURROGATE = re.compile("[\ud800-\udfff]")
NOT_TEXT = "a lone UTF-16 surrogate (\\ud800-\\udfff) is not text; write the character itself"

_SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str, shown: str, problems: list[Problem]) -> tuple[Any, Locator]:
    """The data in `text` and where each value was written; what is wrong with it goes to
    `problems` (and the data is then None)."""
    locator = Locator(shown)
    try:
        with _collector_paused():
            loader = _BoundedLoader(text)
            try:
                node = loader.bounded_node()
                if node is not None:
                    _Indexer(locator, problems, "\\u" in text or "\\U" in text).index(node, ())
                data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
    except _Refused as exc:
        problems.append(Problem(shown, exc.line, "", exc.what))
        return None, locator
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        what = f"invalid YAML: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            what += f" ({context} started at line {context_mark.line + 1})"
        problems.append(Problem(shown, line, "", what))
        return None, locator
    return data, locator


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a file's nodes and data are built, and back on.

    They are a few million objects, alive until the suite is built and in no cycle (a
    recursive alias is refused): the collector would only walk them again and again as they
    grow, which was over half of a 10,000-case suite's load time.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Refused(Exception):
    """A bound passed at `line`: `what` is the problem to report."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(what)
        self.line, self.what = line, what


class _BoundedLoader(_SafeLoader):  # type: ignore[misc]
    """The safe loader (libyaml's, else PyYAML's), its nodes composed by `bounded_node`
    instead of its own composer."""

    def bounded_node(self) -> yaml.Node | None:
        """The single document's root node, None for an empty stream; raises `_Refused`
        at the event that passes a bound, and `ComposerError` as libyaml's composer would."""
        self.get_event()  # the stream's start
        if self.check_event(StreamEndEvent):
            self.get_event()
            return None
        self.get_event()  # the document's start
        root = self._compose()
        self.get_event()  # the document's end
        if not self.check_event(StreamEndEvent):
            event = self.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                root.start_mark,
                "but found another document",
                event.start_mark,
            )
        self.get_event()
        return root

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A node's value; a tagged scalar that is not what its tag says (`!!int x`,
        `!!binary` that is not base64) is a problem at its own line, not a crash."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            if isinstance(node, yaml.ScalarNode):
                what = f"invalid YAML: {node.value!r} is not a valid {tag}"
            else:
                what = f"invalid YAML: cannot build {tag} ({exc})"
            raise _Refused(_line(node), what) from None

    def _compose(self) -> yaml.Node:
        """One node and all it holds, from the events, without recursion; each collection
        and anchor counts the nodes it stands for, so an alias's repeat is known when it is
        met. Nodes keep their start mark (lines for errors) but not their end mark: nothing
        reads it, and a 10,000-case suite would keep 150,000 more objects alive."""
        get, resolve = self.get_event, self.resolve
        anchors: dict[str, yaml.Node] = {}
        sizes: dict[str, int] = {}  # anchor -> nodes its value expands to
        # per open collection: [node, anchor, nodes so far, a mapping's key awaiting its value]
        open_: list[list[Any]] = []
        repeated = 0
        while True:
            event = get()
            kind = type(event)
            node: yaml.Node
            if kind is ScalarEvent:
                anchor = event.anchor
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(ScalarNode, event.value, event.implicit)
                node = ScalarNode(tag, event.value, event.start_mark, None, event.style)
                if anchor is not None:
                    _new_anchor(anchors, anchor, event)
                    anchors[anchor] = node
                    sizes[anchor] = 1
                size = 1
            elif kind is SequenceStartEvent or kind is MappingStartEvent:
                if len(open_) >= MAX_DEPTH:
                    raise _Refused(_line(event), f"nested more than {MAX_DEPTH} levels deep")
                anchor = event.anchor
                tag = event.tag
                node_class = SequenceNode if kind is SequenceStartEvent else MappingNode
                if tag is None or tag == "!":
                    tag = resolve(node_class, None, event.implicit)
                node = node_class(tag, [], event.start_mark, None, event.flow_style)
                if anchor is not None:
                    _new_anchor(anchors, anchor, event)
                    anchors[anchor] = node
                open_.append([node, anchor, 1, None])
                continue
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                node, anchor, size, _ = open_.pop()
                if anchor is not None:
                    sizes[anchor] = size
            elif kind is AliasEvent:
                name = event.anchor
                if name not in anchors:
                    raise ComposerError(None, None, "found undefined alias", event.start_mark)
                if any(name == entry[1] for entry in open_):
                    raise _Refused(_line(event), f"alias *{name} is inside the node it names")
                node, size = anchors[name], sizes[name]
                repeated += size
                if repeated > MAX_ALIAS_NODES:
                    what = f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes; repeat less"
                    raise _Refused(_line(event), what)
            else:  # pragma: no cover  (libyaml sends no other event inside a document)
                raise ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)
            if not open_:
                return node
            parent = open_[-1]
            parent[2] += size
            if type(parent[0]) is SequenceNode:
                parent[0].value.append(node)
            elif parent[3] is None:
                parent[3] = node
            else:
                parent[0].value.append((parent[3], node))
                parent[3] = None


def _new_anchor(anchors: dict[str, yaml.Node], anchor: str, event: Any) -> None:
    """libyaml refuses an anchor defined twice in one document (YAML 1.2 would not)."""
    if anchor in anchors:
        raise ComposerError(
            "found duplicate anchor; first occurrence",
            anchors[anchor].start_mark,
            "second occurrence",
            event.start_mark,
        )


def _line(event: Any) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 1


class _Indexer:
    """Records the line of every key and item; flags duplicate keys and lone surrogates.

    A node an alias repeats is indexed once: errors inside a repeat point at the alias.
    """

    def __init__(self, locator: Locator, problems: list[Problem], surrogates: bool) -> None:
        self.locator, self.problems, self.surrogates = locator, problems, surrogates
        self.seen: set[int] = set()

    def index(self, node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.ScalarNode):
            self._text(node, path)
            return
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: the constructor refuses it
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    where = show_path((*path, key))
                    what = f"duplicate key '{key}' (first at line {first_line[key]})"
                    self.problems.append(Problem(self.locator.file, line, where, what))
                first_line[key] = line
                self._text(key_node, path)
                self.locator.add((*path, key), line, value_node.start_mark.line + 1)
                self.index(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.locator.add((*path, i), item.start_mark.line + 1)
                self.index(item, (*path, i))

    def _text(self, node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if self.surrogates and isinstance(node.value, str) and SURROGATE.search(node.value):
            line = node.start_mark.line + 1
            self.problems.append(Problem(self.locator.file, line, show_path(path), NOT_TEXT))
