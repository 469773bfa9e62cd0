"""Fuzz-style properties: hostile input never crashes the loader or the decision path.

* any expression string compiles or raises ExprCompileError, nothing else;
* any action against any compiled policy gets a Decision, never an exception, and an
  allow is only ever backed by conditions that were exactly true;
* a policy made only of deny/require_approval rules with `default: deny` never allows;
* any text, bytes or YAML handed to the loader loads or raises PolicyError.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import reference
from test_differential import actions, conditions, policy_texts
from warden.action import Action, Effect
from warden.errors import PolicyError
from warden.policy import evaluate, explain, lint, load_policy, load_policy_text, parse_policy
from warden.policy.expr import CompiledExpr, ExprCompileError, compile_expr

EXPR_CODES = {
    "expr_syntax_error",
    "expr_unknown_name",
    "expr_unknown_function",
    "expr_arity_error",
    "expr_type_error",
    "expr_regex_error",
    "expr_forbidden",
    "expr_too_large",
}
POLICY_CODES = {
    "policy_file_error",
    "policy_parse_error",
    "policy_too_large",
    "policy_duplicate_key",
    "policy_unknown_field",
    "policy_missing_field",
    "policy_type_error",
    "policy_invalid_value",
    "policy_duplicate_id",
} | EXPR_CODES
# CPython's tokenizer warns about garbage such as `1and`; the warning is not the subject here
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")
HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the seed corpus: tests/cases ------------------------------------------------------

CASES = sorted((Path(__file__).parent / "cases").glob("*_test.yaml"))


def _corpus_conditions() -> list[str]:
    """Every `when` string in the corpus, valid or not (load-error files hold the bad ones)."""
    found: list[str] = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "when" and isinstance(value, yaml.ScalarNode):
                    found.append(value.value)
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    for path in CASES:
        walk(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
    return found


def _corpus_policies() -> list[str]:
    """The text of every inline policy in the corpus, cut out of its test file as written."""
    out = []
    for path in CASES:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = next(n for n, line in enumerate(lines) if line.startswith("policy:"))
        if lines[i] != "policy:":  # a flow mapping on the same line
            out.append(lines[i].removeprefix("policy:").strip() + "\n")
            continue
        body = []
        for line in lines[i + 1 :]:
            if line and not line.startswith(" "):
                break
            body.append(line[2:])
        out.append("\n".join(body) + "\n")
    return out


CORPUS_CONDITIONS = _corpus_conditions()
CORPUS_POLICIES = _corpus_policies()


def test_the_seed_corpus_is_there() -> None:
    assert len(CORPUS_CONDITIONS) > 150
    assert len(CORPUS_POLICIES) == len(CASES) > 12
    loaded = 0
    for text in CORPUS_POLICIES:
        try:
            load_policy_text(text)
            loaded += 1
        except PolicyError:
            pass
    assert 0 < loaded < len(CORPUS_POLICIES)  # both kinds of seed: policies that load, and not


def mutations(seeds: st.SearchStrategy[str], inserts: list[str]) -> st.SearchStrategy[str]:
    """A seed with a few characters cut, repeated or inserted."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        text = draw(seeds)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["cut", "dup", "insert"]))
            if op == "cut":
                text = text[:i] + text[i + 1 :]
            elif op == "dup":
                text = text[:i] + text[i : i + 3] + text[i:]
            else:
                text = text[:i] + draw(st.sampled_from(inserts)) + text[i:]
        return text

    return mutate()


# --- (a) expression strings -------------------------------------------------------------

TOKENS = [
    "args", "agent", "tool", "kind", "session", "context", "x", "foo", ".", ",", ":", "(",
    ")", "[", "]", "{", "}", "and", "or", "not", "in", "is", "==", "!=", "<", "<=", ">",
    ">=", "+", "-", "*", "**", "/", "//", "%", "~", "|", "&", "^", "<<", "@", ":=", "=",
    "lambda", "for", "if", "else", "yield", "await", "async", "import", "__class__",
    "__import__", "_x", "__builtins__", "mro", "1", "0", "1.5", "1e999", "0x10", "1j",
    "'s'", '"t"', "b'x'", "f'{x}'", "'''", "'", '"', "\\", "\n", "#", "\t", "\x00", "é",
    "len", "glob", "regex", "get", "has", "lower", "startswith", "true", "null", "None",
    "...", ";", "print", "eval", "open",
]  # fmt: skip

garbage = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30).flatmap(
    lambda toks: st.lists(st.sampled_from(["", " ", "  "]), min_size=len(toks),
                          max_size=len(toks)).map(
        lambda seps: "".join(t + s for t, s in zip(toks, seps, strict=True)))
)  # fmt: skip


nested = st.tuples(
    st.sampled_from(["(", "[", "not ", "-", "len(", "args.x + ", "a and "]),
    st.integers(1, 400),
).map(lambda t: t[0] * t[1] + "1" + {"(": ")", "[": "]", "len(": ")"}.get(t[0], "") * t[1])

long_strings = st.integers(4000, 6000).map(lambda n: "args.x == '" + "a" * n + "'")

seed_conditions = st.one_of(st.sampled_from(CORPUS_CONDITIONS), conditions)
expression_strings = st.one_of(
    garbage,
    seed_conditions,
    mutations(seed_conditions, TOKENS),
    nested,
    long_strings,
    st.text(max_size=200),
)


@FAST
@given(source=expression_strings)
@example(source="args.__class__.__mro__")
@example(source="().__class__.__bases__[0].__subclasses__()")
@example(source="__import__('os').system('true')")
@example(source="(" * 5000 + ")" * 5000)
@example(source="-" * 5000 + "1")
@example(source="not " * 2000 + "true")
@example(source="[" + "1," * 2000 + "1]")
@example(source="a" * 4097)
@example(source="args.x == \x00")
@example(source="\ud800")
@example(source="0x" + "f" * 4000 + " == args.x")
def test_expressions_compile_or_raise_compile_error(source: str) -> None:
    try:
        compiled = compile_expr(source)
    except ExprCompileError as exc:
        error = exc
    else:
        assert isinstance(compiled, CompiledExpr)
        assert compiled.source == source
        return
    assert error.issues, "an ExprCompileError names at least one problem"
    for issue in error.issues:
        assert issue.code in EXPR_CODES, issue
        assert issue.line >= 1 and issue.col >= 1, issue
        assert "\n" not in issue.message and "Traceback" not in issue.message


# --- (b) actions against compiled policies ----------------------------------------------

huge_ints = st.integers(min_value=-(2**300), max_value=2**300)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["a", "k", "", "a\ud800c", "\U0001f600", "\x00"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(["n", "s", "l", "m", "k", "a"]),
                                  st.text(max_size=4)), inner, max_size=4),
    ),
    max_leaves=20,
)  # fmt: skip


def deep(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@st.composite
def hostile_actions(draw: st.DrawFn) -> Action:
    base = draw(actions())
    keys = st.sampled_from(["n", "s", "l", "m", "b", "z"])
    args = dict(draw(st.dictionaries(keys, json_values, max_size=6)))
    if draw(st.integers(0, 5)) == 0:  # nesting deeper than any sane recursion limit
        d = draw(st.sampled_from([50, 2000, sys.getrecursionlimit() + 100]))
        for key in draw(st.lists(st.sampled_from(["l", "m", "n"]), min_size=1, max_size=2)):
            args[key] = deep(d, draw(scalars), draw(st.sampled_from(["list", "map"])))
    odd_tools = st.sampled_from(["a\ud800c", "\ud800", "a\udfff.b", "a\nb"])
    tool = draw(
        st.one_of(st.sampled_from(["a", "ab", "a.b"]), st.text(min_size=1, max_size=8), odd_tools)
    )
    agent = dict(base.agent)
    if draw(st.booleans()):
        agent["id"] = draw(st.one_of(json_values, st.sampled_from(["did:\ud800", "did:a\x00"])))
    return Action(tool=tool, kind=base.kind, args=args, agent=agent, session=base.session,
                  context=draw(st.dictionaries(st.sampled_from(["env"]), json_values)))  # fmt: skip


def _when_result(rule: Any, action: Action) -> Any:
    """What the rule's compiled condition gives: True, a value, or the exception raised."""
    if rule.when is None:
        return True
    try:
        return rule.when(action)
    except Exception as exc:  # any exception is "an error" for the property below
        return exc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=policy_texts(), batch=st.lists(hostile_actions(), min_size=1, max_size=3))
def test_decisions_never_raise_and_allow_only_on_true(text: str, batch: list[Action]) -> None:
    try:
        policy = load_policy_text(text)
    except PolicyError:
        assume(False)
    doc, _ = parse_policy(text)
    assert doc is not None
    for action in batch:
        decision = evaluate(policy, action)  # must not raise, whatever the action holds
        assert isinstance(decision.effect, Effect)
        assert explain(policy, action).decision.effect is decision.effect
        by_id = {r.id: r for r in policy.rules}
        for rule_id in decision.rules:  # every listed rule was a candidate and matched
            assert rule_id in by_id
            assert by_id[rule_id].effect is decision.effect
        if decision.effect is not Effect.ALLOW:
            continue
        for rule in policy.rules:
            if not reference.scope_admits(rule.spec, action):
                continue
            result = _when_result(rule, action)
            if rule.effect is not Effect.ALLOW:
                # no deny / require_approval candidate matched or errored
                assert result is False, (rule.id, result)
            elif rule.id in decision.rules:
                assert result is True, (rule.id, result)


@FAST
@given(
    text=policy_texts(effects=["deny", "require_approval"], default="deny"),
    batch=st.lists(hostile_actions(), min_size=1, max_size=3),
)
def test_deny_and_approval_rules_with_default_deny_never_allow(
    text: str, batch: list[Action]
) -> None:
    try:
        policy = load_policy_text(text)
    except PolicyError:
        assume(False)
    for action in batch:
        assert evaluate(policy, action).effect is not Effect.ALLOW


# --- (d) the loader on hostile documents ------------------------------------------------

VOCAB = ["apiVersion", "kind", "name", "description", "default", "rules", "id", "tool",
         "agent", "when", "effect", "reason", "warden/v1", "Policy", "allow", "deny",
         "require_approval", "tool_call", "message", "*", "a*", "[z-a]", "args.x == 1",
         "args.__class__", "1 <", "r1"]  # fmt: skip
yaml_scalars = st.one_of(st.sampled_from(VOCAB), st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False), st.text(max_size=10))  # fmt: skip
yaml_trees = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(VOCAB), st.text(max_size=5)), inner,
                        max_size=5),
    ),
    max_leaves=25,
)  # fmt: skip
YAML_BITS = [
    "\n", "  ", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "<<: ", "!!set ", "!tag ",
    "? ", "|", ">", "'", '"', "#", "---\n", "...\n", "%YAML 1.1\n", "2024-01-01", "0x1F",
    ".inf", "~", "\t", "\\u00e9", "\ufeff", "\x85", "\x00",
]  # fmt: skip
yaml_garbage = st.lists(st.one_of(st.sampled_from(YAML_BITS), st.sampled_from(VOCAB)),
                        max_size=40).map("".join)  # fmt: skip


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    """A valid policy (YAML block style) with random lines dropped, swapped or re-indented."""
    text = draw(policy_texts())
    data = yaml.safe_load(text)
    lines = yaml.safe_dump(data, sort_keys=False).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "insert"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        else:
            lines.insert(i, draw(yaml_garbage))
    return "\n".join(lines) + "\n"


def _check_policy_error(error: PolicyError) -> None:
    assert error.diagnostics, "a PolicyError carries its diagnostics"
    for d in error.diagnostics:
        assert d.severity == "error"
        assert d.code in POLICY_CODES, d
        assert d.line >= 0 and d.col >= 0


def _check_loader(text: str) -> None:
    try:
        policy = load_policy_text(text)
    except PolicyError as exc:
        error = exc
    else:
        doc, _ = parse_policy(text)
        assert doc is not None
        lint(doc)  # warnings about a policy that loaded never raise either
        assert policy.hash == doc.hash
        return
    _check_policy_error(error)


@FAST
@given(
    text=st.one_of(
        st.text(max_size=300),
        yaml_garbage,
        mutated_policies(),
        st.sampled_from(CORPUS_POLICIES),
        mutations(st.sampled_from(CORPUS_POLICIES), YAML_BITS + VOCAB),
        yaml_trees.map(lambda t: yaml.safe_dump(t, default_flow_style=None)),
        st.fixed_dictionaries(
            {"apiVersion": st.just("warden/v1"), "kind": st.just("Policy"),
             "default": yaml_scalars, "rules": yaml_trees},
            optional={"name": yaml_scalars, "extra": yaml_trees},
        ).map(yaml.safe_dump),
    )
)  # fmt: skip
@example(text="a: \ud800")
@example(text="a: &a [*a]")
@example(text="x: !!python/object:os.system ls")
@example(text="name: !!int x\n")
@example(text="name: !!bool 3\n")
@example(text="name: !!timestamp x\n")
@example(text="rules: !!set {a, b}\n")
@example(text="\x00")
@example(text="[" * 100 + "]" * 100)
@example(text=HEAD + "rules:\n- id: r\n  tool: '[z-a]'\n  effect: deny\n")
@example(text=HEAD + "rules:\n- id: r\n  agent: '\\ud800'\n  effect: deny\n")
def test_loader_raises_only_policy_error(text: str) -> None:
    _check_loader(text)


@FAST
@given(data=st.one_of(st.binary(max_size=300), mutated_policies().map(str.encode)))
@example(data=b"\xff\xfe\x00")
@example(data=b"apiVersion: warden/v1\nname: \xe9\n")
@example(data=b"apiVersion: warden/v1\r\nkind: Policy\r\ndefault: deny\r\nrules: []\r\n")
def test_loading_files_of_random_bytes_raises_only_policy_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_policy(path)
    except PolicyError as exc:
        error = exc
    else:
        return
    _check_policy_error(error)
