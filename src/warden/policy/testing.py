"""Policy test files: table-driven cases run by `warden policy test` and by pytest.

The format is specified in docs/policy-language.md ("Test files"). Cases
evaluate the policy alone: no approval store, no sinks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from warden.action import Action, Decision, Effect
from warden.errors import InvalidActionError
from warden.policy._diagnostics import Diagnostic
from warden.policy._yaml import YNode, parse_yaml
from warden.policy.compile import Policy, compile_policy
from warden.policy.evaluate import evaluate
from warden.policy.load import check_tree, load_file, read_text

__all__ = ["CaseResult", "FileResult", "discover", "run_test_file"]

_TOP: Final = ("policy", "cases", "want_errors", "description")
_CASE: Final = ("note", "action", "want")
_WANT: Final = ("effect", "rules", "reasons", "errors", "obligations")
_WANT_ERROR: Final = ("code", "line", "col")


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case; ``diff`` holds one line per mismatch."""

    file: str
    line: int
    note: str
    passed: bool
    diff: tuple[str, ...] = ()
    decision: Decision | None = None


@dataclass(slots=True)
class FileResult:
    """All cases of one file, plus diagnostics about the file itself (which fail it)."""

    file: str
    cases: list[CaseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.diagnostics and all(c.passed for c in self.cases)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Test files named by ``paths``: files as given, directories searched recursively."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(
                sorted(
                    f for f in p.rglob("*.yaml") if f.name.endswith(("_test.yaml", ".test.yaml"))
                )
            )
        else:
            found.append(p)
    return found


def _diag(file: str, node: YNode | None, code: str, message: str) -> Diagnostic:
    line, col = (node.line, node.col) if node is not None else (0, 0)
    return Diagnostic(file, line, col, code, message)


def _fields(file: str, node: YNode, allowed: tuple[str, ...], what: str) -> list[Diagnostic]:
    return [
        _diag(file, k, "test_unknown_field", f"unknown field `{key}` in {what}")
        for key, (k, _) in node.items.items()
        if key not in allowed
    ]


def run_test_file(path: str | Path) -> FileResult:
    """Load one test file and run its cases; never raises for bad content."""
    name = str(path)
    result = FileResult(name)
    text, _, diags = read_text(path)
    if text is None:
        result.diagnostics = diags
        return result
    tree, diags = parse_yaml(text, name)
    # YAML-level problems (duplicate keys, tags, dates, ...) inside an inline policy are
    # that policy's load errors, which `want_errors` may expect; others fail the file.
    in_policy = _inside_inline_policy(tree, diags) if tree is not None else []
    if tree is None or len(in_policy) < len(diags):
        result.diagnostics = [d for d in diags if d not in in_policy]
        return result
    if tree.kind != "map":
        result.diagnostics = [_diag(name, tree, "test_type_error", "a test file must be a mapping")]
        return result
    result.diagnostics.extend(_fields(name, tree, _TOP, "the test file"))
    top = tree.items
    if "policy" not in top:
        result.diagnostics.append(
            _diag(
                name,
                tree,
                "test_missing_field",
                "missing field `policy` (a path or an inline policy)",
            )
        )
        return result
    pnode = top["policy"][1]
    policy_diags: list[Diagnostic]
    policy: Policy | None = None
    if pnode.kind == "map":
        digest = hashlib.sha256(
            json.dumps(pnode.plain(), sort_keys=True, default=str).encode()
        ).hexdigest()
        doc, policy_diags = check_tree(pnode, name, "sha256:" + digest, in_policy)
    elif pnode.kind == "scalar" and isinstance(pnode.value, str):
        doc, policy_diags = load_file(Path(path).parent / pnode.value)
    else:
        result.diagnostics.append(
            _diag(name, pnode, "test_type_error", "`policy` must be a path or a policy mapping")
        )
        return result
    errors = [d for d in policy_diags if d.severity == "error"]
    if doc is not None:
        policy = compile_policy(doc)

    if "want_errors" in top:
        result.cases.append(_check_errors(name, top["want_errors"][1], errors))
    elif errors:
        result.diagnostics.extend(errors)
        return result
    if "cases" in top:
        cnode = top["cases"][1]
        if cnode.kind != "seq":
            result.diagnostics.append(
                _diag(name, cnode, "test_type_error", "`cases` must be a list")
            )
            return result
        if policy is None:
            result.diagnostics.append(
                _diag(name, cnode, "test_invalid", "`cases` need a policy that loads")
            )
            return result
        for i, case in enumerate(cnode.seq):
            result.cases.append(_run_case(name, policy, case, i, result.diagnostics))
    elif "want_errors" not in top:
        result.diagnostics.append(
            _diag(name, tree, "test_missing_field", "missing field `cases` (or `want_errors`)")
        )
    return result


def _inside_inline_policy(tree: YNode, diags: list[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics located between an inline ``policy`` mapping and the next top-level key."""
    if tree.kind != "map" or "policy" not in tree.items:
        return []
    _, pnode = tree.items["policy"]
    if pnode.kind != "map":
        return []
    start = (pnode.line, pnode.col)
    later = [(k.line, k.col) for k, _ in tree.items.values() if (k.line, k.col) > start]
    end = min(later, default=None)
    return [d for d in diags if start <= (d.line, d.col) and (end is None or (d.line, d.col) < end)]


def _check_errors(file: str, node: YNode, errors: list[Diagnostic]) -> CaseResult:
    line = node.line
    if node.kind != "seq":
        return CaseResult(file, line, "want_errors", False, ("`want_errors` must be a list",))
    wanted: list[dict[str, Any]] = []
    diff: list[str] = []
    for item in node.seq:
        if item.kind != "map" or "code" not in item.items:
            diff.append(f"line {item.line}: each expected error needs a `code`")
            continue
        unknown = [k for k in item.items if k not in _WANT_ERROR]
        if unknown:
            diff.append(f"line {item.line}: unknown field `{unknown[0]}` in an expected error")
        wanted.append(item.plain())
    remaining = list(errors)
    for want in wanted:
        hit = next(
            (
                e
                for e in remaining
                if e.code == want.get("code")
                and ("line" not in want or e.line == want["line"])
                and ("col" not in want or e.col == want["col"])
            ),
            None,
        )
        if hit is None:
            where = ":".join(str(want[k]) for k in ("line", "col") if k in want)
            diff.append(f"missing error {want.get('code')}" + (f" at {where}" if where else ""))
        else:
            remaining.remove(hit)
    diff.extend(f"unexpected error {e.line}:{e.col}: {e.code}: {e.message}" for e in remaining)
    if not errors and not wanted:
        diff.append("the policy loaded; `want_errors` expects it not to")
    return CaseResult(file, line, "want_errors", not diff, tuple(diff))


def _run_case(
    file: str, policy: Policy, node: YNode, index: int, diags: list[Diagnostic]
) -> CaseResult:
    note = f"case {index + 1}"
    if node.kind != "map":
        return CaseResult(file, node.line, note, False, ("a case must be a mapping",))
    diags.extend(_fields(file, node, _CASE, f"case {index + 1}"))
    f = node.items
    if "note" in f and isinstance(f["note"][1].value, str):
        note = f["note"][1].value
    if "action" not in f or "want" not in f:
        return CaseResult(file, node.line, note, False, ("a case needs `action` and `want`",))
    try:
        action = Action.from_dict(f["action"][1].plain(), where="`action`")
    except InvalidActionError as exc:
        return CaseResult(file, node.line, note, False, (str(exc),))
    wnode = f["want"][1]
    if wnode.kind != "map" or "effect" not in wnode.items:
        return CaseResult(file, node.line, note, False, ("`want` needs an `effect`",))
    diags.extend(_fields(file, wnode, _WANT, "`want`"))
    want = wnode.plain()
    if policy.flows.present:
        from warden.flows import evaluate_with_flows  # the scanners: only for flow policies

        decision = evaluate_with_flows(policy, action)
    else:
        decision = evaluate(policy, action)
    diff: list[str] = []
    try:
        want_effect = Effect(want["effect"])
    except ValueError:
        return CaseResult(
            file, node.line, note, False, (f"`want.effect` `{want['effect']}` is not an effect",)
        )
    if decision.effect is not want_effect:
        diff.append(f"effect: want {want_effect.value}, got {decision.effect.value}")
    if "rules" in want and list(want["rules"] or []) != list(decision.rules):
        diff.append(f"rules:  want {list(want['rules'] or [])}, got {list(decision.rules)}")
    if "reasons" in want and list(want["reasons"] or []) != list(decision.reasons):
        diff.append(f"reasons: want {list(want['reasons'] or [])}, got {list(decision.reasons)}")
    if "obligations" in want and list(want["obligations"] or []) != list(decision.obligations):
        diff.append(
            f"obligations: want {list(want['obligations'] or [])}, got {list(decision.obligations)}"
        )
    if "errors" in want and want["errors"] != len(decision.errors):
        diff.append(
            f"errors: want {want['errors']}, got {len(decision.errors)} {list(decision.errors)}"
        )
    return CaseResult(file, node.line, note, not diff, tuple(diff), decision)
