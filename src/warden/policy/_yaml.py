"""YAML to a tree of located values, with duplicate keys and oddities rejected.

Uses libyaml's composer (``CSafeLoader``) for speed and walks the node graph
itself, so every value keeps its ``line:col`` and nothing but plain data
(mappings with string keys, sequences, scalars) can come out of a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from warden.policy._diagnostics import Diagnostic

try:
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_NODES: Final = 1_000_000
_STR_TAG: Final = "tag:yaml.org,2002:str"
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
MAX_DEPTH: Final = 64


@dataclass(slots=True)
class YNode:
    """A located YAML value: ``kind`` is map, seq or scalar."""

    kind: str
    line: int
    col: int
    value: Any = None
    items: dict[str, tuple[YNode, YNode]] = field(default_factory=dict)
    seq: list[YNode] = field(default_factory=list)
    style: str | None = None
    end_line: int = 0
    span: int = 0
    raw: str | None = None  # source text of a one-line quoted scalar with escapes

    def plain(self) -> Any:
        """The value as plain Python data (locations dropped)."""
        if self.kind == "map":
            return {k: v.plain() for k, (_, v) in self.items.items()}
        if self.kind == "seq":
            return [v.plain() for v in self.seq]
        return self.value


class _Walker:
    def __init__(self, filename: str, loader: Any, text: str = "") -> None:
        self.filename = filename
        self.loader = loader
        self.text = text
        self.implicit: dict[str, str] = {}  # plain scalar text -> the tag YAML gives it
        self.count = 0
        self.errors: list[Diagnostic] = []
        self.active: set[int] = set()

    def error(self, node: yaml.Node, code: str, message: str) -> None:
        mark = node.start_mark
        self.errors.append(Diagnostic(self.filename, mark.line + 1, mark.column + 1, code, message))

    def walk(self, node: yaml.Node, depth: int) -> YNode:
        self.count += 1
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            raise _TooLarge(
                Diagnostic(
                    self.filename,
                    line,
                    col,
                    "policy_too_large",
                    f"document is nested deeper than {MAX_DEPTH} levels "
                    f"or has more than {MAX_NODES} values",
                )
            )
        if id(node) in self.active:
            raise _TooLarge(
                Diagnostic(self.filename, line, col, "policy_parse_error", "recursive alias")
            )
        if not self.untagged(node):
            self.error(node, "policy_parse_error", f"YAML tags (`{node.tag}`) are not supported")
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            out = YNode("map", line, col)
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.error(
                        key_node, "policy_parse_error", "merge keys (`<<`) are not supported"
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != (
                    "tag:yaml.org,2002:str"
                ):
                    self.error(key_node, "policy_parse_error", "mapping keys must be strings")
                    continue
                key = key_node.value
                if key in out.items:
                    first = out.items[key][0]
                    self.error(
                        key_node,
                        "policy_duplicate_key",
                        f"duplicate key `{key}` (first at line {first.line})",
                    )
                    continue
                k = YNode(
                    "scalar", key_node.start_mark.line + 1, key_node.start_mark.column + 1, key
                )
                out.items[key] = (k, self.walk(value_node, depth + 1))
            self.active.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            out = YNode("seq", line, col, seq=[self.walk(n, depth + 1) for n in node.value])
            self.active.discard(id(node))
            return out
        style = getattr(node, "style", None)
        end_line, span = node.end_mark.line + 1, node.end_mark.index - node.start_mark.index
        if node.tag == _STR_TAG or not self.untagged(node):
            # most scalars: skip the (pure Python) constructor; a tagged one was reported
            raw = None
            if style in ("'", '"') and end_line == line and span != len(node.value) + 2:
                # escapes: keep the source so diagnostics inside it find their column
                raw = self.text[node.start_mark.index : node.end_mark.index]
            return YNode(
                "scalar", line, col, node.value, style=style, end_line=end_line, span=span, raw=raw
            )
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, "policy_parse_error", _one_line(str(exc)))
            value = None
        if isinstance(value, (bytes, set)) or type(value).__module__ == "datetime":
            self.error(
                node,
                "policy_parse_error",
                f"unsupported YAML value of type `{type(value).__name__}`; quote it",
            )
            value = str(node.value)
        return YNode("scalar", line, col, value, style=style, end_line=end_line, span=span)

    def untagged(self, node: yaml.Node) -> bool:
        """False when an explicit YAML tag changed what the node would otherwise be.

        ``!!str`` on a plain scalar is let through: it only says what quotes would.
        """
        if isinstance(node, yaml.MappingNode):
            return bool(node.tag == _MAP_TAG)
        if isinstance(node, yaml.SequenceNode):
            return bool(node.tag == _SEQ_TAG)
        if node.tag == _STR_TAG:
            return True
        if getattr(node, "style", None) not in (None, ""):  # quoted and block scalars are strings
            return False
        implicit = self.implicit.get(node.value)
        if implicit is None:
            implicit = self.implicit[node.value] = self.loader.resolve(
                yaml.ScalarNode, node.value, (True, False)
            )
        return bool(node.tag == implicit)


class _TooLarge(Exception):
    def __init__(self, diag: Diagnostic) -> None:
        self.diag = diag


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document has once aliases are expanded, in O(distinct nodes).

    Aliases share node objects, so a small file can stand for billions of values
    ("billion laughs"); counting with memoisation rejects it before any walking.
    A cycle (a recursive alias) returns 0 and is left for the walk to report.
    """
    memo: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.MappingNode):
                children = [c for pair in node.value for c in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            memo[key] = min(MAX_NODES + 1, 1 + sum(memo[id(c)] for c in children))
            continue
        if key in memo:
            continue
        if key in on_path:
            return 0  # a recursive alias: the walk reports it where it is
        on_path.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((c, False) for pair in node.value for c in pair if id(c) not in memo)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((c, False) for c in node.value if id(c) not in memo)
    return memo[id(root)]


def parse_yaml(text: str, filename: str) -> tuple[YNode | None, list[Diagnostic]]:
    """Parse one YAML document; on a syntax error return ``None`` and the error."""
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # a str from the API with lone surrogates
        msg = f"the text is not valid Unicode (character {exc.start})"
        return None, [Diagnostic(filename, 0, 0, "policy_parse_error", msg)]
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            problem = exc.problem or exc.context or "invalid YAML"
            return None, [Diagnostic(filename, line, col, "policy_parse_error", _one_line(problem))]
        except yaml.YAMLError as exc:
            return None, [Diagnostic(filename, 0, 0, "policy_parse_error", _one_line(str(exc)))]
        if root is None:
            return None, [Diagnostic(filename, 0, 0, "policy_parse_error", "the file is empty")]
        expanded = _expanded_size(root)
        if expanded > MAX_NODES:
            mark = root.start_mark
            return None, [
                Diagnostic(
                    filename,
                    mark.line + 1,
                    mark.column + 1,
                    "policy_too_large",
                    f"document expands to more than {MAX_NODES} values (through aliases)",
                )
            ]
        walker = _Walker(filename, loader, text)
        try:
            tree = walker.walk(root, 0)
        except _TooLarge as exc:
            return None, [exc.diag]
        except RecursionError:
            return None, [Diagnostic(filename, 0, 0, "policy_too_large", "document nests too deep")]
        return tree, walker.errors
    finally:
        loader.dispose()
