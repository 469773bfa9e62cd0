"""One session's labelled values: what entered it, from where, and what it has touched.

The semantics are docs/flows.md ("Sessions and what enters them", "The
action's labels"). Values are indexed by key (an exact key for the whole
value, a canonical key per identifier inside it), so looking an argument up
costs a few dictionary reads whatever the session holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from warden._re import compile_regex, search
from warden.action import Action, FlowLabels
from warden.policy.expr import CompiledExpr, EvalError
from warden.scan import normalize, scan_content
from warden.scan.identifiers import exact_key, extract, keys_of, number_key

__all__ = [
    "DROPPED",
    "INTEGRITY",
    "MAX_DEPTH",
    "MAX_KEYS",
    "SECRET",
    "USER",
    "Scope",
    "SessionFlow",
    "keys_of_leaf",
    "leaves",
]

USER: Final = "user"
SECRET: Final = "secret"
DROPPED: Final = "dropped"
INJECTED: Final = "injected"
PII: Final = "pii"
INTEGRITY: Final = frozenset({"untrusted", INJECTED, "delegated"})
"""The built-in integrity labels: the ones the user's endorsement removes."""
MAX_KEYS: Final = 100_000
"""Keys one session holds at most; past that it fails closed (``overflow``)."""
MAX_DEPTH: Final = 32
_SCAN_MIN: Final = 16
"""Argument strings shorter than this are not scanned: no secret the scanners know, and no
instruction, fits in fewer characters."""
_REDACT_PII: Final = ("card:",)
"""Identifier keys that make an argument redacted in the audit log (secrets always do)."""
_EMPTY: Final[frozenset[str]] = frozenset()
_QUOTED: Final = compile_regex(
    r"\"([^\"\n]{4,200})\"|“([^”\n]{4,200})”|'([^'\n]{4,200})'|`([^`\n]{4,200})`"
)
"""Quoted segments of the user's request: recorded as values the user typed."""
_TAGS: Final = compile_regex(r"[\x{E0020}-\x{E007E}]+")
"""Runs of Unicode tag characters: ASCII a reader cannot see but a model reads."""


def _hidden_text(text: str) -> str | None:
    """``text`` with tag-character runs decoded to ASCII and everything else blanked, or None."""
    if text.isascii() or _TAGS.search(text) is None:
        return None
    return "".join(chr(ord(c) - 0xE0000) if 0xE0020 <= ord(c) <= 0xE007E else " " for c in text)


def leaves(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` for every string and number in ``value`` (docs/flows.md names the paths).

    Objects that are not JSON-like count by their ``str``; nesting past
    ``MAX_DEPTH`` is not followed.
    """
    t = type(value)
    if t is str or t is int or t is float:
        yield path, value
    elif value is None or t is bool or depth >= MAX_DEPTH:
        return
    elif isinstance(value, Mapping):
        prefix = path + "." if path else ""
        for k, v in value.items():
            yield from leaves(v, f"{prefix}{k}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, (bytes, bytearray)):
        yield path, bytes(value).decode("utf-8", "replace")
    elif isinstance(value, (str, int, float)):  # subclasses (enums, numpy scalars, ...)
        yield path, value
    else:
        yield path, str(value)


def keys_of_leaf(leaf: str | float) -> tuple[str | None, list[str]]:
    """(exact key, identifier keys) of one leaf, as lookups and records compute them."""
    if type(leaf) is not str and not isinstance(leaf, str):
        return number_key(leaf), []
    text = leaf if leaf.isascii() else normalize(leaf)
    return exact_key(text), keys_of(text)


class Scope:
    """A task's declared scope: tool globs, each with an optional condition."""

    __slots__ = ("entries", "source")

    def __init__(self, entries: list[tuple[str, Any, CompiledExpr | None]]) -> None:
        self.entries = entries
        self.source = ", ".join(glob for glob, _, _ in entries)

    def admits(self, action: Action) -> bool:
        for _, rx, cond in self.entries:
            if not search(rx, action.tool):
                continue
            if cond is None:
                return True
            try:
                return cond.fn(action) is True
            except (EvalError, RecursionError):
                return False
            except Exception:  # noqa: BLE001 - outside scope, never an allow
                return False
        return False


class SessionFlow:
    """The flow state of one session id (shared by every block that opened it)."""

    def __init__(
        self,
        session_id: str,
        integrity: frozenset[str] = INTEGRITY,
        persisted: Callable[[list[str]], Mapping[str, frozenset[str]]] | None = None,
    ) -> None:
        self.id = session_id
        self.integrity = integrity
        self.keys: dict[str, frozenset[str]] = {}
        self.user: set[str] = set()
        self.touched: frozenset[str] = _EMPTY
        self.overflow = False
        self.scopes: list[Scope] = []
        self._tasks: list[set[str]] = []
        self._persisted = persisted
        self._lock = threading.Lock()
        self._sorted: dict[frozenset[str], tuple[str, ...]] = {}
        self.refs = 0

    # --- recording ---------------------------------------------------------------------------

    def record_user(self, text: str) -> None:
        """Record the user's own text: its exact key, its identifiers and its quoted parts."""
        text = normalize(text)
        found: list[str] = [k for k in (exact_key(text),) if k is not None]
        found.extend(keys_of(text))
        for m in _QUOTED.finditer(text):
            quoted = next(g for g in m.groups() if g is not None)
            key = exact_key(quoted)
            if key is not None:
                found.append(key)
                found.extend(keys_of(quoted))
        with self._lock:
            self.user.update(found)

    def record(self, value: Any, labels: Iterable[str], *, scan: bool = True) -> frozenset[str]:
        """Record every string and number in ``value`` with ``labels`` (and what scanning finds).

        ``user`` among the labels records the value as typed by the user.
        Returns every label recorded (the session has now touched them).
        """
        base = frozenset(labels)
        if USER in base:
            for _, leaf in leaves(value):
                self.record_user(str(leaf))
            base = base - {USER}
            if not base:
                return _EMPTY
        pending: dict[str, frozenset[str]] = {}

        def add(key: str | None, got: frozenset[str]) -> None:
            if key is not None:
                pending[key] = pending.get(key, _EMPTY) | got

        for _, leaf in leaves(value):
            if type(leaf) is not str and not isinstance(leaf, str):
                add(number_key(leaf), base)
                continue
            if scan:
                result = scan_content(leaf)
                text = result.text
                whole = base | result.labels
                injected = result.injected
                pii = {(i.start, i.end) for i in result.pii}
                for start, end, _ in result.secrets:
                    add(exact_key(text[start:end]), base | {SECRET})
            else:
                text = leaf if leaf.isascii() else normalize(leaf)
                whole, injected, pii = base, (), set()
            add(exact_key(text), whole)
            holder = (0, 0)  # the span of the last URL or email
            for ident in extract(text):
                if ident.kind in ("url", "email"):
                    holder = (ident.start, ident.end)
                elif ident.kind == "domain" and holder[0] <= ident.start < holder[1]:
                    # The host of a URL or an email is looked up, not recorded: one mention of
                    # github.com/attacker must not label every github.com URL.
                    continue
                got = base
                if injected and any(s <= ident.start and ident.end <= e for s, e in injected):
                    got = got | {INJECTED}
                if (ident.start, ident.end) in pii:
                    got = got | {PII}
                add(ident.key, got)
            hidden = _hidden_text(text)
            if hidden is not None:  # what only a model can read is injected by definition
                for ident in extract(hidden):
                    add(ident.key, base | {INJECTED})
        return self._merge(pending)

    def _merge(self, pending: dict[str, frozenset[str]]) -> frozenset[str]:
        if not pending:
            return _EMPTY
        stored = self._persisted(list(pending)) if self._persisted is not None else {}
        touched: set[str] = set()
        with self._lock:
            keys = self.keys
            task = self._tasks[-1] if self._tasks else None
            for key, labels in pending.items():
                got = labels | stored[key] if key in stored else labels
                touched.update(got)
                if key not in keys and len(keys) >= MAX_KEYS:
                    self.overflow = True
                    continue
                keys[key] = keys.get(key, _EMPTY) | got
                if task is not None and SECRET in got:
                    task.add(key)
            self.touched = self.touched | touched
        return frozenset(touched)

    def degrade(self, labels: Iterable[str]) -> None:
        """Recording failed: from now on every argument carries every label seen (fail closed)."""
        with self._lock:
            self.overflow = True
            self.touched = self.touched | frozenset(labels) | {"untrusted"}

    # --- tasks ---------------------------------------------------------------------------------

    def begin_task(self, scope: Scope | None) -> None:
        with self._lock:
            self._tasks.append(set())
            if scope is not None:
                self.scopes.append(scope)

    def end_task(self, scope: Scope | None) -> None:
        """Close the innermost task: its secrets become ``dropped``; its scope is lifted."""
        with self._lock:
            secrets = self._tasks.pop() if self._tasks else set()
            for key in secrets:
                self.keys[key] = self.keys.get(key, _EMPTY) | {DROPPED}
            if scope is not None and scope in self.scopes:
                self.scopes.remove(scope)

    def outside_scope(self, action: Action) -> str | None:
        """Why ``action`` is outside the declared scope, or None when every scope admits it."""
        for scope in self.scopes:
            if not scope.admits(action):
                return f"`{action.tool}` is outside the task's declared scope ({scope.source})"
        return None

    # --- looking up ----------------------------------------------------------------------------

    def leaf_labels(self, leaf: str | float) -> tuple[frozenset[str], bool]:
        """The labels of one string or number, and whether the user endorsed it."""
        exact, ids = keys_of_leaf(leaf)
        return self._labels(exact, ids)

    def _labels(self, exact: str | None, ids: list[str]) -> tuple[frozenset[str], bool]:
        user = self.user
        keys = self.keys
        # Endorsed: typed as a whole, or made only of identifiers the user typed (and not
        # itself a tool's text, copied whole).
        said = (exact is not None and exact in user) or (
            bool(ids) and all(k in user for k in ids) and (exact is None or exact not in keys)
        )
        found: frozenset[str] = _EMPTY
        if exact is not None:
            got = keys.get(exact)
            if got:
                found = got - self.integrity if exact in user else got
        for key in ids:
            got = keys.get(key)
            if got:
                found = found | (got - self.integrity if key in user else got)
        if self.overflow:
            found = found | self.touched
        if said:
            found = (found - self.integrity) | {USER}
        return found, said

    def labels_of(self, value: Any) -> frozenset[str]:
        """The labels an argument holding ``value`` would carry (the union over its leaves)."""
        out: frozenset[str] = _EMPTY
        for _, leaf in leaves(value):
            out = out | self.leaf_labels(leaf)[0]
        return out

    def user_said(self, value: Any) -> bool:
        """True when ``value`` holds a string or number and the user endorsed every one."""
        said = [self.leaf_labels(leaf)[1] for _, leaf in leaves(value)]
        return bool(said) and all(said)

    def _sorted_labels(self, labels: frozenset[str]) -> tuple[str, ...]:
        found = self._sorted.get(labels)
        if found is None:
            found = tuple(sorted(labels))
            if len(self._sorted) < 4096:
                self._sorted[labels] = found
        return found

    def action_flow(self, args: Mapping[str, Any], scan: bool) -> FlowLabels:
        """The labels of every string and number in ``args`` (``Action.flow``)."""
        out: dict[str, tuple[str, ...]] = {}
        redact: list[str] = []
        for path, leaf in leaves(args):
            exact, ids = keys_of_leaf(leaf)
            labels, said = self._labels(exact, ids)
            if scan and any(k.startswith(_REDACT_PII) for k in ids):
                redact.append(_top(path))
                labels = labels | {PII}
            if scan and isinstance(leaf, str) and len(leaf) >= _SCAN_MIN:
                result = scan_content(leaf, pii=False)
                if result.secrets:
                    redact.append(_top(path))
                    labels = labels | {SECRET}
                if result.injected and not said:
                    labels = labels | {INJECTED}
            if labels:
                out[path] = self._sorted_labels(labels)
        return FlowLabels(out, self._sorted_labels(self.touched), tuple(dict.fromkeys(redact)))


def _top(path: str) -> str:
    """The top-level argument name of a leaf path (what a ``redact`` obligation names)."""
    cut = len(path)
    for sep in (".", "["):
        i = path.find(sep)
        if i != -1:
            cut = min(cut, i)
    return path[:cut]
