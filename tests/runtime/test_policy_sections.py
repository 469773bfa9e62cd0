"""The runtime sections of a policy (`tools:`, `agents:`, `budgets:`) and the ring table.

Load-time checking goes through ``parse_policy`` / ``load_policy_text``, as a user's
file does: every problem is a located diagnostic (docs/policy-language.md, "Runtime
sections"). Semantics of rings: docs/runtime.md, "Rings".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warden import Action, Decision, Effect, Governor, PolicyError, load_policy_text
from warden.policy import Diagnostic, parse_policy
from warden.policy.sections import AgentSpec, BudgetSpec, ToolSpec, parse_duration
from warden.runtime.rings import UNTRUSTED, RingTable

# Five lines, so the first line of a section is line 5 and its first entry line 6.
HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\nrules: []\n"


def diags(text: str) -> list[Diagnostic]:
    doc, found = parse_policy(HEAD + text, "p.yaml")
    assert doc is None, "expected the policy not to load"
    return found


def where(found: list[Diagnostic]) -> list[tuple[int, int, str]]:
    return [(d.line, d.col, d.code) for d in found]


def one(text: str) -> Diagnostic:
    found = diags(text)
    assert len(found) == 1, [d.render() for d in found]
    return found[0]


def budget_error(body: str) -> tuple[int, int, str]:
    """The one diagnostic of a single budget written as a flow mapping on line 6."""
    d = one(f"budgets:\n  - {{{body}}}\n")
    return d.line, d.col, d.code


# --- valid forms ------------------------------------------------------------------------


def test_all_three_sections_load_into_the_document_and_the_policy() -> None:
    text = HEAD + (
        "tools:\n"
        '  "shell.*": {ring: 1, exec: true}\n'
        '  "db.write*": {ring: 1}\n'
        '  "python.run": {exec: true}\n'
        '  "fs.read": {}\n'
        "agents:\n"
        '  "did:key:z6MkOps*": {ring: 0}\n'
        '  "support-bot": {ring: 2}\n'
        "budgets:\n"
        "  - id: session-calls\n"
        "    scope: session\n"
        "    calls: 100\n"
        "  - id: refund-rate\n"
        '    tool: "payments.refund"\n'
        "    scope: [agent, tool]\n"
        "    calls: 5\n"
        "    per: 1m\n"
        "  - id: agent-spend\n"
        "    description: what the agent may spend\n"
        "    scope: agent\n"
        '    tool: ["llm.*", "embed.*"]\n'
        "    tokens: 200000\n"
        "    cost: 25\n"
    )
    doc, found = parse_policy(text, "p.yaml")
    assert found == []
    assert doc is not None
    assert doc.tools == (
        ToolSpec("shell.*", 1, True, 6, 3),
        ToolSpec("db.write*", 1, False, 7, 3),
        ToolSpec("python.run", 3, True, 8, 3),
        ToolSpec("fs.read", 3, False, 9, 3),
    )
    assert doc.agents == (
        AgentSpec("did:key:z6MkOps*", 0, 11, 3),
        AgentSpec("support-bot", 2, 12, 3),
    )
    assert doc.budgets == (
        BudgetSpec("session-calls", ("session",), None, 100, None, None, None, 14, 5),
        BudgetSpec(
            "refund-rate", ("agent", "tool"), ("payments.refund",), 5, 60.0, None, None, 17, 5
        ),
        BudgetSpec(
            "agent-spend", ("agent",), ("llm.*", "embed.*"), None, None, 200000, 25.0, 22, 5
        ),
    )
    assert type(doc.budgets[2].cost) is float
    policy = load_policy_text(text)
    assert (policy.tools, policy.agents, policy.budgets) == (doc.tools, doc.agents, doc.budgets)


def test_sections_are_optional_and_may_be_empty() -> None:
    for body in ("", "tools:\nagents:\nbudgets:\n", "tools: {}\nagents: {}\nbudgets: []\n"):
        policy = load_policy_text(HEAD + body)
        assert (policy.tools, policy.agents, policy.budgets) == ((), (), ())


def test_a_budget_defaults_to_global_scope_and_all_tools() -> None:
    (spec,) = load_policy_text(HEAD + "budgets:\n  - {id: b, calls: 3}\n").budgets
    assert spec.scope == ("global",)
    assert spec.tools is None
    assert (spec.calls, spec.per, spec.tokens, spec.cost) == (3, None, None, None)


@pytest.mark.parametrize(
    ("body", "limits"),
    [
        ("calls: 1", (1, None, None, None)),
        ("tokens: 7", (None, None, 7, None)),
        ("cost: 0.5", (None, None, None, 0.5)),
        ("calls: 2, per: 500ms", (2, 0.5, None, None)),
        ("calls: 2, per: 1.5m, tokens: 9, cost: 3", (2, 90.0, 9, 3.0)),
    ],
)
def test_any_one_limit_is_enough(body: str, limits: tuple[object, ...]) -> None:
    (spec,) = load_policy_text(HEAD + f"budgets:\n  - {{id: b, {body}}}\n").budgets
    assert (spec.calls, spec.per, spec.tokens, spec.cost) == limits


@pytest.mark.parametrize(
    ("scope", "want"),
    [
        ("global", ("global",)),
        ("agent", ("agent",)),
        ("session", ("session",)),
        ("tool", ("tool",)),
        ("[global]", ("global",)),
        ("[session, agent]", ("session", "agent")),
        ("[agent, session, tool]", ("agent", "session", "tool")),
    ],
)
def test_scope_is_one_name_or_a_list(scope: str, want: tuple[str, ...]) -> None:
    (spec,) = load_policy_text(
        HEAD + f"budgets:\n  - {{id: b, calls: 1, scope: {scope}}}\n"
    ).budgets
    assert spec.scope == want


def test_budget_ids_follow_the_rule_id_syntax() -> None:
    ok = "a" + "x" * 127
    for bid in ("a", "0.b", "team/refunds:v2@eu_1-x", ok):
        (spec,) = load_policy_text(HEAD + f"budgets:\n  - {{id: '{bid}', calls: 1}}\n").budgets
        assert spec.id == bid
    assert budget_error(f"id: '{ok}x', calls: 1") == (6, 10, "policy_invalid_value")


# --- `tools` and `agents` errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("4", "policy_invalid_value"),
        ("-1", "policy_invalid_value"),
        *[(v, "policy_type_error") for v in ("true", "false", "'1'", "1.0", "null", "[1]")],
    ],
)
def test_tool_ring_must_be_an_integer_from_0_to_3(value: str, code: str) -> None:
    d = one(f"tools:\n  'shell.*': {{ring: {value}}}\n")
    assert (d.line, d.col, d.code) == (6, 21, code)
    assert d.message == "`ring` of `tools` entry `shell.*` must be an integer from 0 to 3"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("4", "policy_invalid_value"),
        ("-1", "policy_invalid_value"),
        *[(v, "policy_type_error") for v in ("true", "'0'", "0.0")],
    ],
)
def test_agent_ring_must_be_an_integer_from_0_to_3(value: str, code: str) -> None:
    d = one(f"agents:\n  bot: {{ring: {value}}}\n")
    assert (d.line, d.col, d.code) == (6, 15, code)
    assert "`ring` of `agents` entry `bot`" in d.message


@pytest.mark.parametrize("value", ["1", "0", "'true'", "null", "[true]"])
def test_exec_must_be_a_boolean(value: str) -> None:
    d = one(f"tools:\n  run: {{exec: {value}}}\n")
    assert (d.line, d.col, d.code) == (6, 15, "policy_type_error")
    assert d.message == "`exec` of `tools` entry `run` must be true or false"


def test_unknown_field_in_a_tools_entry_has_a_did_you_mean_hint() -> None:
    d = one("tools:\n  run: {ring: 1, exce: true}\n")
    assert (d.line, d.col, d.code) == (6, 18, "policy_unknown_field")
    assert d.message == "unknown field `exce` in `tools` entry `run`"
    assert d.hint == "did you mean `exec`?"


def test_unknown_field_in_an_agents_entry_has_a_hint() -> None:
    d = one("agents:\n  bot: {ring: 1, rign: 2}\n")
    assert (d.line, d.col, d.code) == (6, 18, "policy_unknown_field")
    assert d.hint == "did you mean `ring`?"
    d = one("agents:\n  bot: {ring: 1, exec: true}\n")
    assert (d.line, d.col, d.code) == (6, 18, "policy_unknown_field")
    assert d.hint == "known fields: ring"


def test_a_misspelt_ring_in_an_agents_entry_is_an_unknown_field() -> None:
    found = diags("agents:\n  bot: {rign: 2}\n")
    unknown = [d for d in found if d.code == "policy_unknown_field"]
    assert [(d.line, d.col, d.hint) for d in unknown] == [(6, 9, "did you mean `ring`?")]


def test_an_agents_entry_needs_a_ring() -> None:
    for body in ("bot: 2", "bot: [ring]", "bot:"):
        d = one(f"agents:\n  {body}\n")
        assert (d.line, d.code) == (6, "policy_type_error"), body
        assert d.message == "`agents` entry `bot` must be a mapping with `ring`"
    d = one("agents:\n  bot: {}\n")
    assert (d.line, d.code) == (6, "policy_missing_field")
    assert d.message == "`agents` entry `bot` is missing required field `ring`"


def test_a_tools_entry_must_be_a_mapping() -> None:
    d = one("tools:\n  run: 1\n")
    assert (d.line, d.col, d.code) == (6, 8, "policy_type_error")
    assert d.message == "`tools` entry `run` must be a mapping with `ring` or `exec`"


@pytest.mark.parametrize(
    ("body", "col"),
    [("tools: [a]", 8), ("tools: shell", 8), ("tools: 3", 8), ("agents: [a]", 9), ("agents: x", 9)],
)
def test_tools_and_agents_must_be_mappings(body: str, col: int) -> None:
    d = one(body + "\n")
    assert (d.line, d.col, d.code) == (5, col, "policy_type_error")
    assert d.message.endswith("to `{ring, exec}`" if body.startswith("tools") else "to `{ring}`")


@pytest.mark.parametrize("section", ["tools", "agents"])
@pytest.mark.parametrize("key", ["''", "'   '"])
def test_an_empty_pattern_is_invalid(section: str, key: str) -> None:
    d = one(f"{section}:\n  {key}: {{ring: 1}}\n")
    assert (d.line, d.col, d.code) == (6, 3, "policy_invalid_value")
    assert d.message == f"an empty pattern in `{section}`"


@pytest.mark.parametrize("section", ["tools", "agents"])
def test_an_invalid_glob_is_an_expr_regex_error(section: str) -> None:
    d = one(f"{section}:\n  ok: {{ring: 1}}\n  'a[z-a]': {{ring: 1}}\n")
    assert (d.line, d.col, d.code) == (7, 3, "expr_regex_error")
    assert d.message.startswith("invalid glob pattern `a[z-a]`")


def test_a_bad_tools_entry_does_not_hide_the_next_one() -> None:
    found = diags(
        "tools:\n"
        "  a: {ring: 9}\n"  # 6
        "  b: {exec: 1}\n"  # 7
        "  '': {ring: 1}\n"  # 8
        "  c: {rnig: 1}\n"  # 9
        "agents:\n"
        "  x: {ring: -1}\n"  # 11
        "  y: {}\n"  # 12
    )
    assert where(found) == [
        (6, 13, "policy_invalid_value"),
        (7, 13, "policy_type_error"),
        (8, 3, "policy_invalid_value"),
        (9, 7, "policy_unknown_field"),
        (11, 13, "policy_invalid_value"),
        (12, 6, "policy_missing_field"),
    ]


# --- `budgets` errors -------------------------------------------------------------------


def test_budgets_must_be_a_list_of_mappings() -> None:
    assert where(diags("budgets: {id: a, calls: 1}\n")) == [(5, 10, "policy_type_error")]
    assert where(diags("budgets: calls\n")) == [(5, 10, "policy_type_error")]
    found = diags("budgets:\n  - 3\n  - [a]\n  - {id: ok, calls: 1}\n")
    assert where(found) == [(6, 5, "policy_type_error"), (7, 5, "policy_type_error")]
    assert found[0].message == "each budget must be a mapping"


def test_a_budget_without_an_id() -> None:
    d = one("budgets:\n  - {id: a, calls: 1}\n  - {calls: 1}\n")
    assert (d.line, d.col, d.code) == (7, 5, "policy_missing_field")
    assert d.message == "budget #2 is missing required field `id`"


def test_duplicate_budget_ids() -> None:
    d = one("budgets:\n  - {id: a, calls: 1}\n  - {id: b, calls: 1}\n  - {id: a, calls: 2}\n")
    assert (d.line, d.col, d.code) == (8, 10, "policy_duplicate_id")
    assert d.message == "duplicate budget id `a` (first at line 6)"


def test_budget_ids_and_rule_ids_are_separate_namespaces() -> None:
    text = HEAD.replace("rules: []\n", "rules:\n  - {id: a, effect: allow}\n")
    policy = load_policy_text(text + "budgets:\n  - {id: a, calls: 1}\n")
    assert [b.id for b in policy.budgets] == ["a"]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("-a", "policy_invalid_value"),
        ("'a b'", "policy_invalid_value"),
        ("'_a'", "policy_invalid_value"),
        ("''", "policy_invalid_value"),
        ("3", "policy_type_error"),
        ("true", "policy_type_error"),
        ("[a]", "policy_type_error"),
    ],
)
def test_invalid_budget_ids(value: str, code: str) -> None:
    assert budget_error(f"id: {value}, calls: 1") == (6, 10, code)


def test_an_invalid_id_has_a_hint() -> None:
    d = one("budgets:\n  - {id: -a, calls: 1}\n")
    assert d.message == "budget id `-a` is not valid"
    assert d.hint is not None
    assert "letters, digits" in d.hint


def test_a_budget_without_a_limit() -> None:
    d = one("budgets:\n  - {id: a, scope: agent}\n")
    assert (d.line, d.col, d.code) == (6, 5, "policy_missing_field")
    assert d.message == "budget `a` sets no limit"
    assert d.hint == "give at least one of `calls`, `tokens` or `cost`"


def test_per_needs_calls() -> None:
    d = one("budgets:\n  - {id: a, tokens: 5, per: 1m}\n")
    assert (d.line, d.col, d.code) == (6, 29, "policy_invalid_value")
    assert d.message == "`per` of budget `a` needs `calls` (a rate)"
    # With no limit at all, both are said.
    assert where(diags("budgets:\n  - {id: a, per: 1m}\n")) == [
        (6, 5, "policy_missing_field"),
        (6, 18, "policy_invalid_value"),
    ]


@pytest.mark.parametrize(
    "value",
    ["1y", "0s", "0ms", "-5m", "5", "5.0", "true", "'5 m'", "1h30m", "5M", "''", "[1m]", "null"],
)
def test_bad_durations(value: str) -> None:
    d = one(f"budgets:\n  - {{id: a, calls: 1, per: {value}}}\n")
    not_text = value in ("5", "5.0", "true", "[1m]", "null")
    code = "policy_type_error" if not_text else "policy_invalid_value"
    assert (d.line, d.col, d.code) == (6, 28, code)
    assert d.message == ("`per` of budget `a` must be a duration such as `30s`, `5m`, `1h` or `1d`")


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("[global, agent]", "`scope` of budget `a`: `global` stands alone"),
        ("[agent, global]", "`scope` of budget `a`: `global` stands alone"),
        ("[agent, agent]", "`scope` of budget `a` repeats a value"),
        ("[tool, session, tool]", "`scope` of budget `a` repeats a value"),
        ("[]", "`scope` of budget `a` must not be empty"),
        ("user", "`scope` of budget `a` must be one of global, agent, session, tool, not `user`"),
    ],
)
def test_bad_scope_values(scope: str, message: str) -> None:
    d = one(f"budgets:\n  - {{id: a, calls: 1, scope: {scope}}}\n")
    assert (d.line, d.col, d.code) == (6, 30, "policy_invalid_value")
    assert d.message == message


def test_an_unknown_scope_in_a_list_points_at_the_item() -> None:
    d = one("budgets:\n  - {id: a, calls: 1, scope: [agent, users]}\n")
    assert (d.line, d.col, d.code) == (6, 38, "policy_invalid_value")
    assert d.message.endswith("not `users`")


@pytest.mark.parametrize("scope", ["3", "true", "null", "{agent: 1}"])
def test_a_scope_that_is_not_a_name_is_a_type_error(scope: str) -> None:
    assert budget_error(f"id: a, calls: 1, scope: {scope}") == (6, 30, "policy_type_error")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        *[(v, "policy_invalid_value") for v in ("0", "-1", "-0.5", ".nan", ".inf", "-.inf")],
        *[(v, "policy_type_error") for v in ("true", "'5'", "null", "[1]")],
    ],
)
def test_cost_must_be_a_positive_finite_number(value: str, code: str) -> None:
    d = one(f"budgets:\n  - {{id: a, cost: {value}}}\n")
    assert (d.line, d.col, d.code) == (6, 19, code)
    assert d.message == "`cost` of budget `a` must be a positive number"


@pytest.mark.parametrize("name", ["calls", "tokens"])
@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("0", "policy_invalid_value"),
        ("-3", "policy_invalid_value"),
        *[(v, "policy_type_error") for v in ("1.5", "2.0", "true", "false", "'5'", "null", ".inf")],
    ],
)
def test_calls_and_tokens_must_be_positive_integers(name: str, value: str, code: str) -> None:
    d = one(f"budgets:\n  - {{id: a, {name}: {value}}}\n")
    assert (d.line, d.code) == (6, code)
    assert d.col == 15 + len(name)
    assert d.message == f"`{name}` of budget `a` must be a positive integer"


def test_tool_is_a_glob_or_a_list_of_globs() -> None:
    found = diags(
        "budgets:\n"
        "  - {id: a, calls: 1, tool: []}\n"  # 6: empty list
        "  - {id: b, calls: 1, tool: ''}\n"  # 7: empty pattern
        "  - {id: c, calls: 1, tool: ['x.*', 3, 'y[z-a]']}\n"  # 8: not a string, bad glob
        "  - {id: d, calls: 1, tool: {x: 1}}\n"  # 9: a mapping
    )
    assert where(found) == [
        (6, 29, "policy_invalid_value"),
        (7, 29, "policy_invalid_value"),
        (8, 37, "policy_type_error"),
        (8, 40, "expr_regex_error"),
        (9, 29, "policy_type_error"),
    ]
    assert found[0].hint == "leave the field out to match any value"


def test_unknown_budget_field_has_a_did_you_mean_hint() -> None:
    d = one("budgets:\n  - {id: a, calls: 1, toool: x}\n")
    assert (d.line, d.col, d.code) == (6, 23, "policy_unknown_field")
    assert d.message == "unknown field `toool` in budget `a`"
    assert d.hint == "did you mean `tool`?"
    d = one("budgets:\n  - {id: a, calls: 1, limit: 3}\n")
    assert d.hint is not None
    assert d.hint.startswith("known fields: id, scope, tool, calls, per")


def test_an_unknown_field_of_a_budget_without_id_names_its_position() -> None:
    found = diags("budgets:\n  - {id: x, calls: 1}\n  - {idd: y, calls: 1}\n")
    assert where(found) == [(7, 5, "policy_missing_field"), (7, 6, "policy_unknown_field")]
    assert found[1].message == "unknown field `idd` in budget #2"
    assert found[1].hint == "did you mean `id`?"


def test_a_budget_description_must_be_a_string() -> None:
    assert budget_error("id: a, calls: 1, description: [1, 2]") == (6, 36, "policy_type_error")


def test_every_problem_in_a_file_is_reported_at_once_sorted_by_position() -> None:
    text = (
        "tools:\n"
        "  shell.*: {ring: 7, exec: maybe}\n"  # 6
        "agents:\n"
        "  '[z-a]': {ring: 1}\n"  # 8
        "budgets:\n"
        "  - id: a\n"  # 10
        "    calls: 0\n"  # 11
        "    per: 1y\n"  # 12
        "    scope: [global, agent]\n"  # 13
        "  - id: a\n"  # 14
        "    cost: .nan\n"  # 15
        "    tool: [x, '']\n"  # 16
        "  - {tokens: true, scop: agent}\n"  # 17
    )
    found = diags(text)
    assert where(found) == [
        (6, 19, "policy_invalid_value"),
        (6, 28, "policy_type_error"),
        (8, 3, "expr_regex_error"),
        (11, 12, "policy_invalid_value"),
        (12, 10, "policy_invalid_value"),
        (13, 12, "policy_invalid_value"),
        (14, 9, "policy_duplicate_id"),
        (15, 11, "policy_invalid_value"),
        (16, 15, "policy_invalid_value"),
        (17, 5, "policy_missing_field"),  # no id (`tokens` is set, if wrongly: no "no limit")
        (17, 14, "policy_type_error"),
        (17, 20, "policy_unknown_field"),
    ]
    with pytest.raises(PolicyError) as info:
        load_policy_text(HEAD + text, "p.yaml")
    assert info.value.diagnostics == tuple(found)
    assert str(info.value).startswith("p.yaml:6:19: policy_invalid_value: ")
    assert str(info.value).endswith(f"(and {len(found) - 1} more)")


def test_section_errors_and_rule_errors_are_reported_together() -> None:
    text = (
        "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"
        "rules:\n  - {id: r, effect: alow}\n"  # 5
        "budgets:\n  - {id: r, calls: -1}\n"  # 7
    )
    doc, found = parse_policy(text, "p.yaml")
    assert doc is None
    assert where(found) == [(5, 21, "policy_invalid_value"), (7, 20, "policy_invalid_value")]


# --- parse_duration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("30s", 30.0),
        ("0.5s", 0.5),
        ("5m", 300.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("  5m  ", 300.0),
        ("007s", 7.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "1y",
        "1w",
        "0s",
        "0ms",
        "0.0h",
        "-5m",
        "+5m",
        "5 m",
        "5M",
        "5S",
        ".5s",
        "5.s",
        "1e3s",
        "1h30m",
        "m",
        "5mm",
        "inf s",
        "nan",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


# --- the ring table ---------------------------------------------------------------------


def table(body: str) -> RingTable:
    return RingTable(load_policy_text(HEAD + body))


def test_no_policy_or_no_sections_means_ring_3_and_no_needs() -> None:
    for rings in (RingTable(None), table("")):
        assert rings.agent_ring("anyone") == UNTRUSTED == 3
        assert rings.tool_needs("shell.run") == (3, False)
        assert rings.has_tools is False


def test_a_literal_agent_beats_any_glob() -> None:
    rings = table("agents:\n  'bot-*': {ring: 2}\n  '*': {ring: 1}\n  'bot-7': {ring: 0}\n")
    assert rings.agent_ring("bot-7") == 0
    assert rings.agent_ring("bot-8") == 2
    assert rings.agent_ring("other") == 1


def test_a_longer_glob_beats_a_shorter_one_whatever_the_order() -> None:
    short_first = table("agents:\n  'did:*': {ring: 3}\n  'did:key:*': {ring: 1}\n")
    long_first = table("agents:\n  'did:key:*': {ring: 1}\n  'did:*': {ring: 3}\n")
    for rings in (short_first, long_first):
        assert rings.agent_ring("did:key:z6Mk") == 1
        assert rings.agent_ring("did:web:example") == 3
        assert rings.agent_ring("spiffe://x") == UNTRUSTED


def test_the_most_specific_pattern_wins_even_when_it_is_less_privileged() -> None:
    rings = table("agents:\n  'ops-*': {ring: 0}\n  'ops-intern-*': {ring: 3}\n")
    assert rings.agent_ring("ops-intern-1") == 3
    assert rings.agent_ring("ops-alice") == 0


def test_unknown_and_non_string_agent_ids_are_ring_3() -> None:
    rings = table("agents:\n  '*': {ring: 0}\n")
    assert rings.agent_ring("") == 0  # a string: `*` matches it
    for agent_id in (None, 7, 1.5, True, ["x"], {"id": "x"}, b"x"):
        assert rings.agent_ring(agent_id) == UNTRUSTED
    assert table("agents:\n  bot: {ring: 0}\n").agent_ring("bot2") == UNTRUSTED


def test_agent_globs_match_the_whole_id_case_sensitively() -> None:
    rings = table("agents:\n  'bot': {ring: 1}\n  'svc-?': {ring: 2}\n")
    assert rings.agent_ring("bot") == 1
    assert rings.agent_ring("a-bot") == 3
    assert rings.agent_ring("bot-x") == 3
    assert rings.agent_ring("BOT") == 3
    assert rings.agent_ring("svc-1") == 2
    assert rings.agent_ring("svc-12") == 3


def test_tool_needs_the_strictest_ring_and_exec_if_any_match_says_so() -> None:
    rings = table(
        "tools:\n"
        "  '*': {ring: 2}\n"
        "  'shell.*': {ring: 3, exec: true}\n"
        "  'shell.root*': {ring: 0}\n"
        "  'db.*': {ring: 1}\n"
        "  'fs.read': {}\n"
    )
    assert rings.has_tools is True
    assert rings.tool_needs("shell.run") == (2, True)  # `*` is stricter than `shell.*`
    assert rings.tool_needs("shell.root_login") == (0, True)
    assert rings.tool_needs("db.write") == (1, False)
    assert rings.tool_needs("fs.read") == (2, False)
    assert rings.tool_needs("anything") == (2, False)


def test_a_tool_no_glob_matches_needs_ring_3_and_is_not_exec() -> None:
    rings = table("tools:\n  'shell.*': {ring: 1, exec: true}\n")
    assert rings.tool_needs("shell") == (3, False)
    assert rings.tool_needs("python.shell.run") == (3, False)
    assert rings.tool_needs("shell.") == (1, True)


def test_cached_lookups_do_not_leak_between_names() -> None:
    rings = table(
        "tools:\n  'a.*': {ring: 0, exec: true}\n  'b.*': {ring: 2}\n"
        "agents:\n  'x*': {ring: 0}\n  'y': {ring: 1}\n"
    )
    for _ in range(3):  # the second and third rounds are served from the caches
        assert rings.tool_needs("a.run") == (0, True)
        assert rings.tool_needs("b.run") == (2, False)
        assert rings.tool_needs("c.run") == (3, False)
        assert rings.agent_ring("x1") == 0
        assert rings.agent_ring("y") == 1
        assert rings.agent_ring("z") == 3
        assert rings.agent_ring(None) == 3


def test_cache_eviction_keeps_answers_right() -> None:
    rings = table("tools:\n  'a*': {ring: 1}\nagents:\n  'a*': {ring: 2}\n")
    for i in range(9000):  # more than the cache holds: it is cleared on the way
        name = f"{'a' if i % 2 else 'b'}{i}"
        assert rings.tool_needs(name) == ((1, False) if i % 2 else (3, False))
        assert rings.agent_ring(name) == (2 if i % 2 else 3)


# --- the Governor takes rings from `agents:` and needs from `tools:` --------------------

GOV_POLICY = load_policy_text(
    HEAD.replace("rules: []\n", "")
    + "rules:\n"
    + "  - {id: all, effect: allow}\n"
    + "  - {id: ring-zero-only, tool: 'admin.*', when: 'agent.ring != 0', effect: deny}\n"
    + "  - {id: pay, tool: pay, effect: allow, redact: [card]}\n"
    + "tools:\n  'db.write': {ring: 1}\n  'pay': {ring: 2}\n"
    + "agents:\n  'ops-*': {ring: 0}\n  'bot-*': {ring: 2}\n  'bot-db': {ring: 1}\n"
)


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[Governor]:
    g = Governor(GOV_POLICY, audit=False, home=tmp_path)
    yield g
    g.runtime.close()


def call(
    g: Governor, tool: str, agent: object, claimed: int | None = None, **args: object
) -> Decision:
    who: dict[str, object] = {"id": agent}
    if claimed is not None:
        who["ring"] = claimed
    return g.check(Action(tool=tool, agent=who, args=args))


def test_the_governor_uses_the_agents_section_not_the_claimed_ring(gov: Governor) -> None:
    assert call(gov, "admin.reset", "ops-1").allowed
    d = call(gov, "admin.reset", "bot-1", claimed=0)
    assert d.effect is Effect.DENY
    assert d.rules == ("ring-zero-only",)


def test_a_tool_needing_a_lower_ring_is_refused_before_the_rules(gov: Governor) -> None:
    assert call(gov, "db.write", "bot-db").allowed  # the literal beats `bot-*`
    assert call(gov, "db.write", "ops-1").allowed
    d = call(gov, "db.write", "bot-2", claimed=0)
    assert d.effect is Effect.DENY
    assert d.rules == ()
    assert d.reasons == ("ring: `db.write` needs ring 1; agent bot-2 is ring 2",)
    d = call(gov, "db.write", None)
    assert d.reasons == ("ring: `db.write` needs ring 1; agent (none) is ring 3",)


def test_a_ring_refusal_keeps_the_redact_obligation(gov: Governor) -> None:
    assert call(gov, "pay", "bot-1", card="4111").obligations == ("redact:args.card",)
    d = call(gov, "pay", "stranger", card="4111")
    assert d.effect is Effect.DENY
    assert d.obligations == ("redact:args.card",)
