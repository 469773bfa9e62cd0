"""Differential tests: the compiled, indexed evaluator against the naive reference.

Policies are random but built to collide: tool and agent globs come from a small
alphabet, conditions from a typed grammar over a few `args` keys whose values are
drawn from a pool that mixes types (so comparisons meet strings, nulls, lists...),
and keys may be missing. The compiled policy must agree with tests/reference.py on
the effect, the rules tuple and the number of errors, and memoised candidate lists
must not change any answer.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import reference
from warden.action import Action, Decision, Effect
from warden.errors import PolicyError
from warden.policy import evaluate, load_policy_text, parse_policy
from warden.policy.expr import EvalError, ExprCompileError, compile_expr
from warden.policy.testing import discover

# --- the vocabulary ---------------------------------------------------------------------

TOOLS = ["a", "b", "ab", "abc", "ac", "a.b", "a.c", "b.a", "a/b", "a.b.c", "x"]
TOOL_GLOBS = [
    "a", "b", "ab", "a.b", "x",
    "a*", "a.*", "ab*", "*", "**", "*b", "*.*", "?", "a?", "??", "a?c",
    "[ab]", "[ab]*", "[!a]*", "[a-c]?", "a[.]b", "a*b", "*a*",
]  # fmt: skip
AGENT_IDS = ["did:a", "did:b", "did:ab", "x", ""]
AGENT_GLOBS = ["did:a", "did:*", "*", "did:?", "x", "[dx]*", "did:[!a]*"]
KIND_CHOICES = [None, "tool_call", "message", ["tool_call", "delegate"], ["message"]]
KINDS = ["tool_call", "message", "delegate"]
EFFECTS = ["allow", "deny", "require_approval"]

ARG_KEYS = ["n", "s", "l", "m", "b", "z"]
VALUE_CLASSES: list[list[Any]] = [
    [None],
    [True, False],
    [0, 1, -1, 2, 10],
    [1.0, 0.5, 2.5, -0.0, 0.0, float("nan"), float("inf")],
    ["", "a", "ab", "A", "b.c", "a*", "k", "1"],
    [[], [1], [1, "a"], ["a"], [[1]], [True], [1.0]],
    [{}, {"k": 1}, {"k": "a", "a": 1}, {"a": [1]}, {"k": True}],
]  # a type first, then a value: every type turns up as often as every other
VALUES = st.sampled_from(VALUE_CLASSES).flatmap(st.sampled_from)
LITERALS = [
    "0", "1", "-1", "2", "10", "1.0", "0.5", "true", "false", "null", "''", "'a'", "'ab'",
    "'k'", "[]", "[1, 'a']", "['a', 'b']", "[1.0, true, null]", "[[1]]",
]  # fmt: skip
NUM_LITERALS = ["0", "1", "-1", "2", "10", "1.0", "0.5", "-2.5"]
STR_LITERALS = ["''", "'a'", "'ab'", "'k'", "'A'", "'b.c'"]
REGEXES = ["'^a'", "'b$'", "'a.c'", "'^[a-z]+$'", "''", "'k|b'"]
GLOBS = ["'a*'", "'?'", "'*.*'", "'[ab]*'", "'[!a]*'", "'*'"]


def _p(s: str) -> str:
    return "(" + s + ")"


# --- conditions: a typed grammar --------------------------------------------------------
# Each strategy produces source text whose static type (as far as a compiler can tell) is
# the one named, or "any" for lookups, so generated policies load; runtime values decide
# whether an evaluation error happens.


@functools.cache
def lookups() -> st.SearchStrategy[str]:
    key = st.sampled_from(ARG_KEYS)
    return st.one_of(
        key.map(lambda k: f"args.{k}"),
        key.map(lambda k: f'args["{k}"]'),
        st.sampled_from(["args.m.k", "args.m.a", "args.l[0]", "args.l[1]", "args.m['k']"]),
        # dynamic indexes are never negative: the spec is silent on `l[-1]` (see _pairs)
        st.sampled_from(["args.m[args.s]", "args.l[len(args.s)]", "args.m.a[0]"]),
        st.sampled_from(["agent.trust", "agent.id", "context.env", "session", "args.l[0][0]"]),
        st.tuples(key, st.sampled_from(LITERALS)).map(lambda t: f"get(args, '{t[0]}', {t[1]})"),
        st.tuples(st.sampled_from(["args.m", "args.l", "args"]), st.sampled_from(STR_LITERALS)).map(
            lambda t: f"get({t[0]}, {t[1]}, 0)"
        ),
    )


@functools.cache
def exprs(kind: str, depth: int) -> st.SearchStrategy[str]:
    """Source text of static type ``kind`` (bool, num, str, any).

    Every kind has one layer of its operators even at depth 0, over leaves; ``depth``
    adds layers. Operands are often lookups, whose values decide at run time.
    """
    any_ = lookups()
    if kind == "any":
        return any_
    if kind == "num":
        operand = (
            st.one_of(exprs("num", depth - 1), any_)
            if depth > 0
            else st.one_of(st.sampled_from(NUM_LITERALS), any_)
        )
        text = exprs("str", depth - 1) if depth > 0 else st.sampled_from(STR_LITERALS)
        return st.one_of(
            st.sampled_from(NUM_LITERALS),
            any_,
            st.tuples(operand, st.sampled_from(["+", "-", "*", "/", "//", "%"]), operand).map(
                lambda t: _p(f"{t[0]} {t[1]} {t[2]}")
            ),
            operand.map(lambda s: _p(f"-{s}")),
            st.one_of(any_, text, st.sampled_from(["[1, 2]", "args"])).map(lambda s: f"len({s})"),
        )
    if kind == "str":
        operand = (
            st.one_of(exprs("str", depth - 1), any_)
            if depth > 0
            else st.one_of(st.sampled_from(STR_LITERALS), any_)
        )
        return st.one_of(
            st.sampled_from(STR_LITERALS),
            any_,
            st.sampled_from(["tool", "kind"]),
            operand.map(lambda s: f"lower({s})"),
            operand.map(lambda s: f"upper({s})"),
            st.tuples(operand, operand).map(lambda t: _p(f"{t[0]} + {t[1]}")),
        )
    assert kind == "bool"
    num = exprs("num", depth)
    text = exprs("str", depth)
    anything = st.one_of(any_, num, text, st.sampled_from(LITERALS))
    comparisons = st.one_of(
        st.tuples(anything, st.sampled_from(["==", "!="]), anything),
        st.tuples(any_, st.sampled_from(["==", "!="]), st.sampled_from(LITERALS)),
        st.tuples(st.one_of(num, any_), st.sampled_from(["<", "<=", ">", ">="]), num),
        st.tuples(any_, st.sampled_from(["<", "<=", ">", ">="]), st.one_of(text, any_)),
        st.tuples(
            anything,
            st.sampled_from(["in", "not in"]),
            st.one_of(any_, st.sampled_from(["[1, 'a']", "['a', 'b']", "[]", "[null, [1]]"])),
        ),
        st.tuples(st.one_of(text, any_), st.sampled_from(["in", "not in"]), text),
    ).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
    chains = st.tuples(st.one_of(num, any_), any_, st.one_of(num, any_)).map(
        lambda t: f"{t[0]} < {t[1]} <= {t[2]}"
    )
    calls = st.one_of(
        st.tuples(st.one_of(text, any_), st.sampled_from(REGEXES)).map(
            lambda t: f"regex({t[0]}, {t[1]})"
        ),
        st.tuples(st.one_of(text, any_), st.one_of(st.sampled_from(GLOBS), any_)).map(
            lambda t: f"glob({t[0]}, {t[1]})"
        ),
        st.tuples(st.sampled_from(["startswith", "endswith"]), text, text).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(st.sampled_from(["args", "args.m", "agent"]), st.one_of(text, any_)).map(
            lambda t: f"has({t[0]}, {t[1]})"
        ),
    )
    leaves = st.one_of(comparisons, chains, calls, st.sampled_from(["true", "false"]), any_)
    if depth <= 0:
        return leaves
    sub = exprs("bool", depth - 1)
    return st.one_of(
        leaves,
        st.tuples(sub, st.sampled_from(["and", "or"]), sub).map(lambda t: _p(" ".join(t))),
        sub.map(lambda s: f"not {_p(s)}"),
    )


def atoms() -> st.SearchStrategy[str]:
    """One operator family each, equally likely, over lookups: the spec's table row by row."""
    any_ = lookups()
    lit = st.sampled_from(LITERALS)
    num_lit = st.sampled_from(NUM_LITERALS)
    operand = st.one_of(any_, num_lit)
    arith_op = st.sampled_from(["+", "-", "*", "/", "//", "%"])
    order_op = st.sampled_from(["<", "<=", ">", ">="])
    families = [
        st.tuples(any_, st.sampled_from(["==", "!="]), st.one_of(lit, any_)),
        st.tuples(any_, order_op, st.one_of(num_lit, any_, st.sampled_from(STR_LITERALS))),
        st.tuples(st.tuples(operand, arith_op, operand).map(" ".join), order_op, num_lit),
        st.tuples(st.tuples(any_, st.just("+"), any_).map(" ".join), st.just("=="), lit),
        st.tuples(st.one_of(any_, lit), st.sampled_from(["in", "not in"]), any_),
        st.tuples(any_, st.just("<"), any_, st.just("<"), any_),
        st.tuples(st.sampled_from(["not", ""]), any_),
        st.tuples(any_, st.sampled_from(["and", "or"]), any_),
        st.tuples(st.sampled_from(["-", "+"]), any_, st.sampled_from(["== -1", "> 0"])),
        st.tuples(
            st.sampled_from(["lower", "upper", "len"]).map(lambda f: f + "("),
            any_,
            st.sampled_from([") == 'a'", ") == 1", ") == 'A'"]),
        ).map("".join),
        st.tuples(
            st.sampled_from(["startswith", "endswith", "glob"]),
            any_,
            st.sampled_from(["'a'", "args.s", "'a*'"]),
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(
            st.sampled_from(["args", "args.m", "agent"]), st.one_of(any_, st.just("'k'"))
        ).map(lambda t: f"has({t[0]}, {t[1]})"),
        st.tuples(st.just("regex("), any_, st.sampled_from([", 'a')", ", '^a$')"])).map("".join),
    ]
    return st.one_of(*families).map(lambda t: t if isinstance(t, str) else " ".join(t).strip())


conditions = st.one_of(atoms(), st.integers(0, 2).flatmap(lambda d: exprs("bool", d)))


def globs(pool: list[str]) -> st.SearchStrategy[str | list[str]]:
    return st.one_of(st.sampled_from(pool), st.lists(st.sampled_from(pool), min_size=1, max_size=3))


@st.composite
def rule_dicts(draw: st.DrawFn, index: int, effects: list[str] = EFFECTS) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"r{index}", "effect": draw(st.sampled_from(effects))}
    if draw(st.booleans()):
        rule["tool"] = draw(globs(TOOL_GLOBS))
    if draw(st.integers(0, 3)) == 0:
        rule["agent"] = draw(globs(AGENT_GLOBS))
    kind = draw(st.sampled_from(KIND_CHOICES))
    if kind is not None:
        rule["kind"] = kind
    if draw(st.integers(0, 4)) > 0:
        rule["when"] = draw(conditions)
    return rule


@st.composite
def policy_texts(draw: st.DrawFn, effects: list[str] = EFFECTS, default: str | None = None) -> str:
    n = draw(st.integers(0, 8))
    rules = [draw(rule_dicts(i, effects)) for i in range(n)]
    doc = {
        "apiVersion": "warden/v1",
        "kind": "Policy",
        "default": default or draw(st.sampled_from(["allow", "deny"])),
        "rules": rules,
    }
    return json.dumps(doc, indent=1)  # JSON is YAML, and json.dumps quotes everything


@st.composite
def actions(draw: st.DrawFn) -> Action:
    args = draw(st.dictionaries(st.sampled_from(ARG_KEYS), VALUES, max_size=6))
    agent: dict[str, Any] = {}
    agent_id = draw(st.sampled_from([*AGENT_IDS, "missing", "missing", 5, None]))
    if agent_id != "missing":
        agent["id"] = agent_id
    if draw(st.booleans()):
        agent["trust"] = draw(st.sampled_from([0, 500, 999, "high", None]))
    return Action(
        tool=draw(st.sampled_from(TOOLS)),
        kind=draw(st.sampled_from(KINDS)),
        args=args,
        agent=agent,
        session=draw(st.sampled_from([None, "s1"])),
        context=draw(st.sampled_from([{}, {"env": "prod"}, {"env": 1}])),
    )


def verdict(d: Decision) -> tuple[object, ...]:
    """What a decision says, without per-call fields (timing, ids)."""
    return (d.effect, d.rules, d.reasons, d.errors, d.policy_hash)


def with_tool(action: Action, tool: str) -> Action:
    return Action(
        tool=tool,
        args=action.args,
        agent=action.agent,
        session=action.session,
        kind=action.kind,
        context=action.context,
    )


def load_or_reject(text: str) -> Any:
    """Compile a generated policy; only a static type error the grammar let through is skipped."""
    try:
        return load_policy_text(text)
    except PolicyError as exc:
        error = exc
    codes = {d.code for d in error.diagnostics}
    assert codes == {"expr_type_error"}, [d.render() for d in error.diagnostics]
    return reject()


# --- the properties ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=policy_texts(), drawn=st.lists(actions(), min_size=1, max_size=3))
def test_compiled_evaluator_agrees_with_reference(text: str, drawn: list[Action]) -> None:
    policy = load_or_reject(text)
    doc, _ = parse_policy(text)
    assert doc is not None
    # Every drawn action is tried under every tool name, so most rules get to collide.
    batch = [with_tool(a, tool) for a in drawn for tool in TOOLS]
    first = []
    for action in batch:
        want = reference.decide(doc, action)
        got = evaluate(policy, action)
        assert (got.effect, got.rules, len(got.errors)) == (
            want.effect,
            want.rules,
            want.errors,
        ), f"{action}\n{text}"
        first.append(got)
    # The candidate lists are memoised per (tool, kind) now: asking again, in another
    # order, must give the same decisions.
    for action, earlier in zip(reversed(batch), reversed(first), strict=True):
        assert verdict(evaluate(policy, action)) == verdict(earlier)


@settings(max_examples=150, deadline=None)
@given(cond=conditions, action=actions())
def test_single_condition_agrees_with_reference(cond: str, action: Action) -> None:
    """One deny and one allow rule on the same condition: match, no match and error all show."""
    text = json.dumps(
        {
            "apiVersion": "warden/v1",
            "kind": "Policy",
            "default": "deny",
            "rules": [
                {"id": "d", "tool": "deny.*", "when": cond, "effect": "deny"},
                {"id": "a", "when": cond, "effect": "allow"},
            ],
        }
    )
    policy = load_or_reject(text)
    for tool in ("deny.it", "allow.it"):
        probe = with_tool(action, tool)
        want = reference.decide_text(text, probe)
        got = evaluate(policy, probe)
        assert (got.effect, got.rules, len(got.errors)) == (want.effect, want.rules, want.errors)


def outcome_of(fn: Any, action: Action) -> object:
    """True, False or "error": a condition's result in the spec's terms."""
    try:
        value = fn(action)
    except (EvalError, reference.RefError):
        return "error"
    return value if isinstance(value, bool) else "error"


@settings(max_examples=300, deadline=None)
@given(
    cond=st.one_of(atoms(), exprs("bool", 0), exprs("bool", 1)),
    batch=st.lists(actions(), min_size=5, max_size=12),
)
def test_condition_outcomes_agree_with_reference(cond: str, batch: list[Action]) -> None:
    """Condition by condition: true, false or an evaluation error, exactly as the reference."""
    try:
        compiled = compile_expr(cond)
    except ExprCompileError as exc:
        codes = {i.code for i in exc.issues}
        compiled = None
    if compiled is None:
        assert codes == {"expr_type_error"}, cond
        reject()
    for action in batch:
        want = outcome_of(lambda a: reference.condition(cond, a), action)
        assert outcome_of(compiled.fn, action) == want, (cond, action)


# --- the operator table, exhaustively over a value pool ----------------------------------

TABLE_POOL: list[Any] = [
    None, True, False, 0, 1, -1, 2, 10**30, 1.0, 0.5, -0.0,
    float("nan"), float("inf"), float("-inf"),
    "", "a", "ab", "A", "1", "a*", "é",
    [], [1], [1.0], [True], ["a"], [[1]], [1, "a"],
    {}, {"a": 1}, {"a": 1.0}, {"a": True}, {"k": "a"}, {"1": 1},
]  # fmt: skip
BINARY_CONDITIONS = [
    "args.x == args.y", "args.x != args.y", "args.x < args.y", "args.x <= args.y",
    "args.x > args.y", "args.x >= args.y", "args.x in args.y", "args.x not in args.y",
    "args.x and args.y", "args.x or args.y", "has(args.x, args.y)", "glob(args.x, args.y)",
    "startswith(args.x, args.y)", "endswith(args.x, args.y)", "0 < args.x < args.y",
]  # fmt: skip
BINARY_VALUES = [
    "args.x + args.y", "args.x - args.y", "args.x * args.y", "args.x / args.y",
    "args.x // args.y", "args.x % args.y", "args.x[args.y]", "get(args.x, args.y, 0)",
]  # fmt: skip
UNARY_CONDITIONS = ["not args.x", "args.x", "regex(args.x, 'a')", "args.x in [1, 'a', null]"]
UNARY_VALUES = ["-args.x", "+args.x", "lower(args.x)", "upper(args.x)", "len(args.x)", "args.x.a"]


def _pairs(expr: str) -> list[tuple[Any, Any]]:
    if "args.y" not in expr:
        return [(x, None) for x in TABLE_POOL]
    pairs = [(x, y) for x in TABLE_POOL for y in TABLE_POOL]
    if "[args.y]" in expr:
        # The spec does not say whether `l[-1]` is out of range (the reference says it is;
        # Python, and so the compiled evaluator, reads the last item): left out until it does.
        pairs = [(x, y) for x, y in pairs if not (isinstance(x, list) and type(y) is int and y < 0)]
    return pairs


@pytest.mark.parametrize("cond", BINARY_CONDITIONS + UNARY_CONDITIONS)
def test_operator_table_conditions_agree_with_reference(cond: str) -> None:
    compiled = compile_expr(cond)
    for x, y in _pairs(cond):
        action = Action("t", args={"x": x, "y": y})
        want = outcome_of(lambda a: reference.condition(cond, a), action)
        assert outcome_of(compiled.fn, action) == want, (cond, x, y)


@pytest.mark.parametrize("expr", BINARY_VALUES + UNARY_VALUES)
def test_operator_table_values_agree_with_reference(expr: str) -> None:
    """The value an operator produces, checked through strict `==` against the reference's."""
    compiled = compile_expr(f"{expr} == args.r")
    for x, y in _pairs(expr):
        action = Action("t", args={"x": x, "y": y, "r": None})  # `r` present: no error of its own
        try:
            want = reference.Interpreter(action).run(reference.parse(expr))
        except reference.RefError:
            assert outcome_of(compiled.fn, action) == "error", (expr, x, y)
            continue
        probe = Action("t", args={"x": x, "y": y, "r": want})
        nan = isinstance(want, float) and math.isnan(want)
        assert outcome_of(compiled.fn, probe) is (not nan), (expr, x, y, want)


def test_generator_reaches_every_outcome() -> None:
    """The grammar is only useful if it produces matches, non-matches and errors."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(cond=conditions, action=actions())
    def probe(cond: str, action: Action) -> None:
        try:
            seen.add(str(reference.condition(cond, action)))
        except reference.RefError:
            seen.add("error")

    probe()
    assert seen == {"True", "False", "error"}


# --- the reference itself, checked against the corpus -----------------------------------

CASE_FILES = discover([Path(__file__).parent / "cases"])


def test_reference_agrees_with_the_corpus() -> None:
    """Every case of every corpus file, decided by the reference: it reads the spec alike."""
    checked = 0
    for path in CASE_FILES:
        data = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        top = {k.value: v for k, v in data.value}
        if "cases" not in top:
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc, diags = parse_policy(json.dumps(raw["policy"]), path.name)
        assert doc is not None, [d.render() for d in diags]
        for case in raw["cases"]:
            action = Action.from_dict(case["action"])
            got = reference.decide(doc, action)
            want = case["want"]
            where = f"{path.name}: {case['note']}"
            assert got.effect is Effect(want["effect"]), where
            if "rules" in want:
                assert list(got.rules) == want["rules"], where
            if "errors" in want:
                assert got.errors == want["errors"], where
            checked += 1
    assert checked >= 300
