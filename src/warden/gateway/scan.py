"""Scan MCP tool listings for poisoning (docs/mcp.md, "Scanning tool listings").

Pure: no I/O and no state beyond tables built once. The text checks (hidden
instructions, invisible and bidi Unicode, markup, payloads, secrets) are
``warden.scan``'s, applied here to each name, description and schema string;
this module adds what needs the whole listing: typosquats and homoglyph names
(TR39 skeletons), shadowing of another server's tools, oversized definitions.
Linear in the text, except the pairwise name comparison, which is quadratic in
the number of tools.

A finding's ``start``/``end`` are offsets into the normalised text of its field
(see :func:`normalize`). The text scanner's names stay importable from here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rapidfuzz.distance import OSA

from warden._re import compile_regex
from warden.scan._text import (
    _BIDI_CONTROLS,
    _INVISIBLE,
    DEFAULT_SEVERITY,
    EXCERPT_CHARS,  # noqa: F401 - importable from here, as before the text scanner moved
    HIDDEN_INSTRUCTION_RULES,
    MAX_PER_FIELD,  # noqa: F401 - importable from here, as before the text scanner moved
    SEVERITIES,
    Finding,
    Rule,
    _as_text,
    _excerpt,
    _names,
    _quote,
    _scan_field,
    _view_table,
    normalize,
    scan_text,
    severity_at_least,
    skeleton,
)

__all__ = [
    "DEFAULT_SEVERITY",
    "HIDDEN_INSTRUCTION_RULES",
    "SEVERITIES",
    "Finding",
    "Rule",
    "ToolInfo",
    "normalize",
    "scan_text",
    "scan_tools",
    "severity_at_least",
    "skeleton",
]

MAX_DESCRIPTION: Final = 4096
"""Characters of a description (normalised) past which it is ``oversized``."""
MAX_SCHEMA_BYTES: Final = 64 * 1024
"""Bytes of an input schema (its compact UTF-8 JSON, estimated while walking it) past which
it is ``oversized``."""

_MIN_TYPO_LEN: Final = 5
_SCHEMA_ROOT: Final = ""


@dataclass(frozen=True)
class ToolInfo:
    """One tool as an upstream listed it: what the scanner reads."""

    server: str
    name: str
    description: str
    input_schema: Mapping[str, Any]


def _script(c: str) -> str:
    """The script of a letter, read from its Unicode name (CJK scripts as one)."""
    name = unicodedata.name(c, "")
    word = name.split(" ", 1)[0]
    if word in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC"):
        return "CJK"
    return word


# --------------------------------------------------------------------------- tool listings


def _pointer(parent: str, key: str) -> str:
    return parent + "/" + key.replace("~", "~0").replace("/", "~1")


def _walk_schema(schema: object) -> Iterator[tuple[str, str, bool] | int]:
    """Yield ``(pointer, string, is_key)`` for every string in ``schema``; finally its size.

    Iterative (no recursion limit) and cycle-safe; the size is the compact JSON's
    UTF-8 length, estimated (escapes are not counted).
    """
    size = 0
    stack: list[tuple[str, object]] = [(_SCHEMA_ROOT, schema)]
    active: set[int] = set()
    while stack:
        pointer, value = stack.pop()
        if isinstance(value, str):
            size += _utf8_len(value) + 2
            yield pointer, value, False
        elif isinstance(value, Mapping):
            if id(value) in active:
                continue
            active.add(id(value))
            size += 2
            items = list(value.items())
            for k, v in reversed(items):
                key = _as_text(k)
                size += _utf8_len(key) + 4
                child = _pointer(pointer, key)
                stack.append((child, v))
                if key and not (key.isascii() and key.isidentifier()):
                    stack.append((child, _Key(key)))
        elif isinstance(value, _Key):
            yield pointer, value.text, True
        elif isinstance(value, (list, tuple)):
            if id(value) in active:
                continue
            active.add(id(value))
            size += 2 + len(value)
            for i in range(len(value) - 1, -1, -1):
                stack.append((f"{pointer}/{i}", value[i]))
        elif isinstance(value, bool) or value is None:
            size += 5
        else:
            size += len(repr(value)) if isinstance(value, (int, float)) else 8
    yield size


@dataclass(frozen=True)
class _Key:
    text: str


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _scan_tool(tool: ToolInfo, server: str, name: str) -> tuple[list[Finding], dict[str, int]]:
    """Findings in one tool's name, description and schema; and each field's rank (order)."""
    found: list[Finding] = []
    rank: dict[str, int] = {"name": 0, "description": 1}
    nname = normalize(name)
    found.extend(_scan_field(nname, "name", server, name, prose=False))
    hg = _homoglyph(nname)
    if hg is None and nname.isascii() and not name.isascii():
        hg = 0, len(nname), f"tool name {_quote(name)} is spelled in look-alike characters"
    if hg is not None:
        s, e, msg = hg
        found.append(_finding("homoglyph", server, name, "name", nname, s, e, msg))
    desc = normalize(_as_text(tool.description))
    found.extend(_scan_field(desc, "description", server, name))
    if len(desc) > MAX_DESCRIPTION:
        found.append(
            _finding(
                "oversized",
                server,
                name,
                "description",
                desc,
                MAX_DESCRIPTION,
                len(desc),
                f"description of {len(desc)} characters (limit {MAX_DESCRIPTION})",
            )
        )
    size = 0
    for item in _walk_schema(tool.input_schema):
        if isinstance(item, int):
            size = item
            continue
        pointer, value, is_key = item
        rank.setdefault(pointer, len(rank))
        text = normalize(value)
        for f in _scan_field(text, pointer, server, name):
            found.append(_replace_message(f, f.message + " (in a key)") if is_key else f)
    if size > MAX_SCHEMA_BYTES:
        found.append(
            Finding(
                code="oversized",
                severity=DEFAULT_SEVERITY["oversized"],
                server=server,
                tool=name,
                field=_SCHEMA_ROOT,
                start=0,
                end=0,
                excerpt="",
                message=f"input schema of about {size} bytes (limit {MAX_SCHEMA_BYTES})",
            )
        )
    return found, rank


def _replace_message(f: Finding, message: str) -> Finding:
    return Finding(
        f.code, f.severity, f.server, f.tool, f.field, f.start, f.end, f.excerpt, message
    )


def _finding(
    code: str, server: str, tool: str, field: str, text: str, s: int, e: int, message: str
) -> Finding:
    return Finding(
        code=code,
        severity=DEFAULT_SEVERITY[code],
        server=server,
        tool=tool,
        field=field,
        start=s,
        end=e,
        excerpt=_excerpt(text, s, e),
        message=message,
    )


def _homoglyph(name: str) -> tuple[int, int, str] | None:
    """A name that mixes scripts, or that is non-ASCII but looks like ASCII (TR39 skeleton).

    ASCII names are never homoglyphs by themselves (TR39 maps ``m`` to ``rn``; comparing
    with other names is the typosquat check's job).
    """
    if name.isascii():
        return None
    scripts: set[str] = set()
    odd = [
        i
        for i, c in enumerate(name)
        if not c.isascii() and ord(c) not in _INVISIBLE and ord(c) not in _BIDI_CONTROLS
    ]
    if not odd:
        return None  # invisible characters only: the invisible_char check reports them
    for c in name:
        if c.isascii():
            if c.isalpha():
                scripts.add("LATIN")
        elif unicodedata.category(c)[0] == "L":
            scripts.add(_script(c))
    s, e = odd[0], odd[-1] + 1
    chars = "".join(name[i] for i in odd)
    if len(scripts) > 1:
        return s, e, f"tool name mixes scripts ({', '.join(sorted(scripts))}): {_names(chars)}"
    if skeleton(name).isascii():
        return s, e, f"tool name looks like the ASCII `{skeleton(name)}`: {_names(chars)}"
    return None


@dataclass(frozen=True)
class _Name:
    index: int
    server: str
    raw: str
    norm: str
    skel: str
    fold: str
    lite: str

    @property
    def plainness(self) -> int:
        """How many characters look substituted (non-ASCII, or 0/1/I/| for O/l): the
        name with more of them is the imitation."""
        return sum(1 for c in self.raw if not c.isascii() or c in "01I|")


def _typosquats(names: Sequence[_Name]) -> Iterator[tuple[_Name, _Name, str]]:
    """``(suspect, other, how)`` for each look-alike pair across servers."""
    pairs: dict[tuple[int, int], str] = {}
    by_skel: dict[str, list[_Name]] = {}
    by_len: dict[int, list[_Name]] = {}
    for n in names:
        by_skel.setdefault(n.skel, []).append(n)
        if n.fold != n.skel:
            by_skel.setdefault(n.fold, []).append(n)
        by_len.setdefault(len(n.lite), []).append(n)
    for group in by_skel.values():
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.server != b.server and a.raw != b.raw:
                    pairs.setdefault(_pair(a, b), "looks the same as")
    for length, group in by_len.items():
        if length < _MIN_TYPO_LEN:
            continue
        for b_len in (length, length + 1):
            others = by_len.get(b_len, ())
            for a in group:
                for b in others:
                    if b_len == length and b.index <= a.index:
                        continue
                    if a.server == b.server or a.raw == b.raw or min(len(a.norm), len(b.norm)) < 5:
                        continue
                    key = _pair(a, b)
                    if key in pairs:
                        continue
                    if OSA.distance(a.lite, b.lite, score_cutoff=1) <= 1:
                        pairs[key] = "is one edit away from"
    by_index = {n.index: n for n in names}
    for (i, j), how in pairs.items():
        a, b = by_index[i], by_index[j]
        if how == "looks the same as" and a.plainness != b.plainness:
            suspect, other = (a, b) if a.plainness > b.plainness else (b, a)
            yield suspect, other, how
        else:
            yield a, b, how
            yield b, a, how


def _pair(a: _Name, b: _Name) -> tuple[int, int]:
    return (a.index, b.index) if a.index < b.index else (b.index, a.index)


_SHADOW_VERBS: Final = compile_regex(
    r"(?i)\b(?:use|uses|used|using|call|calls|called|calling|invoke|invokes|invoked|invoking"
    r"|instead|always|never|before|after|when|whenever|must|should|make\s+sure|ensure|prefer"
    r"|redirect|replace|route)\b"
)


def _shadowing(
    names: Sequence[_Name], descriptions: Mapping[int, str]
) -> Iterator[tuple[int, int, int, _Name]]:
    """``(tool index, start, end, named tool)`` where a description steers another server's tool.

    A plain lowercase word (``search``, ``fetch``) counts as a tool name only when it is
    quoted or followed by "tool"/"function"; names with ``_``, ``-``, ``.``, digits or
    capitals count wherever they stand.
    """
    servers_by_name: dict[str, set[str]] = {}
    for n in names:
        if len(n.norm) >= 3:
            servers_by_name.setdefault(n.norm.lower(), set()).add(n.server)
    if len({n.server for n in names}) < 2 or not servers_by_name:
        return
    alternatives = sorted(servers_by_name, key=lambda k: (-len(k), k))
    try:
        rx = compile_regex(
            r"(?i)(?:^|[^A-Za-z0-9])("
            + "|".join(_re2_escape(a) for a in alternatives)
            + r")(?:$|[^A-Za-z0-9_])"
        )
    except ValueError:
        return
    by_key = {n.norm.lower(): n for n in reversed(names)}
    for n in names:
        text = descriptions.get(n.index, "")
        if not text:
            continue
        own = n.server
        for m in rx.finditer(text):
            s, e = m.start(1), m.end(1)
            key = text[s:e].lower()
            owners = servers_by_name.get(key, set())
            if own in owners or not owners:
                continue
            if not _identifier_like(text[s:e]) and not _marked_as_tool(text, s, e):
                continue
            lo = max(_sentence_start(text, s), s - 200)
            hi = min(_sentence_end(text, e), e + 200)
            if _SHADOW_VERBS.search(text[lo:hi]) is None:
                continue
            named = next(
                (x for x in names if x.norm.lower() == key and x.server != own), by_key[key]
            )
            yield n.index, s, e, named


def _re2_escape(s: str) -> str:
    return "".join(c if c.isalnum() and c.isascii() else f"\\x{{{ord(c):X}}}" for c in s)


def _identifier_like(s: str) -> bool:
    return any(c in "_-." or c.isdigit() for c in s) or any(c.isupper() for c in s[1:])


def _marked_as_tool(text: str, s: int, e: int) -> bool:
    before = text[s - 1 : s]
    after = text[e : e + 1]
    if before in ("`", "'", '"') and after == before:
        return True
    rest = text[e : e + 12].lower().lstrip()
    return rest.startswith(("tool", "function"))


def _sentence_start(text: str, i: int) -> int:
    return max(text.rfind(sep, 0, i) for sep in ("\n", ". ", "! ", "? ")) + 1


def _sentence_end(text: str, i: int) -> int:
    ends = [j for j in (text.find(sep, i) for sep in ("\n", ". ", "! ", "? ")) if j >= 0]
    return min(ends) if ends else len(text)


def scan_tools(tools: Sequence[ToolInfo]) -> list[Finding]:
    """Findings for a whole listing (all servers at once: typosquats and shadowing compare
    tools across servers). Ordered by tool, then field, then span."""
    per_tool: list[list[Finding]] = []
    ranks: list[dict[str, int]] = []
    names: list[_Name] = []
    descriptions: dict[int, str] = {}
    for i, tool in enumerate(tools):
        server = _as_text(tool.server)
        raw = _as_text(tool.name)
        found, rank = _scan_tool(tool, server, raw)
        per_tool.append(found)
        ranks.append(rank)
        norm = normalize(raw)
        fold = norm.casefold()
        names.append(
            _Name(
                i, server, raw, norm, skeleton(norm), skeleton(fold), fold.translate(_view_table())
            )
        )
        descriptions[i] = normalize(_as_text(tool.description))
    for suspect, other, how in _typosquats(names):
        per_tool[suspect.index].append(
            _finding(
                "typosquat",
                suspect.server,
                suspect.raw,
                "name",
                suspect.norm,
                0,
                len(suspect.norm),
                f"tool name {_quote(suspect.raw)} {how} {_quote(other.raw)} "
                f"on server {_quote(other.server)}",
            )
        )
    for i, s, e, named in _shadowing(names, descriptions):
        n = names[i]
        per_tool[i].append(
            _finding(
                "shadowing",
                n.server,
                n.raw,
                "description",
                descriptions[i],
                s,
                e,
                f"description names {_quote(named.norm)} of server {_quote(named.server)} "
                "and tells the model how or when to use it",
            )
        )
    out: list[Finding] = []
    for found, rank in zip(per_tool, ranks, strict=True):
        found.sort(key=lambda f: (rank.get(f.field, len(rank)), f.start, f.end, f.code))
        out.extend(found)
    return out
