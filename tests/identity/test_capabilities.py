"""Capabilities, argument constraints and the subset test (docs/identity.md,
"Capabilities and argument constraints" and "Delegation", rule 5)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden._re import compile_glob
from warden.errors import CredentialError
from warden.identity.capabilities import (
    Capability,
    Constraint,
    capabilities_within,
    glob_within,
    parse_capabilities,
)

NAN = float("nan")


def cap(tool: str, **args: dict[str, Any]) -> Capability:
    (c,) = parse_capabilities([{"tool": tool, "args": args}])
    return c


def con(**keys: Any) -> Constraint:
    return cap("t", x=keys).args[0][1]


# --- covers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "name", "ok"),
    [
        ("fs.*", "fs.read", True),
        ("fs.*", "fs.read.deep/path", True),
        ("fs.*", "fs.", True),
        ("fs.*", "fs", False),
        ("fs.*", "fsx", False),
        ("fs.*", "FS.read", False),
        ("fs.*", "xfs.read", False),
        ("fs.read", "fs.read", True),
        ("fs.read", "fs.reads", False),
        ("fs.?ead", "fs.read", True),
        ("fs.?ead", "fs.rread", False),
        ("fs.[rw]*", "fs.write", True),
        ("fs.[!rw]*", "fs.write", False),
        ("*", "", True),
        ("*", "anything/at all", True),
    ],
)
def test_tool_glob(tool: str, name: str, ok: bool) -> None:
    assert cap(tool).covers(name, {}) is ok


@pytest.mark.parametrize(
    ("constraint", "value", "ok"),
    [
        # eq: JSON equality; 1 and true differ, 1 and 1.0 do not
        ({"eq": 1}, 1, True),
        ({"eq": 1}, 1.0, True),
        ({"eq": 1}, True, False),
        ({"eq": 1}, "1", False),
        ({"eq": 0}, False, False),
        ({"eq": True}, True, True),
        ({"eq": True}, 1, False),
        ({"eq": False}, 0, False),
        ({"eq": None}, None, True),
        ({"eq": None}, 0, False),
        ({"eq": "a"}, "a", True),
        ({"eq": "a"}, "A", False),
        ({"eq": [1, {"a": True}]}, [1.0, {"a": True}], True),
        ({"eq": [1, {"a": True}]}, [1, {"a": 1}], False),
        ({"eq": [1, 2]}, [1, 2, 3], False),
        ({"eq": {"a": 1}}, {"a": 1, "b": 2}, False),
        ({"eq": {"a": 1}}, {"a": 1.0}, True),
        ({"eq": [True]}, [1], False),
        # in
        ({"in": [1, "a"]}, 1.0, True),
        ({"in": [1, "a"]}, True, False),
        ({"in": [1, "a"]}, "a", True),
        ({"in": [1, "a"]}, "b", False),
        ({"in": [True]}, 1, False),
        ({"in": [None]}, None, True),
        # max / min: numbers only, not bools, not NaN
        ({"max": 10}, 10, True),
        ({"max": 10}, 10.0, True),
        ({"max": 10}, 9.5, True),
        ({"max": 10}, -5, True),
        ({"max": 10}, 11, False),
        ({"max": 10}, 10.000001, False),
        ({"max": 10}, 10**30, False),
        ({"max": 10}, True, False),
        ({"max": 10}, False, False),
        ({"max": 10}, NAN, False),
        ({"max": 10}, "5", False),
        ({"max": 10}, None, False),
        ({"max": 10}, [5], False),
        ({"min": 0}, 0, True),
        ({"min": 0}, -0.0, True),
        ({"min": 0}, 5, True),
        ({"min": 0}, -1, False),
        ({"min": 0}, True, False),
        ({"min": 0}, NAN, False),
        ({"min": 0, "max": 10}, 5, True),
        ({"min": 0, "max": 10}, 11, False),
        ({"min": 0, "max": 10}, -1, False),
        ({"min": 0.5}, 0.5, True),
        # glob: strings only
        ({"glob": "/tmp/*"}, "/tmp/", True),
        ({"glob": "/tmp/*"}, "/tmp/a/b", True),
        ({"glob": "/tmp/*"}, "/tmpx", False),
        ({"glob": "/tmp/*"}, "/etc/passwd", False),
        ({"glob": "/tmp/*"}, b"/tmp/a", False),
        ({"glob": "/tmp/*"}, ["/tmp/a"], False),
        ({"glob": "*"}, 5, False),
        ({"glob": "*"}, None, False),
        # all keys must hold
        ({"eq": 5, "max": 4}, 5, False),
        ({"in": [1, 50], "max": 10}, 50, False),
        ({"in": [1, 50], "max": 10}, 1, True),
        ({"glob": "a*", "in": ["ab", "b"]}, "ab", True),
        ({"glob": "a*", "in": ["ab", "b"]}, "b", False),
    ],
    ids=repr,
)
def test_constraint_holds(constraint: dict[str, Any], value: Any, ok: bool) -> None:
    c = cap("t", x=constraint)
    assert c.covers("t", {"x": value}) is ok
    assert con(**constraint).holds(value) is ok


@pytest.mark.parametrize(
    "constraint",
    [{"eq": None}, {"in": [None]}, {"max": 10}, {"min": 0}, {"glob": "*"}, {"eq": 1}],
    ids=repr,
)
def test_missing_argument_does_not_satisfy(constraint: dict[str, Any]) -> None:
    c = cap("t", x=constraint)
    assert not c.covers("t", {})
    assert not c.covers("t", {"y": 1, "X": None})


def test_every_constrained_argument_must_hold() -> None:
    c = cap("pay", amount={"max": 100}, to={"in": ["bob"]})
    assert c.covers("pay", {"amount": 1, "to": "bob"})
    assert c.covers("pay", {"amount": 1, "to": "bob", "unconstrained": "anything"})
    assert not c.covers("pay", {"amount": 1, "to": "eve"})
    assert not c.covers("pay", {"amount": 101, "to": "bob"})
    assert not c.covers("pay", {"amount": 1})
    assert not c.covers("other", {"amount": 1, "to": "bob"})


@pytest.mark.parametrize(
    ("tool", "args"),
    [("fs.read", {"path": "/tmp/\ud800"}), ("fs.\udfff", {"path": "/tmp/a"})],
    ids=["surrogate argument", "surrogate tool"],
)
def test_covers_answers_for_any_string(tool: str, args: dict[str, Any]) -> None:
    # An answer (either one), not an exception: with an exception, no other capability of
    # the credential gets its say ("a call is covered when any capability covers it").
    assert cap("fs.*", path={"glob": "/tmp/*"}).covers(tool, args) in (True, False)
    assert cap("*").covers(tool, args) in (True, False)


# --- parsing -----------------------------------------------------------------------------------


def test_parse_and_to_json_round_trip() -> None:
    data = [
        "fs.read",
        {"tool": "pay", "args": {"amount": {"min": 0, "max": 100.5}, "to": {"in": ["a", 1]}}},
        {"tool": "x", "args": {"v": {"eq": None}, "p": {"glob": "/tmp/*"}}},
    ]
    caps = parse_capabilities(data)
    assert caps[0] == Capability("fs.read")
    assert [c.to_json() for c in caps][1:] == data[1:]
    assert parse_capabilities([c.to_json() for c in caps]) == caps
    assert caps[2].args[1][1].has_eq  # eq: null is a constraint, not "no constraint"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "non-empty list"),
        ({}, "non-empty list"),
        ("fs.*", "non-empty list"),
        (None, "non-empty list"),
        ([{"tool": "x"}] * 65, "more than 64"),
        ([5], "capabilities[0]"),
        ([["fs.*"]], "capabilities[0]"),
        ([{"args": {}}], "tool"),
        ([{"tool": ""}], "tool"),
        ([{"tool": 5}], "tool"),
        ([{"tool": "x" * 257}], "tool"),
        ([{"tool": "[z-a]"}], "invalid glob"),
        ([{"tool": "x", "scope": "all"}], "unknown field"),
        ([{"tool": "x", "args": []}], "args"),
        ([{"tool": "x", "args": {"a": 5}}], "args.a"),
        ([{"tool": "x", "args": {"a": {}}}], "args.a"),
        ([{"tool": "x", "args": {"a": {"ne": 1}}}], "unknown constraint"),
        ([{"tool": "x", "args": {"a": {"in": []}}}], "args.a.in"),
        ([{"tool": "x", "args": {"a": {"in": "ab"}}}], "args.a.in"),
        ([{"tool": "x", "args": {"a": {"in": list(range(257))}}}], "args.a.in"),
        ([{"tool": "x", "args": {"a": {"max": "5"}}}], "args.a.max"),
        ([{"tool": "x", "args": {"a": {"max": True}}}], "args.a.max"),
        ([{"tool": "x", "args": {"a": {"min": NAN}}}], "args.a.min"),
        ([{"tool": "x", "args": {"a": {"min": math.inf}}}], "args.a.min"),
        ([{"tool": "x", "args": {"a": {"max": None}}}], "args.a.max"),
        ([{"tool": "x", "args": {"a": {"glob": 5}}}], "args.a.glob"),
        ([{"tool": "x", "args": {"a": {"glob": "[b-a]"}}}], "invalid glob"),
        ([{"tool": "ok"}, {"tool": "[z-a]"}], "capabilities[1]"),
    ],
    ids=repr,
)
def test_parse_refuses_malformed_capabilities(data: Any, says: str) -> None:
    with pytest.raises(CredentialError) as info:
        parse_capabilities(data)
    assert says in str(info.value)


def test_parse_accepts_the_limits() -> None:
    assert len(parse_capabilities([{"tool": "x"}] * 64)) == 64
    assert parse_capabilities([{"tool": "x" * 256}])
    assert parse_capabilities([{"tool": "x", "args": {"a": {"in": list(range(256))}}}])


@pytest.mark.parametrize(
    "data",
    [[{"tool": "fs.\ud800"}], [{"tool": "x", "args": {"p": {"glob": "/tmp/\udfff*"}}}]],
    ids=["tool", "argument glob"],
)
def test_parse_refuses_a_glob_with_a_lone_surrogate(data: Any) -> None:
    with pytest.raises(CredentialError):
        parse_capabilities(data)


# --- glob_within ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("fs.read", "fs.read"),  # equal
        ("fs.*", "fs.*"),
        ("a?[bc]*", "a?[bc]*"),
        ("anything", "*"),  # parent is *
        ("a*b?[c]", "*"),
        ("x", "**"),
        ("fs.read", "fs.*"),  # literal child matched by the parent
        ("fs.read", "fs.?ead"),
        ("fs.read", "[f]s.read"),
        ("fs.read", "*.read"),
        ("fs.read\n", "fs.*"),
        ("fs.r*", "fs.*"),  # parent PREFIX*, child starts with PREFIX
        ("fs.[ab]*", "fs.*"),
        ("fs.?", "fs.*"),
        ("fs.", "fs.*"),
        ("/tmp/a/*", "/tmp/*"),
    ],
)
def test_glob_within_true(child: str, parent: str) -> None:
    assert glob_within(child, parent)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("fs.*", "fs.read"),
        ("*", "fs.*"),
        ("fs.*", "fs.r*"),
        ("fs.read", "fs.write"),
        ("FS.read", "fs.*"),
        ("fs.*", "*.read"),
        ("/*", "/tmp/*"),
        ("/tmp/*", "/tmp/a*"),
        ("?", "a"),
        ("[ab]", "a"),
        ("fs.??", "fs.?*"),  # true subset, but not provable by the conservative rules
        ("ab*", "a**"),  # likewise
        ("fs.read.*", "fs.*.*"),  # likewise
    ],
)
def test_glob_within_false(child: str, parent: str) -> None:
    assert not glob_within(child, parent)


# --- Constraint.implies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "parent", "ok"),
    [
        # child eq: the one value must satisfy the parent
        ({"eq": 5}, {"max": 10}, True),
        ({"eq": 5}, {"max": 4}, False),
        ({"eq": 5}, {"in": [5, 6]}, True),
        ({"eq": 5}, {"eq": 5.0}, True),
        ({"eq": 1}, {"eq": True}, False),
        ({"eq": "/tmp/x"}, {"glob": "/tmp/*"}, True),
        ({"eq": "/etc/x"}, {"glob": "/tmp/*"}, False),
        ({"eq": 5, "max": 3}, {"max": 10}, False),  # admits nothing; refused conservatively
        # child in: every value must satisfy the parent
        ({"in": [1, 2]}, {"max": 2}, True),
        ({"in": [1, 2]}, {"max": 1}, False),
        ({"in": ["a"]}, {"in": ["a", "b"]}, True),
        ({"in": ["a", "c"]}, {"in": ["a", "b"]}, False),
        ({"in": [True]}, {"eq": 1}, False),
        # child max/min: no looser than the parent's
        ({"max": 5}, {"max": 5}, True),
        ({"max": 5}, {"max": 10}, True),
        ({"max": 5}, {"max": 4}, False),
        ({"max": 5.5}, {"max": 5}, False),
        ({"min": 5}, {"min": 5}, True),
        ({"min": 6}, {"min": 5}, True),
        ({"min": 4}, {"min": 5}, False),
        ({"min": 0, "max": 5}, {"min": 0, "max": 10}, True),
        ({"max": 5}, {"min": 0, "max": 10}, False),
        ({"min": 0}, {"min": 0, "max": 10}, False),
        ({"min": 0, "max": 5}, {"max": 10}, True),
        # a range does not imply eq/in
        ({"max": 5, "min": 5}, {"eq": 5}, False),
        ({"max": 1, "min": 1}, {"in": [1]}, False),
        # globs
        ({"glob": "/tmp/a*"}, {"glob": "/tmp/*"}, True),
        ({"glob": "/tmp/*"}, {"glob": "/tmp/a*"}, False),
        ({"glob": "/*"}, {"glob": "/tmp/*"}, False),
        ({"max": 5}, {"glob": "*"}, False),
        ({"glob": "/tmp/*", "max": 5}, {"glob": "/tmp/*"}, True),
        ({"glob": "*"}, {"max": 5}, False),
    ],
    ids=repr,
)
def test_constraint_implies(child: dict[str, Any], parent: dict[str, Any], ok: bool) -> None:
    assert con(**child).implies(con(**parent)) is ok


def test_unconstrained_parent_is_implied_by_anything() -> None:
    anything = Constraint()
    for child in ({"eq": 1}, {"in": [1]}, {"max": 1}, {"glob": "x"}):
        assert con(**child).implies(anything)


# --- Capability.within and capabilities_within ---------------------------------------------------


def test_capability_within() -> None:
    parent = cap("pay.*", amount={"max": 100})
    assert cap("pay.send", amount={"max": 50}).within(parent)
    assert cap("pay.send", amount={"max": 50}, to={"eq": "bob"}).within(parent)
    assert not cap("pay.send").within(parent)  # omits the parent's constraint
    assert not cap("pay.send", amount={"max": 150}).within(parent)
    assert not cap("*", amount={"max": 50}).within(parent)
    assert not cap("pay.send", other={"max": 50}).within(parent)
    assert cap("pay.send").within(cap("*"))
    assert not cap("*").within(cap("pay.send"))


def test_capabilities_within() -> None:
    parent = tuple(parse_capabilities(["fs.*", {"tool": "pay", "args": {"n": {"max": 5}}}]))
    ok = tuple(parse_capabilities(["fs.read", {"tool": "pay", "args": {"n": {"eq": 5}}}]))
    assert capabilities_within(ok, parent) is None
    assert capabilities_within((), parent) is None
    bad = tuple(parse_capabilities(["fs.read", "net.get"]))
    why = capabilities_within(bad, parent)
    assert why is not None
    assert "net.get" in why
    assert "fs.read" not in why
    # Each child capability may be within a different parent capability.
    both = tuple(parse_capabilities(["fs.read", {"tool": "pay", "args": {"n": {"max": 1}}}]))
    assert capabilities_within(both, parent) is None
    assert capabilities_within(parent, ()) is not None


# --- soundness of the conservative subset test ---------------------------------------------------

PIECES = ["a", "b", "/", "*", "?", "[ab]", "[!a]"]
STRINGS = ["".join(p) for n in range(4) for p in itertools.product("ab/", repeat=n)]
VALUES: list[Any] = [
    0,
    1,
    2,
    1.0,
    1.5,
    -1,
    True,
    False,
    None,
    NAN,
    [1],
    {"k": 1},
    *STRINGS[:13],
]
JSON_VALUES = st.sampled_from([v for v in VALUES if not (isinstance(v, float) and math.isnan(v))])
BOUNDS = st.sampled_from([-1, 0, 1, 1.5, 2])

globs = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)
constraints = st.fixed_dictionaries(
    {},
    optional={
        "eq": JSON_VALUES,
        "in": st.lists(JSON_VALUES, min_size=1, max_size=3),
        "max": BOUNDS,
        "min": BOUNDS,
        "glob": globs,
    },
).filter(bool)
capabilities = st.builds(
    lambda tool, args: parse_capabilities([{"tool": tool or "*", "args": args}])[0],
    globs,
    st.dictionaries(st.sampled_from(["x", "y"]), constraints, max_size=2),
)


def _narrowed_json(parent: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {**parent, **extra}


# Pairs (child, parent): independent half the time, else the child is the parent with some
# keys added or replaced (often within it, sometimes not), so that both answers occur often.
constraint_pairs = st.one_of(
    st.tuples(constraints, constraints),
    st.tuples(constraints, st.dictionaries(st.just("x"), constraints, max_size=1)).map(
        lambda pe: (_narrowed_json(pe[0], pe[1].get("x", {})), pe[0])
    ),
)


@st.composite
def capability_pairs(draw: st.DrawFn) -> tuple[Capability, Capability]:
    parent = draw(capabilities)
    if draw(st.booleans()):
        return draw(capabilities), parent
    tool = draw(
        st.sampled_from(
            [parent.tool, parent.tool + "a", parent.tool + "*", draw(st.sampled_from(STRINGS))]
        )
    )
    args = {name: c.to_json() for name, c in parent.args}
    for name in draw(st.lists(st.sampled_from(["x", "y"]), max_size=2)):
        args[name] = {**args.get(name, {}), **draw(constraints)}
    child = parse_capabilities([{"tool": tool or "*", "args": args}])[0]
    return child, parent


call_args = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.sampled_from(VALUES), max_size=3)


@settings(max_examples=400, deadline=None)
@given(globs, globs)
def test_glob_within_is_sound(child: str, parent: str) -> None:
    if not glob_within(child, parent):
        return
    for s in STRINGS:
        if compile_glob(child).match(s) is not None:
            assert compile_glob(parent).match(s) is not None, (child, parent, s)


@settings(max_examples=400, deadline=None)
@given(constraint_pairs)
def test_constraint_implies_is_sound(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    child, parent = pair
    c, p = con(**child), con(**parent)
    if not c.implies(p):
        return
    for v in VALUES:
        if c.holds(v):
            assert p.holds(v), (child, parent, v)


@settings(max_examples=400, deadline=None)
@given(capability_pairs(), st.data())
def test_within_is_sound(pair: tuple[Capability, Capability], data: st.DataObject) -> None:
    """Whenever child.within(parent), every call the child covers the parent covers too."""
    child, parent = pair
    if not child.within(parent):
        return
    for _ in range(25):
        tool = data.draw(st.sampled_from(STRINGS))
        args = data.draw(call_args)
        if child.covers(tool, args):
            assert parent.covers(tool, args), (child, parent, tool, args)


simple_constraints = st.one_of(
    JSON_VALUES.map(lambda v: {"eq": v}),
    st.lists(JSON_VALUES, min_size=1, max_size=3).map(lambda vs: {"in": vs}),
    st.fixed_dictionaries({}, optional={"max": BOUNDS, "min": BOUNDS, "glob": globs}).filter(bool),
)
simple_capabilities = st.builds(
    lambda tool, args: parse_capabilities([{"tool": tool or "*", "args": args}])[0],
    globs,
    st.dictionaries(st.sampled_from(["x", "y"]), simple_constraints, max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(simple_capabilities, st.data())
def test_narrowing_a_capability_stays_within(parent: Capability, data: st.DataObject) -> None:
    """Delegation must accept the obvious narrowings: the same capability, with extras.

    (Only for constraints where eq/in stand alone: {"in": [1, "a"], "max": 5} is refused
    even against itself, as the spec's rule says: "a" does not satisfy max 5.)
    """
    assert parent.within(parent)
    extra_name = data.draw(st.sampled_from(["x", "y", "z"]))
    narrowed_args = dict(parent.args)
    if extra_name not in narrowed_args:
        narrowed_args[extra_name] = con(eq=1)
    narrower = Capability(parent.tool, tuple(sorted(narrowed_args.items())))
    assert narrower.within(parent)


def test_within_is_sound_exhaustively_on_a_small_grid() -> None:
    tools = ["*", "a*", "ab*", "a", "ab", "a?", "?b", "[ab]*", "b"]
    options: list[dict[str, Any] | None] = [
        None,
        {"eq": 1},
        {"eq": True},
        {"eq": "ab"},
        {"in": [1, 2]},
        {"in": ["a", "ab"]},
        {"max": 1},
        {"max": 2},
        {"min": 1},
        {"min": 0, "max": 2},
        {"glob": "a*"},
        {"glob": "*"},
        {"glob": "ab"},
    ]
    caps = [cap(t, **({"x": o} if o else {})) for t in tools for o in options]
    names = ["", "a", "b", "ab", "ba", "abb", "a/b"]
    arg_sets = [{}] + [{"x": v} for v in VALUES]
    within_pairs = 0
    for child in caps:
        for parent in caps:
            if not child.within(parent):
                continue
            within_pairs += 1
            for name in names:
                for args in arg_sets:
                    if child.covers(name, args):
                        assert parent.covers(name, args), (child, parent, name, args)
    assert within_pairs > len(caps)  # the grid exercises more than the reflexive pairs
