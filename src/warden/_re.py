"""Linear-time pattern matching (RE2) and globs, for text that may be hostile."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import re2

__all__ = [
    "ByTool",
    "PatternError",
    "compile_glob",
    "compile_regex",
    "glob_literal_prefix",
    "is_literal",
    "search",
]

_OPTIONS: Final = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20

_GLOB_META: Final = frozenset("*?[")
T = TypeVar("T")


class PatternError(ValueError):
    """A regex or glob pattern does not compile."""


def compile_regex(pattern: str) -> Any:
    """Compile an RE2 pattern; raise PatternError with RE2's one-line reason."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except UnicodeEncodeError:
        raise PatternError("the pattern holds a lone surrogate (not valid Unicode)") from None
    except re2.error as exc:
        msg = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        raise PatternError(str(msg)) from None


def is_literal(glob: str) -> bool:
    """True when ``glob`` has no wildcard and so matches only itself."""
    return not any(c in _GLOB_META for c in glob)


def glob_literal_prefix(glob: str) -> str:
    """The part of ``glob`` before its first wildcard."""
    for i, c in enumerate(glob):
        if c in _GLOB_META:
            return glob[:i]
    return glob


def _translate(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            while i < n and glob[i] == "*":
                i += 1
            out.append("(?s:.*)")
        elif c == "?":
            out.append("(?s:.)")
        elif c == "[":
            j = i
            if j < n and glob[j] in "!^":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                out.append(re2.escape("["))
                continue
            body = glob[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            parts = []
            for k, ch in enumerate(body):
                if ch == "-" and 0 < k < len(body) - 1:
                    parts.append("-")
                else:
                    parts.append(ch if ch.isalnum() or ord(ch) > 127 else "\\" + ch)
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        else:
            out.append(re2.escape(c))
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_glob(glob: str) -> Any:
    """Compile a shell-style glob (``*``, ``?``, ``[seq]``, ``[!seq]``) to an anchored RE2.

    ``*`` matches any run of characters, dots and slashes included; matching is
    case-sensitive and over the whole string.
    """
    try:
        translated = _translate(glob)
    except UnicodeEncodeError:
        raise PatternError("the pattern holds a lone surrogate (not valid Unicode)") from None
    return compile_regex("^" + translated + "$")


def search(rx: Any, s: str) -> bool:
    """``rx.search(s) is not None``, also for strings RE2 cannot encode.

    A lone surrogate (from an agent's JSON) is one character that no pattern
    character can name: it is matched as U+FFFD, so ``?`` and ``*`` still cover
    it and literals never do.
    """
    try:
        return rx.search(s) is not None
    except UnicodeEncodeError:
        fixed = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)
        return rx.search(fixed) is not None


class ByTool(Generic[T]):
    """The items that apply to a tool name, computed once per name.

    Bounded (tool names come from agents): the memo is cleared past ``max_tools``.
    """

    __slots__ = ("_applies", "_cache", "_items", "_max")

    def __init__(
        self, items: Sequence[T], applies: Callable[[T, str], bool], max_tools: int = 8192
    ) -> None:
        self._items = list(items)
        self._applies = applies
        self._cache: dict[str, list[T]] = {}
        self._max = max_tools

    def __call__(self, tool: str) -> list[T]:
        found = self._cache.get(tool)
        if found is None:
            found = [item for item in self._items if self._applies(item, tool)]
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[tool] = found
        return found

    def reset(self, items: Sequence[T]) -> None:
        """Replace the items (and forget what was computed)."""
        self._items = list(items)
        self._cache = {}
