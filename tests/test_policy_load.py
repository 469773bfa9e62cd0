"""Loading policies: diagnostics, hints, hashes, file and YAML errors, lint, explain.

The YAML corpus (tests/cases) covers error codes at their positions; these tests cover
what it cannot express: rendering, hints, ordering, the PolicyError message, hashes,
files on disk, YAML that does not parse at all, and the warnings of `lint`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from warden.action import Action, Effect
from warden.errors import PolicyError, WardenError
from warden.policy import (
    Diagnostic,
    evaluate,
    explain,
    lint,
    load_policy,
    load_policy_text,
    parse_policy,
)
from warden.policy.load import MAX_FILE_BYTES, load_file
from warden.policy.testing import run_test_file

HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"


def diags(text: str, filename: str = "p.yaml") -> list[Diagnostic]:
    doc, found = parse_policy(text, filename)
    assert doc is None, "expected the policy not to load"
    return found


def where(found: list[Diagnostic]) -> list[tuple[int, int, str]]:
    return [(d.line, d.col, d.code) for d in found]


# --- diagnostics ------------------------------------------------------------------------


def test_diagnostic_renders_file_line_col_code_message() -> None:
    d = Diagnostic("pol.yaml", 7, 13, "expr_unknown_name", "unknown name `foo`")
    assert d.render() == "pol.yaml:7:13: expr_unknown_name: unknown name `foo`"


def test_warning_renders_with_its_severity() -> None:
    d = Diagnostic("pol.yaml", 3, 5, "lint_broad_allow", "too broad", "warning")
    assert d.render() == "pol.yaml:3:5: warning: lint_broad_allow: too broad"


def test_whole_file_diagnostic_renders_without_position() -> None:
    d = Diagnostic("pol.yaml", 0, 0, "policy_parse_error", "the file is empty")
    assert d.render() == "pol.yaml: policy_parse_error: the file is empty"


def test_rendered_loader_diagnostic_points_at_the_value() -> None:
    (d,) = diags(HEAD + "rules:\n  - id: r\n    effect: alow\n")
    assert d.render() == (
        "p.yaml:6:13: policy_invalid_value: "
        "`effect` must be one of allow, deny, require_approval, not `alow`"
    )
    assert d.severity == "error"


def test_unknown_top_level_field_has_a_did_you_mean_hint() -> None:
    found = diags(HEAD + "rulez: []\n")
    unknown = [d for d in found if d.code == "policy_unknown_field"]
    assert [(d.line, d.col) for d in unknown] == [(4, 1)]
    assert unknown[0].hint == "did you mean `rules`?"
    assert "`rulez`" in unknown[0].message


def test_unknown_rule_field_has_a_did_you_mean_hint() -> None:
    found = diags(HEAD + "rules:\n  - id: a\n    efect: deny\n")
    (unknown,) = [d for d in found if d.code == "policy_unknown_field"]
    assert unknown.hint == "did you mean `effect`?"
    assert (unknown.line, unknown.col) == (6, 5)


def test_unknown_field_far_from_any_lists_the_known_fields() -> None:
    found = diags(HEAD + "rules:\n  - id: a\n    effect: deny\n    zzzzzz: 1\n")
    (unknown,) = found
    assert unknown.code == "policy_unknown_field"
    assert unknown.hint is not None and "did you mean" not in unknown.hint
    for name in ("id", "tool", "agent", "kind", "when", "effect", "reason"):
        assert name in unknown.hint


def test_unknown_function_hint_names_the_library() -> None:
    (d,) = diags(HEAD + "rules:\n  - id: a\n    when: size(args) == 1\n    effect: deny\n")
    assert d.code == "expr_unknown_function"
    assert d.hint is not None
    for fn in ("glob", "regex", "startswith", "endswith", "lower", "upper", "len", "has", "get"):
        assert fn in d.hint


def test_all_errors_are_collected_and_sorted_by_position() -> None:
    text = (
        "apiVersion: warden/v9\n"  # 1:13 invalid value
        "kind: Policy\n"
        "default: deny\n"
        "rules:\n"
        "  - id: a\n"
        "    when: nope == 1\n"  # 6:11 unknown name
        "    effect: deny\n"
        "  - id: a\n"  # 8:9 duplicate id
        "    effect: maybe\n"  # 9:13 invalid value
        "  - id: c\n"
        "    when: '1 < \"a\" and len(args, 1) == 2'\n"  # 11:12 type, 11:24 arity
        "    effect: deny\n"
        "extra: 1\n"  # 13:1 unknown field
    )
    found = diags(text)
    assert where(found) == [
        (1, 13, "policy_invalid_value"),
        (6, 11, "expr_unknown_name"),
        (8, 9, "policy_duplicate_id"),
        (9, 13, "policy_invalid_value"),
        (11, 12, "expr_type_error"),
        (11, 24, "expr_arity_error"),
        (13, 1, "policy_unknown_field"),
    ]


def test_a_chained_comparison_reports_its_middle_operand_once() -> None:
    found = diags(HEAD + "rules:\n  - id: a\n    when: 0 < nope < 10\n    effect: deny\n")
    assert where(found) == [(6, 15, "expr_unknown_name")]


# --- PolicyError ------------------------------------------------------------------------


def test_policy_error_message_is_the_first_diagnostic_and_a_count() -> None:
    text = HEAD.replace("deny", "maybe") + "rules: []\nextra: 1\nmore: 2\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "x.yaml")
    err = info.value
    assert isinstance(err, WardenError)
    assert [d.code for d in err.diagnostics] == [
        "policy_invalid_value",
        "policy_unknown_field",
        "policy_unknown_field",
    ]
    assert str(err) == err.diagnostics[0].render() + " (and 2 more)"
    assert str(err).startswith("x.yaml:3:10: policy_invalid_value: ")


def test_policy_error_with_one_diagnostic_has_no_count() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(HEAD + "rules: [1]\n", "one.yaml")
    assert str(info.value) == info.value.diagnostics[0].render()
    assert "more" not in str(info.value)


def test_policy_error_carries_errors_only_not_warnings() -> None:
    text = "apiVersion: warden/v1\nkind: Policy\ndefault: allow\nrules:\n  - id: a\n    effect: x\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text)
    assert {d.severity for d in info.value.diagnostics} == {"error"}


# --- hashes, names, files ---------------------------------------------------------------


def test_policy_hash_is_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    raw = (HEAD + "rules: []\n").replace("\n", "\r\n").encode()  # CRLF: bytes, not text
    path = tmp_path / "crlf.yaml"
    path.write_bytes(raw)
    policy = load_policy(path)
    assert policy.hash == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert evaluate(policy, Action("t")).policy_hash == policy.hash


def test_policy_hash_of_text_is_sha256_of_its_utf8() -> None:
    text = HEAD + "description: café\nrules: []\n"
    assert load_policy_text(text).hash == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_policy_hash_changes_with_any_byte() -> None:
    a = load_policy_text(HEAD + "rules: []\n")
    b = load_policy_text(HEAD + "rules: []\n\n")
    assert a.hash != b.hash


def test_policy_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "support-agent.yaml"
    path.write_text(HEAD + "rules: []\n")
    assert load_policy(path).name == "support-agent"
    path.write_text(HEAD + "name: custom\nrules: []\n")
    assert load_policy(path).name == "custom"


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    doc, found = load_file(tmp_path / "absent.yaml")
    assert doc is None
    assert [(d.code, d.line, d.col) for d in found] == [("policy_file_error", 0, 0)]


def test_directory_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert [d.code for d in info.value.diagnostics] == ["policy_file_error"]


def test_non_utf8_file_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes((HEAD + "description: caf\xe9\nrules: []\n").encode("latin-1"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (d,) = info.value.diagnostics
    assert d.code == "policy_file_error"
    assert "utf-8" in d.message.lower()


def test_file_over_32_mib_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:  # sparse: no 32 MiB written
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert [d.code for d in info.value.diagnostics] == ["policy_file_error"]


def test_file_of_exactly_32_mib_is_not_refused_for_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.write((HEAD + "rules: []\n").encode())
        f.write(b"#" * (MAX_FILE_BYTES - f.tell()))
    assert os.path.getsize(path) == MAX_FILE_BYTES
    assert load_policy(path).default is Effect.DENY


# --- YAML that does not parse -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        (HEAD + "rules: [\n", 5, 1),  # unclosed flow sequence: found at end of input
        (HEAD + "rules:\n  - id: a\n   effect: deny\n", 6, 4),  # bad indentation
        (HEAD + "rules: []\nname: 'unterminated\n", 6, 1),
        ("---\na: 1\n---\nb: 2\n", 3, 1),  # two documents
        (HEAD + 'rules: []\nname: "\\q"\n', 5, 8),  # unknown escape
    ],
)
def test_yaml_syntax_errors_are_located(text: str, line: int, col: int) -> None:
    assert where(diags(text)) == [(line, col, "policy_parse_error")]


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_file_is_a_parse_error(text: str) -> None:
    assert where(diags(text)) == [(0, 0, "policy_parse_error")]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_a_document_that_is_not_a_mapping_is_a_type_error(text: str) -> None:
    assert where(diags(text)) == [(1, 1, "policy_type_error")]


def test_nesting_deeper_than_64_levels_is_too_large() -> None:
    deep = HEAD + "rules: " + "[" * 70 + "]" * 70 + "\n"
    assert [d.code for d in diags(deep)] == ["policy_too_large"]
    shallow = HEAD + "rules: " + "[" * 40 + "]" * 40 + "\n"
    assert "policy_too_large" not in {d.code for d in diags(shallow)}


def test_alias_expansion_past_a_million_values_is_too_large() -> None:
    lines = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for i in range(7):  # 10 ** 8 values once expanded, from a few hundred bytes
        alias = "*a" if i == 0 else f"*b{i - 1}"
        lines.append(f"b{i}: &b{i} [" + ", ".join([alias] * 10) + "]")
    assert [d.code for d in diags("\n".join(lines))] == ["policy_too_large"]


def test_text_with_lone_surrogates_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(HEAD + "rules: []\nname: a\ud800b\n")
    assert [d.code for d in info.value.diagnostics] == ["policy_parse_error"]


@pytest.mark.parametrize(
    "value", ["!!int x", "!!bool 3", "!!float x", "!!timestamp x", "!!str [a]", "!custom x"]
)
def test_explicit_tags_are_parse_errors_not_crashes(value: str) -> None:
    found = diags(HEAD + f"rules: []\nname: {value}\n")
    assert (5, 7, "policy_parse_error") in where(found)


def test_anchors_and_aliases_of_plain_values_load() -> None:
    rules = "  - {id: a, tool: &t fs.read, effect: allow}\n  - {id: b, tool: *t, effect: deny}\n"
    text = HEAD + "rules:\n" + rules
    policy = load_policy_text(text)
    assert evaluate(policy, Action("fs.read")).rules == ("b",)


# --- where a condition's problem is reported --------------------------------------------

RULE = HEAD + "rules:\n  - id: r\n    effect: deny\n    when: {when}\n"  # `when` on line 7


@pytest.mark.parametrize(
    ("when", "col"),
    [
        ('"args.x == 1 and foo"', 28),  # double-quoted: the quote is col 11
        ("'args.x == 1 and foo'", 28),  # single-quoted
        ("args.x == 1 and foo", 27),  # plain: the expression starts at col 11
        ('"   foo"', 15),  # leading spaces inside the quotes count
        ('"args.x == \\"a\\" and foo"', 32),  # escapes take more columns than characters
        ("\"args.x == '\\u00e9' and foo\"", 35),  # \u00e9: six columns, one character
        ("'args.x == ''a'' and foo'", 32),  # '' is one quote in two columns
        ("\"'é' == args.x and foo\"", 30),  # columns count characters, not bytes
    ],
)
def test_condition_errors_point_inside_one_line_scalars(when: str, col: int) -> None:
    found = diags(RULE.format(when=when))
    assert where(found) == [(7, col, "expr_unknown_name")]


def test_syntax_error_at_the_end_of_a_quoted_condition_stays_on_its_line() -> None:
    (d,) = diags(RULE.format(when='"args.x =="'))
    assert (d.line, d.code) == (7, "expr_syntax_error")
    assert 11 < d.col <= 22  # somewhere in `args.x ==` or at its end, not past the line


@pytest.mark.parametrize(
    "when",
    [
        ">-\n      args.x == 1 and\n      foo",  # folded block scalar
        "|\n      args.x == 1 and\n      foo",  # literal block scalar
        '"args.x == 1 and\n      foo"',  # a quoted scalar folded over two lines
        "args.x == 1 and\n      foo",  # a plain scalar over two lines
    ],
)
def test_condition_errors_in_multi_line_scalars_point_at_the_scalar(when: str) -> None:
    assert where(diags(RULE.format(when=when))) == [(7, 11, "expr_unknown_name")]


def test_invalid_scope_glob_is_a_load_error_not_a_crash() -> None:
    found = diags(HEAD + "rules:\n  - id: r\n    agent: ['did:*', '[z-a]']\n    effect: deny\n")
    assert where(found) == [(6, 22, "expr_regex_error")]


# --- lint -------------------------------------------------------------------------------


def lint_codes(text: str) -> list[tuple[str, str]]:
    doc, found = parse_policy(text, "l.yaml")
    assert doc is not None, [d.render() for d in found]
    out = lint(doc)
    assert all(d.severity == "warning" for d in out)
    assert out == sorted(out)
    return [(d.code, d.message) for d in out]


def codes_of(text: str) -> list[str]:
    return [code for code, _ in lint_codes(text)]


def test_lint_default_allow_fires_on_default_allow_only() -> None:
    assert codes_of(HEAD.replace("deny", "allow") + "rules: []\n") == ["lint_default_allow"]
    assert codes_of(HEAD + "rules: []\n") == []


def test_lint_default_allow_renders_as_a_whole_file_warning() -> None:
    doc, _ = parse_policy(HEAD.replace("deny", "allow") + "rules: []\n", "l.yaml")
    assert doc is not None
    (d,) = lint(doc)
    assert d.render().startswith("l.yaml: warning: lint_default_allow: ")


def test_lint_broad_allow_fires_on_an_unscoped_allow() -> None:
    base = HEAD + "rules:\n  - id: a\n    effect: allow\n"
    assert codes_of(base) == ["lint_broad_allow"]
    for scope in ("    tool: fs.read\n", "    agent: 'did:*'\n", "    kind: message\n",
                  "    when: args.ok == true\n"):  # fmt: skip
        assert codes_of(base + scope) == [], scope


def test_lint_broad_allow_ignores_unscoped_deny_and_approval() -> None:
    for effect in ("deny", "require_approval"):
        assert codes_of(HEAD + f"rules:\n  - id: a\n    effect: {effect}\n") == []


def test_lint_unreachable_rule_fires_when_a_blanket_deny_covers_the_scope() -> None:
    text = HEAD + (
        "rules:\n"
        "  - {id: allow-read, tool: fs.read, effect: allow}\n"
        "  - {id: ask-list, tool: 'fs.list*', effect: require_approval}\n"
        "  - {id: no-fs, tool: 'fs.*', effect: deny}\n"
    )
    found = lint_codes(text)
    assert [c for c, _ in found] == ["lint_unreachable_rule", "lint_unreachable_rule"]
    assert "`allow-read`" in found[0][1] and "`no-fs`" in found[0][1]
    assert "`ask-list`" in found[1][1]


@pytest.mark.parametrize(
    "deny",
    [
        "{id: no-fs, tool: 'fs.*', when: args.x == 1, effect: deny}",  # has a condition
        "{id: no-fs, tool: fs.write, effect: deny}",  # narrower tool
        "{id: no-fs, tool: 'fs.*', kind: message, effect: deny}",  # narrower kind
        "{id: no-fs, tool: 'fs.*', agent: 'did:key:*', effect: deny}",  # narrower agent
        "{id: no-fs, tool: 'fs.*', agent: '*', effect: deny}",  # misses agents without an id
    ],
)
def test_lint_unreachable_rule_does_not_fire_on_a_near_miss(deny: str) -> None:
    text = HEAD + f"rules:\n  - {{id: allow-read, tool: fs.read, effect: allow}}\n  - {deny}\n"
    assert "lint_unreachable_rule" not in codes_of(text)


def test_lint_constant_condition_fires_on_a_condition_reading_nothing() -> None:
    for when in ("1 < 2", "true", "'a' in ['a', 'b']", "len('abc') == 3"):
        text = HEAD + f'rules:\n  - id: a\n    tool: t\n    when: "{when}"\n    effect: deny\n'
        assert codes_of(text) == ["lint_constant_condition"], when
    for when in ("args.x < 2", "tool == 't'", "session == null", "has(context, 'a')"):
        text = HEAD + f'rules:\n  - id: a\n    tool: t\n    when: "{when}"\n    effect: deny\n'
        assert codes_of(text) == [], when


@pytest.mark.parametrize(
    ("field", "patterns", "redundant"),
    [
        ("tool", "['db.*', 'db.drop']", ["db.drop"]),
        ("tool", "['db.drop', 'db.*']", ["db.drop"]),
        ("tool", "['*', 'x']", ["x"]),
        ("tool", "['a', 'a']", ["a"]),
        ("tool", "['db.*', 'db.read*']", ["db.read*"]),
        ("agent", "['did:*', 'did:key:z']", ["did:key:z"]),
    ],
)
def test_lint_redundant_pattern_fires_on_a_covered_pattern(
    field: str, patterns: str, redundant: list[str]
) -> None:
    text = HEAD + f"rules:\n  - id: r\n    {field}: {patterns}\n    effect: deny\n"
    found = lint_codes(text)
    assert [c for c, _ in found] == ["lint_redundant_pattern"] * len(redundant)
    for (_, message), pattern in zip(found, redundant, strict=True):
        assert f"`{pattern}`" in message and f"`{field}`" in message


@pytest.mark.parametrize(
    ("field", "patterns"),
    [
        ("tool", "['db.*', 'fs.*']"),
        ("tool", "['db.drop', 'db.read']"),
        ("tool", "['db.drop*', 'db.d*x']"),
        ("agent", "['did:key:*', 'did:web:*']"),
    ],
)
def test_lint_redundant_pattern_does_not_fire_on_distinct_patterns(
    field: str, patterns: str
) -> None:
    text = HEAD + f"rules:\n  - id: r\n    {field}: {patterns}\n    effect: deny\n"
    assert codes_of(text) == []


def test_lint_never_fails_loading() -> None:
    text = HEAD.replace("deny", "allow") + "rules:\n  - {id: a, effect: allow}\n"
    policy = load_policy_text(text)  # warnings are not errors
    assert evaluate(policy, Action("anything")).effect is Effect.ALLOW


# --- explain ----------------------------------------------------------------------------

EXPLAINED = HEAD + (
    "rules:\n"
    "  - {id: other-tool, tool: db.drop, effect: deny}\n"
    "  - {id: other-kind, kind: message, effect: deny}\n"
    "  - {id: other-agent, agent: 'did:web:*', effect: deny}\n"
    "  - {id: plain-allow, tool: 'fs.*', effect: allow}\n"
    "  - {id: true-allow, when: args.n > 1, effect: allow}\n"
    "  - {id: false-ask, when: args.n > 100, effect: require_approval}\n"
    "  - {id: broken-allow, when: args.missing == 1, effect: allow}\n"
)


def test_explain_gives_every_rule_a_status_in_document_order() -> None:
    policy = load_policy_text(EXPLAINED)
    action = Action("fs.read", args={"n": 5}, agent={"id": "did:key:a"})
    trace = explain(policy, action)
    assert [(r.id, r.status) for r in trace.rules] == [
        ("other-tool", "skipped"),
        ("other-kind", "skipped"),
        ("other-agent", "skipped"),
        ("plain-allow", "matched"),
        ("true-allow", "matched"),
        ("false-ask", "not_matched"),
        ("broken-allow", "not_matched"),
    ]
    assert [r.line for r in trace.rules] == [5, 6, 7, 8, 9, 10, 11]
    decided = evaluate(policy, action)
    assert (trace.decision.effect, trace.decision.rules) == (decided.effect, decided.rules)
    assert trace.decision.errors == decided.errors
    assert trace.decision.rules == ("plain-allow", "true-allow")
    details = {r.id: r.detail for r in trace.rules}
    assert "decides" in details["plain-allow"] and "decides" in details["true-allow"]
    assert "decides" not in details["false-ask"]
    assert "does not allow" in details["broken-allow"]


def test_explain_shows_a_failing_deny_as_matched_fail_closed() -> None:
    policy = load_policy_text(HEAD + "rules:\n  - {id: d, when: args.n > 1, effect: deny}\n")
    trace = explain(policy, Action("t", args={"n": "x"}))
    (rule,) = trace.rules
    assert (rule.status, trace.decision.effect) == ("matched", Effect.DENY)
    assert "fail closed" in rule.detail


def test_explain_skips_an_agent_rule_for_an_agent_without_id() -> None:
    policy = load_policy_text(HEAD + "rules:\n  - {id: any-agent, agent: '*', effect: allow}\n")
    trace = explain(policy, Action("t"))
    assert [(r.id, r.status) for r in trace.rules] == [("any-agent", "skipped")]
    assert trace.decision.effect is Effect.DENY


def test_explain_to_dict_carries_the_decision_and_the_rules() -> None:
    policy = load_policy_text(EXPLAINED)
    out = explain(policy, Action("db.drop", args={"n": 0})).to_dict()
    assert out["decision"]["effect"] == "deny"
    assert out["decision"]["rules"] == ["other-tool"]
    assert [r["status"] for r in out["rules"]][:1] == ["matched"]


# --- test files -------------------------------------------------------------------------


def test_yaml_problems_inside_an_inline_policy_are_its_load_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup_test.yaml"
    path.write_text(
        "policy:\n  apiVersion: warden/v1\n  kind: Policy\n  default: deny\n  default: allow\n"
        "  rules: []\nwant_errors:\n  - {code: policy_duplicate_key, line: 5, col: 3}\n"
    )
    result = run_test_file(path)
    assert result.diagnostics == []
    assert [c.passed for c in result.cases] == [True]


def test_yaml_problems_outside_the_policy_fail_the_test_file(tmp_path: Path) -> None:
    path = tmp_path / "dup_test.yaml"
    path.write_text(
        "policy: {apiVersion: warden/v1, kind: Policy, default: deny, rules: []}\n"
        "cases:\n  - note: n\n    note: again\n    action: {tool: t}\n    want: {effect: deny}\n"
    )
    result = run_test_file(path)
    assert [(d.line, d.col, d.code) for d in result.diagnostics] == [(4, 5, "policy_duplicate_key")]
    assert not result.passed


def test_a_wrong_expectation_fails_its_case_with_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "wrong_test.yaml"
    path.write_text(
        "policy: {apiVersion: warden/v1, kind: Policy, default: deny, rules: []}\n"
        "cases:\n  - note: wrong\n    action: {tool: t}\n"
        "    want: {effect: allow, rules: [x], errors: 1}\n"
    )
    (case,) = run_test_file(path).cases
    assert not case.passed
    assert [line.split(":")[0] for line in case.diff] == ["effect", "rules", "errors"]


def test_an_alias_bomb_is_rejected_before_it_is_expanded() -> None:
    """Ten levels of ten aliases stand for 10^10 values in 400 bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*l{i - 1}"] * 10)
        lines.append(f"l{i}: &l{i} [{refs}]")
    text = "\n".join(lines) + "\n"
    doc, diags = parse_policy(text, "bomb.yaml")
    assert doc is None
    assert [(d.code, d.line) for d in diags] == [("policy_too_large", 1)]
