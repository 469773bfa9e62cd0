"""The runtime sections of a policy: ``tools:``, ``agents:`` and ``budgets:``.

Semantics in docs/runtime.md ("Rings", "Budgets"); syntax in
docs/policy-language.md ("Runtime sections"). Checked like the rest of the
document: every problem is a located diagnostic, none stops the others.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from warden._re import PatternError, compile_glob

if TYPE_CHECKING:
    from warden.policy._yaml import YNode
    from warden.policy.load import _Checker

__all__ = [
    "DEFAULT_ALERTS",
    "DEFAULT_MCP",
    "NO_SRE",
    "SCOPES",
    "AgentSpec",
    "AlertSpec",
    "AnomalySpec",
    "BreakerSpec",
    "BudgetSpec",
    "CascadeSpec",
    "MCPSpec",
    "SLOSpec",
    "SRESpec",
    "ToolSpec",
    "check_id",
    "parse_duration",
]

SCOPES: Final = ("global", "agent", "session", "tool")
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BUDGET_FIELDS: Final = ("id", "scope", "tool", "calls", "per", "tokens", "cost", "description")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What calling tools that match ``pattern`` needs: ``ring`` or lower; ``exec`` = runs code.

    ``egress``: the tool sends data out of the system (its arguments count as egress).
    ``read``, ``write``, ``network``: what the sandbox grants the tool when it runs
    through ``Governor.exec`` (paths bound read-only, read-write; the network).
    """

    pattern: str
    ring: int
    exec: bool
    line: int
    col: int
    egress: bool = False
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    network: bool = False


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """The operator's ring for agents whose id matches ``pattern``."""

    pattern: str
    ring: int
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One declared budget: limits per value of ``scope`` for calls matching ``tools``."""

    id: str
    scope: tuple[str, ...]
    tools: tuple[str, ...] | None
    calls: int | None
    per: float | None
    tokens: int | None
    cost: float | None
    line: int
    col: int


def check_id(ck: _Checker, node: YNode, pos: int, seen: dict[str, int], what: str) -> str:
    """Check the `id` of the ``pos``-th ``what`` (rule, budget); how to name it in messages."""
    f = node.items
    name = f"#{pos + 1}"
    if "id" not in f:
        ck.err(node, "policy_missing_field", f"{what} {name} is missing required field `id`")
        return name
    idnode = f["id"][1]
    value = ck.string(idnode, f"{what} `id`")
    if value is None:
        return name
    if not _ID.fullmatch(value):
        ck.err(
            idnode,
            "policy_invalid_value",
            f"{what} id `{value}` is not valid",
            "ids are 1-128 letters, digits and `_.:@/-`, starting with a letter or digit",
        )
    elif value in seen:
        ck.err(
            idnode,
            "policy_duplicate_id",
            f"duplicate {what} id `{value}` (first at line {seen[value]})",
        )
    else:
        seen[value] = idnode.line
    return f"`{value}`"


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    """A circuit breaker (docs/sre.md, "Circuit breakers")."""

    id: str
    scope: str  # tool | agent | downstream
    tools: tuple[str, ...] | None
    failure_ratio: float | None
    consecutive: int | None
    min_calls: int = 10
    window: float = 60.0
    open_for: float = 30.0
    probes: int = 1
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """A multi-window burn-rate alert: fires when both windows burn at ``burn`` or more."""

    burn: float
    long: float
    short: float
    severity: str = "page"


DEFAULT_ALERTS: Final = (
    AlertSpec(14.4, 3600.0, 300.0, "page"),
    AlertSpec(6.0, 6 * 3600.0, 1800.0, "page"),
    AlertSpec(1.0, 3 * 86400.0, 6 * 3600.0, "ticket"),
)


@dataclass(frozen=True, slots=True)
class SLOSpec:
    """A service-level objective and its error budget (docs/sre.md, "SLOs")."""

    id: str
    scope: str  # tool | agent | global
    tools: tuple[str, ...] | None
    objective: str  # success | latency
    target: float
    threshold: float | None = None  # seconds; latency only
    window: float = 30 * 86400.0
    min_events: int = 100
    enforce: str = "none"  # none | deny | require_approval | demote
    alerts: tuple[AlertSpec, ...] = DEFAULT_ALERTS
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """Per-agent anomaly bounds (docs/sre.md, "Anomalies")."""

    rate_factor: float = 5.0
    rate_min: int = 30
    denial_ratio: float = 0.5
    egress_factor: float = 5.0
    egress_min: int = 1 << 20
    new_tool: bool = True
    learning: int = 50
    quarantine: bool = False


@dataclass(frozen=True, slots=True)
class CascadeSpec:
    """Cascade detection (docs/sre.md, "Cascades")."""

    window: float = 300.0
    min_agents: int = 3
    contain: bool = True


@dataclass(frozen=True, slots=True)
class SRESpec:
    """The policy's ``sre:`` section; ``anomaly``/``cascade`` are None when not declared."""

    breakers: tuple[BreakerSpec, ...] = ()
    slos: tuple[SLOSpec, ...] = ()
    anomaly: AnomalySpec | None = None
    cascade: CascadeSpec | None = None


@dataclass(frozen=True, slots=True)
class MCPSpec:
    """The policy's ``mcp:`` section (docs/mcp.md): what the gateway hides, refuses, pins."""

    hide_at: str = "high"
    refuse_at: str = "critical"
    pin: bool = True


DEFAULT_MCP: Final = MCPSpec()
NO_SRE: Final = SRESpec()
"""A policy without an ``sre:`` section."""


def parse_duration(text: str) -> float | None:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``; None when it is not one."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        return None
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    return seconds if seconds > 0 else None


def _ring(ck: _Checker, node: YNode, what: str) -> int | None:
    if node.kind != "scalar" or type(node.value) is not int:
        ck.err(node, "policy_type_error", f"{what} must be an integer from 0 to 3")
        return None
    if not 0 <= node.value <= 3:
        ck.err(node, "policy_invalid_value", f"{what} must be an integer from 0 to 3")
        return None
    return int(node.value)


def _glob_key(ck: _Checker, knode: YNode, key: str, what: str) -> bool:
    if not key.strip():
        ck.err(knode, "policy_invalid_value", f"an empty pattern in {what}")
        return False
    try:
        compile_glob(key)
    except PatternError as exc:
        ck.err(knode, "expr_regex_error", f"invalid glob pattern `{key}`: {exc}")
        return False
    return True


def parse_tools(ck: _Checker, node: YNode) -> tuple[ToolSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`tools` must map tool globs to `{ring, exec}`")
        return ()
    out: list[ToolSpec] = []
    for key, (knode, vnode) in node.items.items():
        what = f"`tools` entry `{key}`"
        if not _glob_key(ck, knode, key, "`tools`"):
            continue
        if vnode.kind != "map":
            ck.err(vnode, "policy_type_error", f"{what} must be a mapping with `ring` or `exec`")
            continue
        ck.fields(vnode, ("ring", "exec", "egress", "paths", "network"), what)
        ring: int | None = 3
        if "ring" in vnode.items:
            ring = _ring(ck, vnode.items["ring"][1], f"`ring` of {what}")
        is_exec = _flag(ck, vnode, "exec", what)
        egress = _flag(ck, vnode, "egress", what)
        network = _flag(ck, vnode, "network", what)
        paths = _paths(ck, vnode, what)
        if ring is not None and None not in (is_exec, egress, network) and paths is not None:
            out.append(
                ToolSpec(
                    key,
                    ring,
                    bool(is_exec),
                    knode.line,
                    knode.col,
                    bool(egress),
                    paths[0],
                    paths[1],
                    bool(network),
                )
            )
    return tuple(out)


def _flag(ck: _Checker, node: YNode, name: str, what: str, default: bool = False) -> bool | None:
    if name not in node.items:
        return default
    fnode = node.items[name][1]
    if fnode.kind != "scalar" or type(fnode.value) is not bool:
        ck.err(fnode, "policy_type_error", f"`{name}` of {what} must be true or false")
        return None
    return bool(fnode.value)


def _paths(ck: _Checker, node: YNode, what: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``paths: {read: [...], write: [...]}``: absolute paths the sandbox binds."""
    if "paths" not in node.items:
        return (), ()
    pnode = node.items["paths"][1]
    if pnode.kind != "map":
        ck.err(pnode, "policy_type_error", f"`paths` of {what} must map `read`/`write` to lists")
        return None
    ck.fields(pnode, ("read", "write"), f"`paths` of {what}")
    out: list[tuple[str, ...]] = []
    ok = True
    for name in ("read", "write"):
        if name not in pnode.items:
            out.append(())
            continue

        def absolute(item: YNode, value: str, name: str = name) -> bool:
            if not value.startswith("/"):
                ck.err(
                    item,
                    "policy_invalid_value",
                    f"`paths.{name}` of {what}: `{value}` is not an absolute path",
                )
                return False
            return True

        got = ck.patterns(pnode.items[name][1], f"`paths.{name}` of {what}", absolute)
        ok = ok and got is not None
        out.append(got or ())
    return (out[0], out[1]) if ok else None


def parse_agents(ck: _Checker, node: YNode) -> tuple[AgentSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`agents` must map agent id globs to `{ring}`")
        return ()
    out: list[AgentSpec] = []
    for key, (knode, vnode) in node.items.items():
        what = f"`agents` entry `{key}`"
        if not _glob_key(ck, knode, key, "`agents`"):
            continue
        if vnode.kind != "map":
            ck.err(vnode, "policy_type_error", f"{what} must be a mapping with `ring`")
            continue
        ck.fields(vnode, ("ring",), what)
        if "ring" not in vnode.items:
            ck.err(vnode, "policy_missing_field", f"{what} is missing required field `ring`")
            continue
        ring = _ring(ck, vnode.items["ring"][1], f"`ring` of {what}")
        if ring is not None:
            out.append(AgentSpec(key, ring, knode.line, knode.col))
    return tuple(out)


def parse_budgets(ck: _Checker, node: YNode) -> tuple[BudgetSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "seq":
        ck.err(node, "policy_type_error", "`budgets` must be a list")
        return ()
    out: list[BudgetSpec] = []
    seen: dict[str, int] = {}
    for pos, item in enumerate(node.seq):
        spec = _budget(ck, item, pos, seen)
        if spec is not None:
            out.append(spec)
    return tuple(out)


def _budget(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> BudgetSpec | None:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "each budget must be a mapping")
        return None
    before = len(ck.diags)
    f = node.items
    bid = check_id(ck, node, pos, seen, "budget")
    what = f"budget {bid}"
    ck.fields(node, _BUDGET_FIELDS, what)
    if "description" in f:
        ck.string(f["description"][1], f"`description` of {what}", allow_empty=True)
    scope: tuple[str, ...] | None = ("global",)
    if "scope" in f:
        scope = _scope(ck, f["scope"][1], what)
    tools = None
    if "tool" in f:

        def valid(item: YNode, value: str) -> bool:
            return _glob_key(ck, item, value, f"`tool` of {what}")

        tools = ck.patterns(f["tool"][1], f"`tool` of {what}", valid)
    calls = _count(ck, f, "calls", what)
    tokens = _count(ck, f, "tokens", what)
    cost: float | None = None
    if "cost" in f:
        cnode = f["cost"][1]
        v: Any = cnode.value if cnode.kind == "scalar" else None
        if type(v) not in (int, float):
            ck.err(cnode, "policy_type_error", f"`cost` of {what} must be a positive number")
        elif not math.isfinite(v) or v <= 0:
            ck.err(cnode, "policy_invalid_value", f"`cost` of {what} must be a positive number")
        else:
            cost = float(v)
    per: float | None = None
    if "per" in f:
        pnode = f["per"][1]
        text = pnode.value if pnode.kind == "scalar" and isinstance(pnode.value, str) else None
        per = parse_duration(text) if text is not None else None
        if text is None:
            ck.err(
                pnode,
                "policy_type_error",
                f"`per` of {what} must be a duration such as `30s`, `5m`, `1h` or `1d`",
            )
        elif per is None:
            ck.err(
                pnode,
                "policy_invalid_value",
                f"`per` of {what} must be a duration such as `30s`, `5m`, `1h` or `1d`",
            )
        elif "calls" not in f:
            ck.err(pnode, "policy_invalid_value", f"`per` of {what} needs `calls` (a rate)")
    if "calls" not in f and "tokens" not in f and "cost" not in f:
        ck.err(
            node,
            "policy_missing_field",
            f"{what} sets no limit",
            "give at least one of `calls`, `tokens` or `cost`",
        )
    if len(ck.diags) > before or "id" not in f or scope is None:
        return None
    return BudgetSpec(
        id=f["id"][1].value,
        scope=scope,
        tools=tools,
        calls=calls,
        per=per,
        tokens=tokens,
        cost=cost,
        line=node.line,
        col=node.col,
    )


def _scope(ck: _Checker, node: YNode, what: str) -> tuple[str, ...] | None:
    items = node.seq if node.kind == "seq" else [node]
    out: list[str] = []
    for item in items:
        value = ck.choice(item, f"`scope` of {what}", SCOPES)
        if value is None:
            return None
        out.append(value)
    if not out:
        ck.err(node, "policy_invalid_value", f"`scope` of {what} must not be empty")
        return None
    if "global" in out and len(out) > 1:
        ck.err(node, "policy_invalid_value", f"`scope` of {what}: `global` stands alone")
        return None
    if len(set(out)) != len(out):
        ck.err(node, "policy_invalid_value", f"`scope` of {what} repeats a value")
        return None
    return tuple(out)


def _count(ck: _Checker, f: dict[str, tuple[YNode, YNode]], name: str, what: str) -> int | None:
    if name not in f:
        return None
    node = f[name][1]
    if node.kind != "scalar" or type(node.value) is not int:
        ck.err(node, "policy_type_error", f"`{name}` of {what} must be a positive integer")
        return None
    if node.value < 1:
        ck.err(node, "policy_invalid_value", f"`{name}` of {what} must be a positive integer")
        return None
    return int(node.value)


# --- sre: ----------------------------------------------------------------------------------

_SRE_FIELDS: Final = ("breakers", "slos", "anomaly", "cascade")
_BREAKER_FIELDS: Final = (
    "id",
    "scope",
    "tool",
    "failure_ratio",
    "consecutive",
    "min_calls",
    "window",
    "open_for",
    "probes",
    "description",
)
_SLO_FIELDS: Final = (
    "id",
    "scope",
    "tool",
    "objective",
    "target",
    "threshold",
    "window",
    "min_events",
    "enforce",
    "alerts",
    "description",
)
_ANOMALY_FIELDS: Final = (
    "rate_factor",
    "rate_min",
    "denial_ratio",
    "egress_factor",
    "egress_min",
    "new_tool",
    "learning",
    "quarantine",
)
_SIZE: Final = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")
_SIZE_UNITS: Final = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


class _Fields:
    """Typed reads of one mapping's fields, each error a located diagnostic."""

    def __init__(self, ck: _Checker, node: YNode, what: str) -> None:
        self.ck, self.node, self.what = ck, node, what
        self.before = len(ck.diags)

    @property
    def ok(self) -> bool:
        return len(self.ck.diags) == self.before

    def _node(self, name: str) -> YNode | None:
        found = self.node.items.get(name)
        return None if found is None else found[1]

    def number(self, name: str, default: float, *, low: float, high: float | None = None,
               open_low: bool = False) -> float:  # fmt: skip
        node = self._node(name)
        if node is None:
            return default
        v: Any = node.value if node.kind == "scalar" else None
        if type(v) not in (int, float):
            self.ck.err(node, "policy_type_error", f"`{name}` of {self.what} must be a number")
            return default
        bad = not math.isfinite(v) or v < low or (open_low and v == low)
        if bad or (high is not None and v > high):
            span = f"above {low:g}" if open_low else f"at least {low:g}"
            bound = f"{span}" + (f" and at most {high:g}" if high is not None else "")
            self.ck.err(node, "policy_invalid_value", f"`{name}` of {self.what} must be {bound}")
            return default
        return float(v)

    def integer(self, name: str, default: int, *, low: int = 1) -> int:
        node = self._node(name)
        if node is None:
            return default
        if node.kind != "scalar" or type(node.value) is not int:
            self.ck.err(node, "policy_type_error", f"`{name}` of {self.what} must be an integer")
            return default
        if node.value < low:
            self.ck.err(
                node, "policy_invalid_value", f"`{name}` of {self.what} must be at least {low}"
            )
            return default
        return int(node.value)

    def duration(self, name: str, default: float) -> float:
        node = self._node(name)
        if node is None:
            return default
        text = node.value if node.kind == "scalar" and isinstance(node.value, str) else None
        seconds = parse_duration(text) if text is not None else None
        if seconds is None:
            code = "policy_type_error" if text is None else "policy_invalid_value"
            self.ck.err(
                node, code, f"`{name}` of {self.what} must be a duration such as `30s` or `5m`"
            )
            return default
        return seconds

    def flag(self, name: str, default: bool) -> bool:
        value = _flag(self.ck, self.node, name, self.what, default)
        return default if value is None else value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        node = self._node(name)
        if node is None:
            return default
        return self.ck.choice(node, f"`{name}` of {self.what}", choices) or default

    def size(self, name: str, default: int) -> int:
        node = self._node(name)
        if node is None:
            return default
        if node.kind == "scalar" and type(node.value) is int and node.value > 0:
            return int(node.value)
        m = _SIZE.fullmatch(node.value.strip()) if isinstance(node.value, str) else None
        if m is None or int(m.group(1)) <= 0:
            self.ck.err(
                node,
                "policy_invalid_value",
                f"`{name}` of {self.what} must be a size such as `512KiB` or `1MiB`",
            )
            return default
        return int(m.group(1)) * _SIZE_UNITS[m.group(2)]

    def globs(self, name: str) -> tuple[str, ...] | None:
        node = self._node(name)
        if node is None:
            return None

        def valid(item: YNode, value: str) -> bool:
            return _glob_key(self.ck, item, value, f"`{name}` of {self.what}")

        return self.ck.patterns(node, f"`{name}` of {self.what}", valid)


def parse_sre(ck: _Checker, node: YNode) -> SRESpec:
    if node.kind == "scalar" and node.value is None:
        return SRESpec()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`sre` must be a mapping")
        return SRESpec()
    ck.fields(node, _SRE_FIELDS, "`sre`")
    items = node.items
    breakers = _sre_list(ck, items, "breakers", _breaker)
    slos = _sre_list(ck, items, "slos", _slo)
    anomaly = _anomaly(ck, items["anomaly"][1]) if "anomaly" in items else None
    cascade = _cascade(ck, items["cascade"][1]) if "cascade" in items else None
    return SRESpec(tuple(breakers), tuple(slos), anomaly, cascade)


def _sre_list(
    ck: _Checker, items: dict[str, tuple[YNode, YNode]], name: str, one: Any
) -> list[Any]:
    if name not in items:
        return []
    node = items[name][1]
    if node.kind == "scalar" and node.value is None:
        return []
    if node.kind != "seq":
        ck.err(node, "policy_type_error", f"`sre.{name}` must be a list")
        return []
    seen: dict[str, int] = {}
    out = []
    for pos, item in enumerate(node.seq):
        if item.kind != "map":
            ck.err(item, "policy_type_error", f"each of `sre.{name}` must be a mapping")
            continue
        spec = one(ck, item, pos, seen)
        if spec is not None:
            out.append(spec)
    return out


def _breaker(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> BreakerSpec | None:
    name = check_id(ck, node, pos, seen, "breaker")
    what = f"breaker {name}"
    if name == "`cascade`":
        ck.err(
            node.items["id"][1],
            "policy_invalid_value",
            "breaker id `cascade` is reserved for cascade containment (docs/sre.md)",
        )
    ck.fields(node, _BREAKER_FIELDS, what)
    f = _Fields(ck, node, what)
    if "description" in node.items:
        ck.string(node.items["description"][1], f"`description` of {what}", allow_empty=True)
    scope = f.choice("scope", ("tool", "agent", "downstream"), "tool")
    ratio = f.number("failure_ratio", 0.0, low=0.0, high=1.0, open_low=True) if (
        "failure_ratio" in node.items) else None  # fmt: skip
    consecutive = f.integer("consecutive", 0) if "consecutive" in node.items else None
    if ratio is None and consecutive is None:
        ck.err(
            node,
            "policy_missing_field",
            f"{what} sets no trip condition",
            "give `failure_ratio` (with `min_calls`) or `consecutive`",
        )
    spec = BreakerSpec(
        id=str(node.items["id"][1].value) if "id" in node.items else "",
        scope=scope,
        tools=f.globs("tool"),
        failure_ratio=ratio,
        consecutive=consecutive,
        min_calls=f.integer("min_calls", 10),
        window=f.duration("window", 60.0),
        open_for=f.duration("open_for", 30.0),
        probes=f.integer("probes", 1),
        line=node.line,
        col=node.col,
    )
    return spec if f.ok and "id" in node.items else None


def _slo(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> SLOSpec | None:
    name = check_id(ck, node, pos, seen, "slo")
    what = f"slo {name}"
    ck.fields(node, _SLO_FIELDS, what)
    f = _Fields(ck, node, what)
    if "description" in node.items:
        ck.string(node.items["description"][1], f"`description` of {what}", allow_empty=True)
    objective = f.choice("objective", ("success", "latency"), "success")
    if "target" not in node.items:
        ck.err(node, "policy_missing_field", f"{what} is missing required field `target`")
    target = f.number("target", 0.99, low=0.0, high=1.0, open_low=True)
    if target >= 1.0:
        ck.err(
            node.items["target"][1],
            "policy_invalid_value",
            f"`target` of {what} must be below 1 (a target of 1 leaves no error budget)",
        )
    threshold = f.duration("threshold", 0.0) if "threshold" in node.items else None
    if objective == "latency" and threshold is None:
        ck.err(node, "policy_missing_field", f"{what}: a latency objective needs `threshold`")
    if objective == "success" and threshold is not None:
        ck.err(
            node.items["threshold"][1],
            "policy_invalid_value",
            f"`threshold` of {what} applies to `objective: latency` only",
        )
    alerts: tuple[AlertSpec, ...] = DEFAULT_ALERTS
    if "alerts" in node.items:
        alerts = _alerts(ck, node.items["alerts"][1], what)
    spec = SLOSpec(
        id=str(node.items["id"][1].value) if "id" in node.items else "",
        scope=f.choice("scope", ("tool", "agent", "global"), "tool"),
        tools=f.globs("tool"),
        objective=objective,
        target=target,
        threshold=threshold,
        window=f.duration("window", 30 * 86400.0),
        min_events=f.integer("min_events", 100),
        enforce=f.choice("enforce", ("none", "deny", "require_approval", "demote"), "none"),
        alerts=alerts,
        line=node.line,
        col=node.col,
    )
    return spec if f.ok and "id" in node.items else None


def _alerts(ck: _Checker, node: YNode, what: str) -> tuple[AlertSpec, ...]:
    if node.kind != "seq" or not node.seq:
        ck.err(node, "policy_type_error", f"`alerts` of {what} must be a non-empty list")
        return ()
    out: list[AlertSpec] = []
    for item in node.seq:
        awhat = f"an alert of {what}"
        if item.kind != "map":
            ck.err(item, "policy_type_error", f"{awhat} must be a mapping")
            continue
        ck.fields(item, ("burn", "long", "short", "severity"), awhat)
        f = _Fields(ck, item, awhat)
        for need in ("burn", "long", "short"):
            if need not in item.items:
                ck.err(item, "policy_missing_field", f"{awhat} is missing `{need}`")
        alert = AlertSpec(
            burn=f.number("burn", 1.0, low=0.0, open_low=True),
            long=f.duration("long", 3600.0),
            short=f.duration("short", 300.0),
            severity=f.choice("severity", ("page", "ticket"), "page"),
        )
        if f.ok and alert.short >= alert.long:
            ck.err(item, "policy_invalid_value", f"{awhat}: `short` must be shorter than `long`")
        out.append(alert)
    return tuple(out)


def _anomaly(ck: _Checker, node: YNode) -> AnomalySpec | None:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`sre.anomaly` must be a mapping")
        return None
    ck.fields(node, _ANOMALY_FIELDS, "`sre.anomaly`")
    f = _Fields(ck, node, "`sre.anomaly`")
    d = AnomalySpec()
    return AnomalySpec(
        rate_factor=f.number("rate_factor", d.rate_factor, low=1.0, open_low=True),
        rate_min=f.integer("rate_min", d.rate_min),
        denial_ratio=f.number("denial_ratio", d.denial_ratio, low=0.0, high=1.0, open_low=True),
        egress_factor=f.number("egress_factor", d.egress_factor, low=1.0, open_low=True),
        egress_min=f.size("egress_min", d.egress_min),
        new_tool=f.flag("new_tool", d.new_tool),
        learning=f.integer("learning", d.learning, low=0),
        quarantine=f.flag("quarantine", d.quarantine),
    )


def _cascade(ck: _Checker, node: YNode) -> CascadeSpec | None:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`sre.cascade` must be a mapping")
        return None
    ck.fields(node, ("window", "min_agents", "contain"), "`sre.cascade`")
    f = _Fields(ck, node, "`sre.cascade`")
    d = CascadeSpec()
    return CascadeSpec(
        window=f.duration("window", d.window),
        min_agents=f.integer("min_agents", d.min_agents, low=2),
        contain=f.flag("contain", d.contain),
    )


_SEVERITIES: Final = ("low", "medium", "high", "critical")


def parse_mcp(ck: _Checker, node: YNode) -> MCPSpec:
    if node.kind == "scalar" and node.value is None:
        return MCPSpec()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`mcp` must be a mapping")
        return MCPSpec()
    ck.fields(node, ("hide_at", "refuse_at", "pin"), "`mcp`")
    f = _Fields(ck, node, "`mcp`")
    spec = MCPSpec(
        hide_at=f.choice("hide_at", _SEVERITIES, "high"),
        refuse_at=f.choice("refuse_at", _SEVERITIES, "critical"),
        pin=f.flag("pin", True),
    )
    if f.ok and _SEVERITIES.index(spec.refuse_at) < _SEVERITIES.index(spec.hide_at):
        ck.err(
            node,
            "policy_invalid_value",
            "`mcp`: `refuse_at` must not be below `hide_at` (a server refused for findings "
            "that would not even hide a tool)",
        )
    return spec
