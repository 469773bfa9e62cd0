"""The condition compiler and the decision path, below what the YAML corpus can say.

Covers the compiler's own output (static types, names, constancy, issue positions,
limits, the arity of every library function) and decision details the test-file
format does not compare: error messages and their order, the default's reason,
and inputs no YAML file can hold (huge numbers, deep nesting, lone surrogates).
"""

from __future__ import annotations

import types

import pytest

from warden.action import Action, Effect
from warden.policy import evaluate, load_policy_text
from warden.policy.compile import CACHE_SIZE
from warden.policy.expr import MAX_SOURCE, ExprCompileError, compile_expr

HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"


def issues(source: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ExprCompileError) as info:
        compile_expr(source)
    return [(i.line, i.col, i.code) for i in info.value.issues]


def policy(rules: str, default: str = "deny") -> object:
    return load_policy_text(HEAD.replace("deny", default) + "rules:\n" + rules)


# --- what the compiler returns ----------------------------------------------------------


def test_compiled_condition_records_source_names_and_type() -> None:
    c = compile_expr("args.n > 3 and agent.trust >= 500")
    assert c.source == "args.n > 3 and agent.trust >= 500"
    assert c.names == frozenset({"args", "agent"})
    assert c.static_type == "bool"
    assert not c.constant


def test_literal_names_are_not_action_names() -> None:
    c = compile_expr("true != false and null == None")
    assert c.names == frozenset()
    assert c.constant


def test_a_bare_lookup_compiles_its_type_is_only_known_at_run_time() -> None:
    assert compile_expr("args.flag").static_type == "any"


def test_compiled_function_evaluates_against_an_action() -> None:
    c = compile_expr("startswith(tool, 'fs.') and len(args.paths) > 1")
    assert c.fn(Action("fs.read", args={"paths": ["a", "b"]})) is True
    assert c.fn(Action("db.read", args={"paths": ["a", "b"]})) is False


# --- where the compiler reports problems ------------------------------------------------


def test_issue_columns_are_relative_to_the_source() -> None:
    assert issues("args.x == 1 and nope") == [(1, 17, "expr_unknown_name")]


def test_issue_columns_count_leading_whitespace() -> None:
    assert issues("   nope") == [(1, 4, "expr_unknown_name")]


def test_issue_columns_count_characters_not_utf8_bytes() -> None:
    assert issues("'€€€' == nope") == [(1, 10, "expr_unknown_name")]
    assert issues("args.s == 'é' or nope") == [(1, 18, "expr_unknown_name")]


def test_issues_on_later_lines_keep_their_line() -> None:
    assert issues("args.x == 1 and\n  nope") == [(2, 3, "expr_unknown_name")]


def test_every_issue_is_reported_in_source_order() -> None:
    assert issues("b1 == 1 or len(1, 2) == 2 or args.__x or nope()") == [
        (1, 1, "expr_unknown_name"),
        (1, 12, "expr_arity_error"),
        (1, 30, "expr_forbidden"),
        (1, 42, "expr_unknown_function"),
    ]


def test_syntax_error_message_is_one_lowercase_sentence() -> None:
    with pytest.raises(ExprCompileError) as info:
        compile_expr("args.x ==")
    (issue,) = info.value.issues
    assert issue.code == "expr_syntax_error"
    assert issue.message == issue.message.lower()
    assert not issue.message.endswith(".")
    assert "\n" not in issue.message


def test_empty_condition_is_a_syntax_error() -> None:
    assert issues("   ") == [(1, 1, "expr_syntax_error")]


# --- limits -----------------------------------------------------------------------------


def test_a_condition_of_4096_characters_is_allowed() -> None:
    source = "args.s == '" + "a" * (MAX_SOURCE - 12) + "'"
    assert len(source) == MAX_SOURCE
    assert compile_expr(source).static_type == "bool"


def test_a_condition_over_4096_characters_is_too_large() -> None:
    source = "args.s == '" + "a" * (MAX_SOURCE - 11) + "'"
    assert len(source) == MAX_SOURCE + 1
    assert issues(source) == [(1, 1, "expr_too_large")]


@pytest.mark.parametrize("n", [10, 25])
def test_nesting_within_the_limit_compiles(n: int) -> None:
    compile_expr("not " * n + "args.ok")


@pytest.mark.parametrize(
    "source", ["not " * 40 + "args.ok", "[" * 40 + "1" + "]" * 40 + " == 1", "-" * 3000 + "1 > 1"]
)
def test_nesting_beyond_the_limit_is_too_large(source: str) -> None:
    codes = {code for _, _, code in issues(source)}
    assert codes <= {"expr_too_large", "expr_syntax_error"}  # CPython's parser may stop first
    assert codes


def test_more_than_512_nodes_is_too_large() -> None:
    assert [c for _, _, c in issues(" or ".join(["args.a == 1"] * 80))] == ["expr_too_large"]
    compile_expr(" or ".join(["args.a == 1"] * 20))


def test_a_list_literal_over_1024_items_is_too_large() -> None:
    assert {c for _, _, c in issues("args.x in [" + ", ".join(["1"] * 1100) + "]")} == {
        "expr_too_large"
    }


# --- the library: arity and static argument types ---------------------------------------

GOOD_CALLS = {
    "glob": "glob(args.s, 'a*')",
    "regex": "regex(args.s, '^a')",
    "startswith": "startswith(args.s, 'a')",
    "endswith": "endswith(args.s, 'a')",
    "lower": "lower(args.s) == 'a'",
    "upper": "upper(args.s) == 'A'",
    "len": "len(args.s) == 1",
    "has": "has(args, 's')",
    "get": "get(args, 's', 1) == 1",
}
BAD_ARITY = {
    "glob": "glob(args.s)",
    "regex": "regex(args.s, '^a', 'x')",
    "startswith": "startswith(args.s)",
    "endswith": "endswith()",
    "lower": "lower(args.s, args.t) == 'a'",
    "upper": "upper() == 'A'",
    "len": "len() == 1",
    "has": "has(args, 's', 1)",
    "get": "get(args, 's') == 1",
}
BAD_TYPES = {
    "glob": "glob(1, 'a*')",
    "regex": "regex([1], '^a')",
    "startswith": "startswith(args.s, 1)",
    "endswith": "endswith(null, 'a')",
    "lower": "lower(1) == 'a'",
    "upper": "upper(true) == 'A'",
    "len": "len(5) == 1",
    "has": "has('abc', 's')",
    "get": "get(args, 1, 1) == 1",
}


@pytest.mark.parametrize("name", sorted(GOOD_CALLS))
def test_each_library_function_compiles_with_its_arity(name: str) -> None:
    assert compile_expr(GOOD_CALLS[name]).static_type == "bool"


@pytest.mark.parametrize("name", sorted(BAD_ARITY))
def test_each_library_function_checks_its_arity(name: str) -> None:
    assert [c for _, _, c in issues(BAD_ARITY[name])] == ["expr_arity_error"]


@pytest.mark.parametrize("name", sorted(BAD_TYPES))
def test_each_library_function_checks_argument_types_it_can_see(name: str) -> None:
    assert "expr_type_error" in {c for _, _, c in issues(BAD_TYPES[name])}


def test_the_names_of_the_library_are_not_values() -> None:
    assert [c for _, _, c in issues("len == 1")] == ["expr_unknown_name"]


# --- decisions: errors, reasons, order --------------------------------------------------


def test_decision_errors_name_their_rule_deny_tier_first_in_document_order() -> None:
    p = policy(
        "  - {id: ask, when: args.b > 1, effect: require_approval}\n"
        "  - {id: deny-2, when: args.a > 1, effect: deny}\n"
        "  - {id: deny-1, when: args.a < 1, effect: deny}\n"
        "  - {id: deny-ok, when: args.z == 1, effect: deny}\n"
    )
    d = evaluate(p, Action("t", args={"a": "x", "b": "y", "z": 2}))  # type: ignore[arg-type]
    assert d.effect is Effect.DENY
    assert d.rules == ("deny-2", "deny-1")
    assert len(d.errors) == 2
    assert d.errors[0].startswith("rule `deny-2`: ")
    assert d.errors[1].startswith("rule `deny-1`: ")


def test_decision_errors_list_deny_tier_before_approval_tier() -> None:
    p = policy(
        "  - {id: ask, when: args.b > 1, effect: require_approval}\n"
        "  - {id: deny-1, when: args.a > 1 and false, effect: deny}\n"
        "  - {id: deny-2, when: args.missing, effect: deny}\n"
    )
    d = evaluate(p, Action("t", args={"a": 5, "b": "y"}))  # type: ignore[arg-type]
    assert d.effect is Effect.DENY  # `deny-2` errors: fail closed
    assert [e.split(":")[0] for e in d.errors] == ["rule `deny-2`"]
    d = evaluate(p, Action("t", args={"a": 5, "b": "y", "missing": False}))  # type: ignore[arg-type]
    assert d.effect is Effect.REQUIRE_APPROVAL
    assert [e.split(":")[0] for e in d.errors] == ["rule `ask`"]


def test_error_messages_are_about_the_condition_not_python() -> None:
    p = policy("  - {id: d, when: args.n > 1, effect: deny}\n")
    (error,) = evaluate(p, Action("t", args={"n": "x"})).errors  # type: ignore[arg-type]
    assert "Traceback" not in error and "TypeError" not in error
    assert "`args.n > 1`" in error or "args.n" in error


def test_the_default_decision_gives_one_reason_sentence() -> None:
    for default in ("deny", "allow"):
        d = evaluate(policy("  - {id: r, tool: x, effect: deny}\n", default), Action("t"))  # type: ignore[arg-type]
        assert d.effect is Effect(default)
        assert d.rules == ()
        (reason,) = d.reasons
        assert "default" in reason


def test_reasons_fall_back_to_the_rule_id() -> None:
    d = evaluate(policy("  - {id: quiet, effect: deny}\n"), Action("t"))  # type: ignore[arg-type]
    assert d.reasons == ("rule `quiet`",)


# --- inputs a YAML file cannot hold -----------------------------------------------------


def test_number_overflow_is_an_evaluation_error() -> None:
    p = policy("  - {id: d, when: args.n * 1.5 > 1, effect: deny}\n  - {id: a, effect: allow}\n")
    d = evaluate(p, Action("t", args={"n": 10**400}))  # type: ignore[arg-type]
    assert (d.effect, d.rules, len(d.errors)) == (Effect.DENY, ("d",), 1)


def test_huge_integers_compare_exactly() -> None:
    p = policy("  - {id: a, when: args.n > 1.0e300, effect: allow}\n")
    assert evaluate(p, Action("t", args={"n": 10**400})).effect is Effect.ALLOW  # type: ignore[arg-type]


def test_nan_is_not_equal_to_itself() -> None:
    p = policy(
        "  - {id: eq, tool: eq, when: 'args.x == args.x', effect: allow}\n"
        "  - {id: in, tool: in, when: 'args.x in [args.x]', effect: allow}\n"
    )
    for tool in ("eq", "in"):
        d = evaluate(p, Action(tool, args={"x": float("nan")}))  # type: ignore[arg-type]
        assert (d.effect, d.errors) == (Effect.DENY, ()), tool


@pytest.mark.parametrize("when", ["args.x > 1000", "1000 < args.x", "args.x >= args.y"])
def test_a_nan_operand_of_an_ordering_is_an_error_so_a_deny_still_denies(when: str) -> None:
    p = policy(f"  - {{id: big, when: '{when}', effect: deny}}\n  - {{id: a, effect: allow}}\n")
    d = evaluate(p, Action("t", args={"x": float("nan"), "y": 1}))  # type: ignore[arg-type]
    assert (d.effect, d.rules, len(d.errors)) == (Effect.DENY, ("big",), 1)


def test_very_deep_values_are_an_evaluation_error_not_a_crash() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    p = policy("  - {id: d, when: args.a == args.b, effect: deny}\n  - {id: a, effect: allow}\n")
    d = evaluate(p, Action("t", args={"a": deep, "b": deep}))  # type: ignore[arg-type]
    assert (d.effect, d.rules, len(d.errors)) == (Effect.DENY, ("d",), 1)


def test_lone_surrogates_in_tool_and_agent_are_single_characters() -> None:
    p = policy(
        "  - {id: t, tool: 'a?c', effect: allow}\n"
        "  - {id: g, tool: g, agent: 'did:?', effect: allow}\n"
        "  - {id: lit, tool: 'x[!y]', effect: deny}\n"
    )
    assert evaluate(p, Action("a\ud800c")).rules == ("t",)  # type: ignore[arg-type]
    assert evaluate(p, Action("g", agent={"id": "did:\udfff"})).rules == ("g",)  # type: ignore[arg-type]
    assert evaluate(p, Action("x\ud800")).effect is Effect.DENY  # type: ignore[arg-type]
    assert evaluate(p, Action("a\ud800\ud800c")).effect is Effect.DENY  # type: ignore[arg-type]


def test_conditions_read_any_mapping_not_only_dicts() -> None:
    p = policy(
        "  - {id: a, when: args.m.k == 1 and 'k' in args.m and len(args.m) == 1, effect: allow}\n"
    )
    args = types.MappingProxyType({"m": types.MappingProxyType({"k": 1})})
    assert evaluate(p, Action("t", args=args)).effect is Effect.ALLOW  # type: ignore[arg-type]


def test_candidate_memo_is_per_tool_and_kind() -> None:
    p = policy(
        "  - {id: msg, tool: t, kind: message, effect: allow}\n"
        "  - {id: call, tool: 't*', kind: tool_call, effect: deny}\n"
    )
    for _ in range(2):
        assert evaluate(p, Action("t", kind="message")).rules == ("msg",)  # type: ignore[arg-type]
        assert evaluate(p, Action("t")).rules == ("call",)  # type: ignore[arg-type]
        assert evaluate(p, Action("tx", kind="message")).effect is Effect.DENY  # type: ignore[arg-type]


def test_candidate_memo_stays_correct_past_its_bound() -> None:
    p = policy("  - {id: even, tool: 'e*', effect: allow}\n")
    for i in range(CACHE_SIZE + 50):
        tool = ("e" if i % 2 == 0 else "o") + str(i)
        assert evaluate(p, Action(tool)).allowed is (i % 2 == 0)  # type: ignore[arg-type]
    assert evaluate(p, Action("e0")).rules == ("even",)  # type: ignore[arg-type]
