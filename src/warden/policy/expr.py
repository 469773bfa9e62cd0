"""The condition language: a safe subset of Python expression syntax, compiled to closures.

The source is parsed once with :mod:`ast`, checked against a whitelist of node
types, names and functions, and turned into a tree of Python closures over an
:class:`~warden.action.Action`. Evaluating a condition never calls into user
objects: names resolve to the action's fields, dotted access is a key lookup
in a mapping, and only the documented function library can be called. The
semantics are written down in docs/policy-language.md; the short form:

* values are JSON-like: null, booleans, numbers, strings, lists, maps;
* ``and``/``or``/``not`` take booleans only; a condition must produce a boolean;
* ``==`` is strict (``1 == true`` is false, ``1 == 1.0`` is true);
* ordering compares two numbers or two strings, anything else is an error;
* a missing key, a type mismatch or a division by zero is an evaluation error
  (raised as :class:`EvalError`), which the evaluator turns into fail-closed
  behaviour.

Complexity: evaluation is linear in the size of the expression and of the
values it touches; regular expressions run on RE2 (linear time).
"""

from __future__ import annotations

import ast
import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from warden._re import PatternError, compile_glob, compile_regex

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SOURCE",
    "NAMES",
    "CompiledExpr",
    "EvalError",
    "ExprCompileError",
    "ExprIssue",
    "compile_expr",
]

MAX_SOURCE: Final = 4096
MAX_NODES: Final = 512
MAX_DEPTH: Final = 32

Fn = Callable[[Any], Any]

# Static types, as far as the compiler can tell. "any" means "only known at run time".
BOOL, NUM, STR, LIST, MAP, NONE, ANY = "bool", "number", "string", "list", "map", "null", "any"


class EvalError(Exception):
    """A condition could not be evaluated; the message says what and where."""


@dataclass(frozen=True, slots=True)
class ExprIssue:
    """A compile-time problem at ``line``/``col`` (1-based, relative to the source)."""

    line: int
    col: int
    code: str
    message: str
    hint: str | None = None


class ExprCompileError(Exception):
    """The expression did not compile; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ExprIssue]) -> None:
        self.issues = issues
        super().__init__(issues[0].message if issues else "expression did not compile")


@dataclass(frozen=True, slots=True)
class CompiledExpr:
    """A compiled condition: call ``fn(action)``; it returns a value or raises EvalError."""

    source: str
    fn: Fn
    static_type: str
    names: frozenset[str]
    constant: bool


def _tname(v: Any) -> str:
    if v is None:
        return NONE
    t = type(v)
    if t is bool:
        return BOOL
    if t is int or t is float:
        return NUM
    if t is str:
        return STR
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, (int, float)):
        return NUM
    if isinstance(v, str):
        return STR
    if isinstance(v, Mapping):
        return MAP
    if isinstance(v, (list, tuple)):
        return LIST
    return type(v).__name__


def _is_num(v: Any) -> bool:
    t = type(v)
    return t is int or t is float or (isinstance(v, (int, float)) and not isinstance(v, bool))


def strict_eq(x: Any, y: Any) -> bool:
    """Equality without Python's cross-type coercions (``True != 1``, ``[1] != [True]``)."""
    tx, ty = _tname(x), _tname(y)
    if tx != ty:
        return False
    if tx == LIST:
        return len(x) == len(y) and all(strict_eq(a, b) for a, b in zip(x, y, strict=True))
    if tx == MAP:
        return x.keys() == y.keys() and all(strict_eq(x[k], y[k]) for k in x)
    return bool(x == y)


# --- name roots -------------------------------------------------------------------------

NAMES: Final[Mapping[str, Fn]] = {
    "tool": lambda a: a.tool,
    "kind": lambda a: a.kind,
    "session": lambda a: a.session,
    "args": lambda a: a.args,
    "agent": lambda a: a.agent,
    "context": lambda a: a.context,
}
_NAME_TYPES: Final = {
    "tool": STR,
    "kind": STR,
    "session": ANY,
    "args": MAP,
    "agent": MAP,
    "context": MAP,
}
_CONSTANT_NAMES: Final[Mapping[str, Any]] = {
    "True": True,
    "False": False,
    "None": None,
    "true": True,
    "false": False,
    "null": None,
}


# --- function library -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Func:
    arity: tuple[int, int]
    arg_types: tuple[tuple[str, ...], ...]
    result: str
    doc: str


FUNCTIONS: Final[Mapping[str, _Func]] = {
    "glob": _Func(
        (2, 2), ((STR,), (STR,)), BOOL, "glob(s, pattern): shell-style match of all of s"
    ),
    "regex": _Func((2, 2), ((STR,), (STR,)), BOOL, "regex(s, pattern): RE2 search anywhere in s"),
    "startswith": _Func((2, 2), ((STR,), (STR,)), BOOL, "startswith(s, prefix)"),
    "endswith": _Func((2, 2), ((STR,), (STR,)), BOOL, "endswith(s, suffix)"),
    "lower": _Func((1, 1), ((STR,),), STR, "lower(s)"),
    "upper": _Func((1, 1), ((STR,),), STR, "upper(s)"),
    "len": _Func((1, 1), ((STR, LIST, MAP),), NUM, "len(x): length of a string, list or map"),
    "has": _Func((2, 2), ((MAP,), (STR,)), BOOL, "has(map, key): the key is present"),
    "get": _Func((3, 3), ((MAP,), (STR,), (ANY,)), ANY, "get(map, key, default)"),
    "provenance": _Func(
        (1, 1), ((ANY,),), LIST, "provenance(args.x): the labels of an argument (docs/flows.md)"
    ),
    "user_said": _Func(
        (1, 1), ((ANY,),), BOOL, "user_said(args.x): every value under it was typed by the user"
    ),
    "session_labels": _Func((0, 0), (), LIST, "session_labels(): what the session has touched"),
}


@functools.lru_cache(maxsize=256)
def _dynamic_glob(pattern: str) -> Any:
    return compile_glob(pattern)


# --- the compiler -----------------------------------------------------------------------

_CMP_SYMBOL: Final = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_ARITH_SYMBOL: Final = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
}
_FORBIDDEN_HINTS: Final = {
    ast.Lambda: "lambdas are not part of the language",
    ast.ListComp: "comprehensions are not part of the language",
    ast.SetComp: "comprehensions are not part of the language",
    ast.DictComp: "comprehensions are not part of the language",
    ast.GeneratorExp: "comprehensions are not part of the language",
    ast.NamedExpr: "assignment expressions are not part of the language",
    ast.Await: "`await` is not part of the language",
    ast.Yield: "`yield` is not part of the language",
    ast.YieldFrom: "`yield` is not part of the language",
    ast.Starred: "starred expressions are not part of the language",
    ast.JoinedStr: "f-strings are not part of the language",
    ast.IfExp: "conditional expressions are not part of the language; use `and`/`or`",
    ast.Pow: "`**` is not part of the language",
}


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = source
        self._lines = [line.encode("utf-8") for line in source.split("\n")]
        self.issues: list[ExprIssue] = []
        self.names: set[str] = set()

    # helpers
    def issue(self, node: ast.AST, code: str, message: str, hint: str | None = None) -> None:
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        lines = self.source.split("\n")
        if 0 < line <= len(lines):  # ast counts UTF-8 bytes; diagnostics count characters
            offset = len(lines[line - 1].encode("utf-8")[:offset].decode("utf-8", "replace"))
        self.issues.append(ExprIssue(line, offset + 1, code, message, hint))

    def text(self, node: ast.AST) -> str:
        """The source text of ``node``, whitespace folded (for messages)."""
        start = getattr(node, "col_offset", None)
        end = getattr(node, "end_col_offset", None)
        if start is None or end is None:
            return ast.unparse(node)
        if node.lineno == node.end_lineno:  # type: ignore[attr-defined]  # expr nodes have it
            # ast offsets count UTF-8 bytes, not characters
            seg = self._lines[node.lineno - 1][start:end].decode("utf-8", "replace")  # type: ignore[attr-defined]
        else:
            seg = ast.get_source_segment(self.source, node) or ast.unparse(node)
        return " ".join(seg.split())

    def fail(self, node: ast.AST) -> tuple[Fn, str]:
        def f(a: Any) -> Any:  # pragma: no cover - never reached: compile errors stop loading
            raise EvalError("expression did not compile")

        return f, ANY

    # dispatch
    def compile(self, node: ast.AST) -> tuple[Fn, str]:
        method = getattr(self, "c_" + type(node).__name__, None)
        if method is None:
            hint = _FORBIDDEN_HINTS.get(type(node))
            what = _FORBIDDEN_HINTS.get(type(getattr(node, "op", None)), hint)
            self.issue(
                node,
                "expr_forbidden",
                f"`{self.text(node)}` is not allowed in a condition",
                what,
            )
            return self.fail(node)
        result: tuple[Fn, str] = method(node)
        return result

    def c_Constant(self, node: ast.Constant) -> tuple[Fn, str]:
        v = node.value
        if v is not None and type(v) not in (bool, int, float, str):
            self.issue(node, "expr_forbidden", f"literal `{self.text(node)}` is not allowed")
            return self.fail(node)
        return (lambda a: v), _tname(v)

    def c_Name(self, node: ast.Name) -> tuple[Fn, str]:
        if node.id in _CONSTANT_NAMES:
            v = _CONSTANT_NAMES[node.id]
            return (lambda a: v), _tname(v)
        getter = NAMES.get(node.id)
        if getter is None:
            known = ", ".join(sorted(NAMES))
            self.issue(
                node,
                "expr_unknown_name",
                f"unknown name `{node.id}`",
                f"conditions can read {known}",
            )
            return self.fail(node)
        self.names.add(node.id)
        return getter, _NAME_TYPES[node.id]

    def c_List(self, node: ast.List | ast.Tuple) -> tuple[Fn, str]:
        if len(node.elts) > 1024:
            self.issue(node, "expr_too_large", "list literal has more than 1024 items")
        fns = [self.compile(e)[0] for e in node.elts]
        if all(isinstance(e, ast.Constant) for e in node.elts):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            return (lambda a: values), LIST
        return (lambda a: [f(a) for f in fns]), LIST

    c_Tuple = c_List

    def c_Dict(self, node: ast.Dict) -> tuple[Fn, str]:
        self.issue(node, "expr_forbidden", "map literals are not allowed in a condition")
        return self.fail(node)

    # lookups: dotted access and subscripts are key lookups
    def c_Attribute(self, node: ast.Attribute) -> tuple[Fn, str]:
        return self.lookup(node)

    def c_Subscript(self, node: ast.Subscript) -> tuple[Fn, str]:
        return self.lookup(node)

    def lookup(self, node: ast.Attribute | ast.Subscript) -> tuple[Fn, str]:
        steps: list[tuple[Any, Fn | None]] = []  # (constant key, dynamic key fn)
        cur: ast.AST = node
        while isinstance(cur, (ast.Attribute, ast.Subscript)):
            if isinstance(cur, ast.Attribute):
                if cur.attr.startswith("_"):
                    self.issue(
                        cur,
                        "expr_forbidden",
                        f"`{cur.attr}` cannot be read: names starting with `_` are not allowed",
                    )
                    return self.fail(node)
                steps.append((cur.attr, None))
            else:
                sl = cur.slice
                if isinstance(sl, ast.Slice):
                    self.issue(cur, "expr_forbidden", "slices are not allowed in a condition")
                    return self.fail(node)
                if isinstance(sl, ast.Constant) and type(sl.value) in (str, int):
                    steps.append((sl.value, None))
                else:
                    kf, kt = self.compile(sl)
                    if kt not in (STR, NUM, ANY):
                        self.issue(sl, "expr_type_error", f"a key must be a string, not a {kt}")
                    steps.append((None, kf))
            cur = cur.value
        steps.reverse()
        base, base_type = self.compile(cur)
        if base_type not in (MAP, LIST, ANY):
            self.issue(node, "expr_type_error", f"`{self.text(cur)}` is a {base_type}, not a map")
        path = self.text(node)
        if all(kf is None for _, kf in steps):
            keys = tuple(k for k, _ in steps)
            if len(keys) == 1:
                k0 = keys[0]

                def get1(a: Any) -> Any:
                    v = base(a)
                    if type(v) is dict:
                        try:
                            return v[k0]
                        except KeyError:
                            raise EvalError(f"missing key `{path}`") from None
                    return _step(v, k0, path)

                return get1, ANY

            def getn(a: Any) -> Any:
                v = base(a)
                for k in keys:
                    if type(v) is dict:
                        try:
                            v = v[k]
                        except KeyError:
                            raise EvalError(f"missing key `{path}`") from None
                    else:
                        v = _step(v, k, path)
                return v

            return getn, ANY
        dyn = tuple(steps)

        def getd(a: Any) -> Any:
            v = base(a)
            for k, kf in dyn:
                v = _step(v, k if kf is None else kf(a), path)
            return v

        return getd, ANY

    # boolean logic
    def c_BoolOp(self, node: ast.BoolOp) -> tuple[Fn, str]:
        parts = []
        for value in node.values:
            f, t = self.compile(value)
            if t not in (BOOL, ANY):
                op = "and" if isinstance(node.op, ast.And) else "or"
                self.issue(
                    value,
                    "expr_type_error",
                    f"`{op}` needs booleans, `{self.text(value)}` is a {t}",
                )
            parts.append((f, self.text(value)))
        fs = tuple(parts)
        if isinstance(node.op, ast.And):

            def and_(a: Any) -> Any:
                for f, text in fs:
                    v = f(a)
                    if v is False:
                        return False
                    if v is not True:
                        raise EvalError(f"`and` needs booleans, `{text}` is a {_tname(v)}")
                return True

            return and_, BOOL

        def or_(a: Any) -> Any:
            for f, text in fs:
                v = f(a)
                if v is True:
                    return True
                if v is not False:
                    raise EvalError(f"`or` needs booleans, `{text}` is a {_tname(v)}")
            return False

        return or_, BOOL

    def c_UnaryOp(self, node: ast.UnaryOp) -> tuple[Fn, str]:
        f, t = self.compile(node.operand)
        text = self.text(node.operand)
        if isinstance(node.op, ast.Not):
            if t not in (BOOL, ANY):
                self.issue(node, "expr_type_error", f"`not` needs a boolean, `{text}` is a {t}")

            def not_(a: Any) -> Any:
                v = f(a)
                if v is True:
                    return False
                if v is False:
                    return True
                raise EvalError(f"`not` needs a boolean, `{text}` is a {_tname(v)}")

            return not_, BOOL
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            if t not in (NUM, ANY):
                self.issue(node, "expr_type_error", f"`{text}` is a {t}, not a number")
            neg = isinstance(node.op, ast.USub)

            def sign(a: Any) -> Any:
                v = f(a)
                if not _is_num(v):
                    raise EvalError(f"`{text}` is a {_tname(v)}, not a number")
                return -v if neg else v

            return sign, NUM
        self.issue(node, "expr_forbidden", f"`{self.text(node)}` is not allowed in a condition")
        return self.fail(node)

    # arithmetic
    def c_BinOp(self, node: ast.BinOp) -> tuple[Fn, str]:
        sym = _ARITH_SYMBOL.get(type(node.op))
        if sym is None:
            self.issue(
                node,
                "expr_forbidden",
                f"`{self.text(node)}` is not allowed in a condition",
                _FORBIDDEN_HINTS.get(type(node.op), "only + - * / // % are supported"),
            )
            return self.fail(node)
        lf, lt = self.compile(node.left)
        rf, rt = self.compile(node.right)
        text = self.text(node)
        concat = sym == "+"
        ok_static = {NUM, ANY} | ({STR, LIST} if concat else set())
        if lt not in ok_static or rt not in ok_static or (ANY not in (lt, rt) and lt != rt):
            self.issue(node, "expr_type_error", f"cannot apply `{sym}` to a {lt} and a {rt}")
        op = _ARITH[sym]

        def arith(a: Any) -> Any:
            x, y = lf(a), rf(a)
            if _is_num(x) and _is_num(y):
                try:
                    return op(x, y)
                except ZeroDivisionError:
                    raise EvalError(f"division by zero in `{text}`") from None
                except OverflowError:
                    raise EvalError(f"number too large in `{text}`") from None
            if concat:
                tx, ty = _tname(x), _tname(y)
                if tx == ty and tx in (STR, LIST):
                    return x + y if tx == STR else [*x, *y]
            raise EvalError(f"cannot apply `{sym}` to a {_tname(x)} and a {_tname(y)} in `{text}`")

        if not concat or NUM in (lt, rt):  # only `+` can produce something else
            return arith, NUM
        return arith, lt if lt == rt else ANY

    # comparisons
    def c_Compare(self, node: ast.Compare) -> tuple[Fn, str]:
        if any(type(op) not in _CMP_SYMBOL for op in node.ops):
            self.issue(
                node,
                "expr_forbidden",
                f"`{self.text(node)}` is not allowed",
                "`is` and `is not` are not part of the language; use `==` / `!=`",
            )
            return self.fail(node)
        # Compile each operand once: a chain must not report its middle operand twice.
        operands = [node.left, *node.comparators]
        compiled = [self.compile(o) for o in operands]
        fns: list[Fn] = []
        for i, op in enumerate(node.ops):
            fns.append(
                self.compare_one(
                    operands[i], compiled[i], op, operands[i + 1], compiled[i + 1], node
                )
            )
        if len(fns) == 1:
            return fns[0], BOOL
        chain = tuple(fns)

        def all_(a: Any) -> Any:
            return all(f(a) for f in chain)

        return all_, BOOL

    def compare_one(
        self,
        lnode: ast.expr,
        left: tuple[Fn, str],
        op: ast.cmpop,
        rnode: ast.expr,
        right: tuple[Fn, str],
        whole: ast.AST,
    ) -> Fn:
        sym = _CMP_SYMBOL[type(op)]
        lf, lt = left
        rf, rt = right
        text = f"{self.text(lnode)} {sym} {self.text(rnode)}"
        rconst = isinstance(rnode, ast.Constant)
        rvalue = rnode.value if isinstance(rnode, ast.Constant) else None

        if sym in ("==", "!="):
            negate = sym == "!="
            if rconst and type(rvalue) is str:
                c = rvalue

                def eq_str(a: Any) -> Any:
                    x = lf(a)
                    r = x == c if type(x) is str else strict_eq(x, c)
                    return r is not negate

                return eq_str
            if rconst:
                c2 = rvalue

                def eq_const(a: Any) -> Any:
                    return strict_eq(lf(a), c2) is not negate

                return eq_const

            def eq(a: Any) -> Any:
                return strict_eq(lf(a), rf(a)) is not negate

            return eq

        if sym in ("in", "not in"):
            negate = sym == "not in"
            if rt not in (LIST, STR, MAP, ANY):
                self.issue(
                    whole,
                    "expr_type_error",
                    f"`{sym}` needs a list, string or map on the right, not a {rt}",
                )
            elif rt in (STR, MAP) and lt not in (STR, ANY):
                self.issue(
                    whole,
                    "expr_type_error",
                    f"`{sym}` a {rt} needs a string on the left, not a {lt}",
                )
            if isinstance(rnode, (ast.List, ast.Tuple)) and all(
                isinstance(e, ast.Constant) and type(e.value) is str for e in rnode.elts
            ):
                members = frozenset(e.value for e in rnode.elts if isinstance(e, ast.Constant))

                def in_strs(a: Any) -> Any:
                    x = lf(a)
                    if type(x) is str:
                        return (x in members) is not negate
                    return _contains(rf(a), x, text) is not negate

                return in_strs

            def in_(a: Any) -> Any:
                return _contains(rf(a), lf(a), text) is not negate

            return in_

        # ordering
        # one side alone can show the mismatch: null, booleans, lists and maps never order
        if any(t not in (NUM, STR, ANY) for t in (lt, rt)) or (ANY not in (lt, rt) and lt != rt):
            self.issue(
                whole,
                "expr_type_error",
                f"cannot compare a {lt} with a {rt} using `{sym}`",
                "ordering compares two numbers or two strings",
            )
        cmp = _ORDER[sym]
        if rconst and _is_num(rvalue):
            c3 = rvalue

            def order_num(a: Any) -> Any:
                x = lf(a)
                t = type(x)
                if t is int or ((t is float or _is_num(x)) and x == x):  # noqa: PLR0124 - NaN test
                    return cmp(x, c3)
                if _is_num(x):
                    raise EvalError(f"NaN cannot be ordered in `{text}`")
                raise EvalError(f"cannot compare a {_tname(x)} with a number in `{text}`")

            return order_num

        def order(a: Any) -> Any:
            x, y = lf(a), rf(a)
            if _is_num(x) and _is_num(y):
                if x != x or y != y:  # noqa: PLR0124 - the NaN test
                    raise EvalError(f"NaN cannot be ordered in `{text}`")
                return cmp(x, y)
            if _tname(x) == STR and _tname(y) == STR:
                return cmp(x, y)
            raise EvalError(f"cannot compare a {_tname(x)} with a {_tname(y)} in `{text}`")

        return order

    # calls into the function library
    def c_Call(self, node: ast.Call) -> tuple[Fn, str]:
        if not isinstance(node.func, ast.Name):
            self.issue(
                node,
                "expr_forbidden",
                f"`{self.text(node.func)}` cannot be called",
                "only the functions of the library can be called: " + ", ".join(sorted(FUNCTIONS)),
            )
            return self.fail(node)
        name = node.func.id
        spec = FUNCTIONS.get(name)
        if spec is None:
            self.issue(
                node.func,
                "expr_unknown_function",
                f"unknown function `{name}`",
                "known functions: " + ", ".join(sorted(FUNCTIONS)),
            )
            return self.fail(node)
        if node.keywords:
            self.issue(node, "expr_forbidden", f"`{name}` takes positional arguments only")
            return self.fail(node)
        lo, hi = spec.arity
        if not lo <= len(node.args) <= hi:
            self.issue(
                node,
                "expr_arity_error",
                f"`{name}` takes {lo} argument{'s' if lo != 1 else ''}, got {len(node.args)}",
            )
            return self.fail(node)
        compiled = [self.compile(arg) for arg in node.args]
        for arg, (_, t), allowed in zip(node.args, compiled, spec.arg_types, strict=True):
            if ANY not in allowed and t != ANY and t not in allowed:
                self.issue(
                    arg,
                    "expr_type_error",
                    f"`{name}` needs a {' or '.join(allowed)} here, `{self.text(arg)}` is a {t}",
                )
        fns = [f for f, _ in compiled]
        builder = getattr(self, "f_" + name)
        result: Fn = builder(node, fns)
        return result, spec.result

    def const_pattern(self, node: ast.Call, kind: str) -> Any:
        pat = node.args[1]
        if not (isinstance(pat, ast.Constant) and type(pat.value) is str):
            return None
        try:
            return compile_glob(pat.value) if kind == "glob" else compile_regex(pat.value)
        except PatternError as exc:
            self.issue(pat, "expr_regex_error", f"invalid {kind} pattern: {exc}")
            return False

    def f_regex(self, node: ast.Call, fns: list[Fn]) -> Fn:
        if not (isinstance(node.args[1], ast.Constant) and type(node.args[1].value) is str):
            self.issue(
                node.args[1],
                "expr_regex_error",
                "the pattern of `regex` must be a string literal (it is compiled at load)",
            )
            return self.fail(node)[0]
        rx = self.const_pattern(node, "regex")
        s = fns[0]
        text = self.text(node.args[0])

        def regex(a: Any) -> Any:
            v = s(a)
            if type(v) is not str and _tname(v) != STR:
                raise EvalError(f"`regex` needs a string, `{text}` is a {_tname(v)}")
            return rx.search(v) is not None

        return regex

    def f_glob(self, node: ast.Call, fns: list[Fn]) -> Fn:
        g = self.const_pattern(node, "glob")
        s, p = fns
        text = self.text(node.args[0])

        def glob(a: Any) -> Any:
            v = s(a)
            if _tname(v) != STR:
                raise EvalError(f"`glob` needs a string, `{text}` is a {_tname(v)}")
            rx = g
            if rx is None:
                pat = p(a)
                if _tname(pat) != STR:
                    raise EvalError(f"`glob` needs a string pattern, got a {_tname(pat)}")
                try:
                    rx = _dynamic_glob(pat)
                except PatternError as exc:
                    raise EvalError(f"invalid glob pattern: {exc}") from None
            return rx.search(v) is not None

        return glob

    def _str_fn(self, node: ast.Call, fns: list[Fn], name: str, op: Callable[..., Any]) -> Fn:
        texts = [self.text(arg) for arg in node.args]
        arg_fns = tuple(fns)

        def call(a: Any) -> Any:
            vals = [f(a) for f in arg_fns]
            for v, t in zip(vals, texts, strict=True):
                if _tname(v) != STR:
                    raise EvalError(f"`{name}` needs a string, `{t}` is a {_tname(v)}")
            return op(*vals)

        return call

    def f_startswith(self, node: ast.Call, fns: list[Fn]) -> Fn:
        return self._str_fn(node, fns, "startswith", str.startswith)

    def f_endswith(self, node: ast.Call, fns: list[Fn]) -> Fn:
        return self._str_fn(node, fns, "endswith", str.endswith)

    def f_lower(self, node: ast.Call, fns: list[Fn]) -> Fn:
        return self._str_fn(node, fns, "lower", str.lower)

    def f_upper(self, node: ast.Call, fns: list[Fn]) -> Fn:
        return self._str_fn(node, fns, "upper", str.upper)

    def f_len(self, node: ast.Call, fns: list[Fn]) -> Fn:
        (x,) = fns
        text = self.text(node.args[0])

        def len_(a: Any) -> Any:
            v = x(a)
            if _tname(v) in (STR, LIST, MAP):
                return len(v)
            raise EvalError(f"`len` needs a string, list or map, `{text}` is a {_tname(v)}")

        return len_

    def arg_path(self, node: ast.Call) -> str | None:
        """The argument path (``iban``, ``payment.to``, ``to[0]``) a flow function reads."""
        parts: list[str] = []
        cur: ast.AST = node.args[0]
        while isinstance(cur, (ast.Attribute, ast.Subscript)):
            if isinstance(cur, ast.Attribute):
                parts.append("." + cur.attr)
            elif isinstance(cur.slice, ast.Constant) and type(cur.slice.value) is str:
                parts.append("." + cur.slice.value)
            elif isinstance(cur.slice, ast.Constant) and type(cur.slice.value) is int:
                parts.append(f"[{cur.slice.value}]")
            else:
                break
            cur = cur.value
        if not (isinstance(cur, ast.Name) and cur.id == "args"):
            name = node.func.id if isinstance(node.func, ast.Name) else "this function"
            self.issue(
                node.args[0],
                "expr_type_error",
                f"`{name}` takes an argument path such as `args.iban`, "
                f"not `{self.text(node.args[0])}`",
            )
            return None
        return "".join(reversed(parts)).removeprefix(".")

    def f_provenance(self, node: ast.Call, fns: list[Fn]) -> Fn:
        path = self.arg_path(node)
        if path is None:
            return self.fail(node)[0]
        (value,) = fns

        def provenance(a: Any) -> Any:
            value(a)  # a missing argument is an error, as reading it would be
            flow = a.flow
            return [] if flow is None else flow_labels(flow.args, path)

        return provenance

    def f_user_said(self, node: ast.Call, fns: list[Fn]) -> Fn:
        path = self.arg_path(node)
        if path is None:
            return self.fail(node)[0]
        (value,) = fns

        def user_said(a: Any) -> Any:
            v = value(a)
            flow = a.flow
            if flow is None:
                return False
            labelled = flow.args
            found = False
            for leaf in leaf_paths(v, path):
                if "user" not in labelled.get(leaf, ()):
                    return False
                found = True
            return found

        return user_said

    def f_session_labels(self, node: ast.Call, fns: list[Fn]) -> Fn:
        def session_labels(a: Any) -> Any:
            flow = a.flow
            return [] if flow is None else list(flow.session)

        return session_labels

    def f_has(self, node: ast.Call, fns: list[Fn]) -> Fn:
        m, k = fns
        text = self.text(node.args[0])

        def has(a: Any) -> Any:
            mv, kv = m(a), k(a)
            if not isinstance(mv, Mapping):
                raise EvalError(f"`has` needs a map, `{text}` is a {_tname(mv)}")
            if _tname(kv) != STR:
                raise EvalError(f"`has` needs a string key, got a {_tname(kv)}")
            return kv in mv

        return has

    def f_get(self, node: ast.Call, fns: list[Fn]) -> Fn:
        m, k, d = fns
        text = self.text(node.args[0])

        def get(a: Any) -> Any:
            mv, kv = m(a), k(a)
            if not isinstance(mv, Mapping):
                raise EvalError(f"`get` needs a map, `{text}` is a {_tname(mv)}")
            if _tname(kv) != STR:
                raise EvalError(f"`get` needs a string key, got a {_tname(kv)}")
            return mv[kv] if kv in mv else d(a)

        return get


def flow_labels(labelled: Mapping[str, tuple[str, ...]], path: str) -> list[str]:
    """The sorted union of the labels at argument ``path`` and every path under it."""
    if not path:
        found = {label for labels in labelled.values() for label in labels}
        return sorted(found)
    exact = labelled.get(path)
    dot, bracket = path + ".", path + "["
    under = [v for k, v in labelled.items() if k.startswith(dot) or k.startswith(bracket)]
    if not under:
        return list(exact) if exact else []
    found = set(exact or ())
    for labels in under:
        found.update(labels)
    return sorted(found)


def leaf_paths(value: Any, path: str, depth: int = 0) -> list[str]:
    """The paths of the strings and numbers in ``value`` (found at ``path``), as flows name them."""
    if depth > 32:
        raise EvalError(f"value nests too deeply at `args.{path}`")
    t = type(value)
    if t is str or ((t is int or t is float) and t is not bool):
        return [path]
    if isinstance(value, Mapping):
        prefix = path + "." if path else ""
        return [p for k, v in value.items() for p in leaf_paths(v, f"{prefix}{k}", depth + 1)]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, f"{path}[{i}]", depth + 1)]
    return []


def _step(v: Any, k: Any, path: str) -> Any:
    if isinstance(v, Mapping):
        if type(k) is not str and _tname(k) != STR:
            raise EvalError(f"a key must be a string, got a {_tname(k)} in `{path}`")
        try:
            return v[k]
        except KeyError:
            raise EvalError(f"missing key `{path}`") from None
    if isinstance(v, (list, tuple)):
        if type(k) is not int:
            raise EvalError(f"a list index must be an integer, got a {_tname(k)} in `{path}`")
        if not 0 <= k < len(v):  # negative indexes are errors, not "from the end"
            raise EvalError(f"index {k} is out of range in `{path}`")
        return v[k]
    raise EvalError(f"cannot look up `{k}` in a {_tname(v)} in `{path}`")


def _contains(container: Any, item: Any, text: str) -> bool:
    kind = _tname(container)
    if kind == LIST:
        ti = type(item)
        if ti is str or ti is int:
            for e in container:
                if type(e) is ti and e == item:
                    return True
            if ti is str:
                return False
        return any(strict_eq(item, e) for e in container)
    if kind == STR:
        if _tname(item) != STR:
            raise EvalError(
                f"`in` a string needs a string on the left, got a {_tname(item)} in `{text}`"
            )
        return bool(item in container)
    if kind == MAP:
        if _tname(item) != STR:
            raise EvalError(f"`in` a map needs a string key, got a {_tname(item)} in `{text}`")
        return bool(item in container)
    raise EvalError(f"`in` needs a list, string or map on the right, got a {kind} in `{text}`")


def _div(x: Any, y: Any) -> Any:
    return x / y


_ARITH: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": _div,
    "//": lambda x, y: x // y,
    "%": lambda x, y: x % y,
}
_ORDER: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "<": lambda x, y: bool(x < y),
    "<=": lambda x, y: bool(x <= y),
    ">": lambda x, y: bool(x > y),
    ">=": lambda x, y: bool(x >= y),
}


def _depth(node: ast.AST, limit: int) -> int:
    best = 0
    stack = [(node, 1)]
    count = 0
    while stack:
        cur, d = stack.pop()
        count += 1
        if count > MAX_NODES:
            return -1
        best = max(best, d)
        if best > limit:
            return best
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(cur))
    return best


def compile_expr(source: str) -> CompiledExpr:
    """Compile a condition; raise ExprCompileError listing every problem.

    The result's ``fn(action)`` returns the value or raises :class:`EvalError`.
    """
    if len(source) > MAX_SOURCE:
        raise ExprCompileError(
            [ExprIssue(1, 1, "expr_too_large", f"condition is longer than {MAX_SOURCE} characters")]
        )
    if not source.strip():
        raise ExprCompileError([ExprIssue(1, 1, "expr_syntax_error", "condition is empty")])
    text = source.strip()
    lead = len(source) - len(source.lstrip())
    wrapped = "\n" in text
    if wrapped:  # a YAML block scalar spanning lines: parentheses make it one expression
        text = "(" + text + "\n)"

    def at(line: int, col: int) -> tuple[int, int]:
        if line == 1:
            col = col + lead - (1 if wrapped else 0)
        return line, max(col, 1)

    def located(issues: list[ExprIssue]) -> ExprCompileError:
        out = [ExprIssue(*at(i.line, i.col), i.code, i.message, i.hint) for i in issues]
        return ExprCompileError(sorted(out, key=lambda i: (i.line, i.col)))

    try:
        with warnings.catch_warnings():
            # e.g. `1and x` or "\d": CPython warns on stderr; the policy author sees our errors
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        msg = (exc.msg or "invalid syntax").rstrip(".")
        raise located(
            [ExprIssue(exc.lineno or 1, exc.offset or 1, "expr_syntax_error", msg.lower())]
        ) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise located(
            [ExprIssue(1, 1, "expr_too_large", f"condition is too complex to parse ({exc})")]
        ) from None
    depth = _depth(tree.body, MAX_DEPTH)
    if depth < 0 or depth > MAX_DEPTH:
        raise located(
            [
                ExprIssue(
                    1,
                    1,
                    "expr_too_large",
                    f"condition has more than {MAX_NODES} nodes or nests deeper than {MAX_DEPTH}",
                )
            ]
        )
    c = _Compiler(text)
    fn, static = c.compile(tree.body)
    if static not in (BOOL, ANY) and not c.issues:
        c.issue(tree.body, "expr_type_error", f"a condition must be a boolean, this is a {static}")
    if c.issues:
        raise located(c.issues)
    return CompiledExpr(source, fn, static, frozenset(c.names), constant=not c.names)
