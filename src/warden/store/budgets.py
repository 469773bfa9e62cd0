"""Budgets and rate limits counted once for a fleet, in Redis (docs/fleet.md, issue 9).

``RedisBudgets`` has the interface and the semantics of the embedded
``warden.runtime.budgets.Budgets`` (docs/runtime.md, "Budgets"), and passes
the same tests (tests/store/test_budget_backends.py): scopes, tool filters,
``calls`` consumed by ``check`` when every budget admits the call (a refused
call consumes nothing), ``calls`` with ``per`` as GCRA in integers, and
``tokens`` and ``cost`` counted by ``report`` and checked by the next call.

Redis layout, namespace ``N``, scope key ``K`` (the scope values as a JSON
array, ``null`` for a missing one, ``[]`` for a global budget), under
``N:budget:<id>:K``:

- ``...:calls``: a lifetime call count;
- ``...:rate``: GCRA state, ``"<calls> <step> <tat>"`` in the units of
  ``Budgets`` (ns scaled by ``calls``), with a PEXPIRE at the moment it is
  as good as fresh; state written for other rate parameters counts as fresh;
- ``...:tokens`` (INCRBY) and ``...:cost`` (a double, added as Python adds).

``check`` reads every key the action's budgets use (with the server's TIME
when a rate applies and no clock was given, so that replicas share one
clock) in one round trip, decides in Python with the embedded arithmetic
(Lua numbers are doubles: a GCRA state does not fit in them), then writes
the new call counters with a compare-and-set script: applied only if none of
them changed since the read, retried otherwise. A check is thus atomic, as
the embedded one is under its lock. ``report`` is one script.

Fail closed: while Redis does not answer, ``check`` refuses every call that
a budget applies to, reason ``budget store unreachable (<url without
password>): denying``, and ``report`` raises RuntimeStateError (the usage
was not counted). Calls that no budget applies to are not affected.

Unlike the embedded counters, these survive a restart or a policy reload
(they belong to the fleet, not to one replica), as durably as Redis is
configured to keep them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from warden._re import ByTool, compile_glob
from warden.errors import RuntimeStateError
from warden.runtime.budgets import _Budget, _where
from warden.store._redis import connect, redact

if TYPE_CHECKING:
    import redis

    from warden.action import Action
    from warden.policy.sections import BudgetSpec

__all__ = ["BudgetCounters", "RedisBudgets"]

_ATTEMPTS: Final = 64  # compare-and-set rounds before a check gives up (and denies)

# KEYS: the call counters to write; ARGV: n expected values ('' = absent), n new values,
# n TTLs in ms (0 = none). Writes all or nothing; 1 if written.
_CAS: Final = """
local n = #KEYS
for i = 1, n do
  if (redis.call('GET', KEYS[i]) or '') ~= ARGV[i] then return 0 end
end
for i = 1, n do
  local ttl = tonumber(ARGV[2 * n + i])
  if ttl > 0 then
    redis.call('SET', KEYS[i], ARGV[n + i], 'PX', ttl)
  else
    redis.call('SET', KEYS[i], ARGV[n + i])
  end
end
return 1
"""

# KEYS: ARGV[1] token counters, then cost counters; ARGV[2] tokens, ARGV[3] cost.
_REPORT: Final = """
local nt = tonumber(ARGV[1])
for i = 1, nt do redis.call('INCRBY', KEYS[i], ARGV[2]) end
for i = nt + 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0') + tonumber(ARGV[3])
  redis.call('SET', KEYS[i], string.format('%.17g', v))
end
return 1
"""


class BudgetCounters(Protocol):
    """What the Runtime and the Governor use of budgets: ``Budgets`` or ``RedisBudgets``."""

    def __bool__(self) -> bool: ...

    def check(self, action: Action) -> tuple[str, str] | None: ...

    def report(self, action: Action, tokens: int = 0, cost: float = 0.0) -> None: ...

    def usage(self) -> list[Mapping[str, Any]]: ...


def _scope_key(key: tuple[Any, ...]) -> str:
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=False, default=repr)


class RedisBudgets:
    """The budgets of one policy, counted in Redis for every replica. Thread-safe.

    ``clock``: seconds, for rates; None (the default) uses the Redis server's TIME,
    the one clock every replica shares. ``timeout``: seconds to connect and to
    wait for an answer.
    """

    def __init__(
        self,
        specs: tuple[BudgetSpec, ...],
        url: str,
        namespace: str = "warden",
        *,
        clock: Callable[[], float] | None = None,
        timeout: float = 1.0,
    ) -> None:
        # One immediate retry on a fresh connection: a pooled one may have died idle.
        self._client: redis.Redis = connect(url, timeout, 1, "the Redis budget store")
        import redis  # installed: connect() said so otherwise

        self.path = redact(url)
        self.namespace = namespace
        self._budgets = [
            _Budget(s, [compile_glob(g) for g in s.tools] if s.tools else None) for s in specs
        ]
        self._for = ByTool(self._budgets, _Budget.applies)
        self._clock = clock
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._cas = self._client.register_script(_CAS)
        self._report = self._client.register_script(_REPORT)
        self._lock = threading.Lock()  # only for close

    def __bool__(self) -> bool:
        return bool(self._budgets)

    def _prefix(self, b: _Budget) -> str:
        return f"{self.namespace}:budget:{b.spec.id}:"

    def _key(self, b: _Budget, key: tuple[Any, ...], kind: str) -> str:
        return f"{self._prefix(b)}{_scope_key(key)}:{kind}"

    def _unreachable(self, budgets: list[_Budget]) -> tuple[str, str]:
        return budgets[0].spec.id, f"budget store unreachable ({self.path}): denying"

    # --- the decision path ---------------------------------------------------------------

    def check(self, action: Action) -> tuple[str, str] | None:
        """None when the call fits every budget (and is counted); else (budget id, reason)."""
        budgets = self._for(action.tool)
        if not budgets:
            return None
        plan = [(b, b.key(action)) for b in budgets]
        names: list[str] = []
        for b, key in plan:
            spec = b.spec
            if spec.tokens is not None:
                names.append(self._key(b, key, "tokens"))
            if spec.cost is not None:
                names.append(self._key(b, key, "cost"))
            if spec.calls is not None:
                names.append(self._key(b, key, "calls" if spec.per is None else "rate"))
        server_time = self._clock is None and any(b.spec.per is not None for b in budgets)
        for _ in range(_ATTEMPTS):
            try:
                pipe = self._client.pipeline(transaction=False)
                if server_time:
                    pipe.time()
                pipe.mget(names)
                answers = pipe.execute()
            except self._errors:
                return self._unreachable(budgets)
            if server_time:
                seconds, micros = answers[0]
                now_ns = int(seconds) * 1_000_000_000 + int(micros) * 1000
            else:
                now_ns = round(self._clock() * 1e9) if self._clock is not None else 0
            values = dict(zip(names, answers[-1], strict=True))
            refusal, writes = self._decide(plan, values, now_ns)
            if refusal is not None or not writes:
                return refusal
            keys = [w[0] for w in writes]
            args = [w[1] for w in writes] + [w[2] for w in writes] + [str(w[3]) for w in writes]
            try:
                if self._cas(keys=keys, args=args) == 1:
                    return None
            except self._errors:
                return self._unreachable(budgets)
        return budgets[0].spec.id, f"budget store busy ({self.path}): denying"

    def _decide(
        self, plan: list[tuple[_Budget, tuple[Any, ...]]], values: Mapping[str, Any], now_ns: int
    ) -> tuple[tuple[str, str] | None, list[tuple[str, str, str, int]]]:
        """The embedded check on the values read: a refusal, or the writes that count the call."""
        writes: list[tuple[str, str, str, int]] = []
        for b, key in plan:
            spec = b.spec
            if spec.tokens is not None:
                used = int(values[self._key(b, key, "tokens")] or 0)
                if used >= spec.tokens:
                    return (
                        spec.id,
                        f"budget `{spec.id}`: {used} of {spec.tokens} tokens used "
                        f"{_where(spec, key)}",
                    ), []
            if spec.cost is not None:
                spent = float(values[self._key(b, key, "cost")] or 0.0)
                if spent >= spec.cost:
                    return (
                        spec.id,
                        f"budget `{spec.id}`: cost {spent:g} of {spec.cost:g} used "
                        f"{_where(spec, key)}",
                    ), []
            if spec.calls is None:
                continue
            if spec.per is None:
                name = self._key(b, key, "calls")
                old = values[name] or ""
                count = int(old or 0)
                if count >= spec.calls:
                    return (
                        spec.id,
                        f"budget `{spec.id}`: {count} of {spec.calls} calls used "
                        f"{_where(spec, key)}",
                    ), []
                writes.append((name, old, str(count + 1), 0))
                continue
            name = self._key(b, key, "rate")
            old = values[name] or ""
            now_u = now_ns * spec.calls
            step_u = round(spec.per * 1e9)
            tat = max(_tat(old, spec.calls, step_u, now_u), now_u) + step_u
            if tat - now_u > step_u * spec.calls:
                wait = (tat - now_u - step_u * spec.calls) / spec.calls / 1e9
                return (
                    spec.id,
                    f"budget `{spec.id}`: more than {spec.calls} calls per "
                    f"{spec.per:g} s {_where(spec, key)} (next in {wait:.2f} s)",
                ), []
            ttl_ms = max(1, math.ceil((tat - now_u) / spec.calls / 1e6))  # then: as fresh
            writes.append((name, old, f"{spec.calls} {step_u} {tat}", ttl_ms))
        return None, writes

    def report(self, action: Action, tokens: int = 0, cost: float = 0.0) -> None:
        """Add reported usage to every budget that counts it; RuntimeStateError if not counted."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError("tokens must be a non-negative integer")
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not 0 <= cost < float("inf")
        ):
            raise ValueError("cost must be a non-negative, finite number")
        token_keys: list[str] = []
        cost_keys: list[str] = []
        for b in self._for(action.tool):
            key = b.key(action)
            if b.spec.tokens is not None and tokens:
                token_keys.append(self._key(b, key, "tokens"))
            if b.spec.cost is not None and cost:
                cost_keys.append(self._key(b, key, "cost"))
        if not token_keys and not cost_keys:
            return
        try:
            self._report(
                keys=token_keys + cost_keys,
                args=[len(token_keys), tokens, repr(float(cost))],
            )
        except self._errors as exc:
            raise RuntimeStateError(
                f"budget store unreachable ({self.path}): usage not counted: {exc}"
            ) from None

    def usage(self) -> list[Mapping[str, Any]]:
        """A snapshot of every counter, from Redis (RuntimeStateError if it does not answer)."""
        out: list[Mapping[str, Any]] = []
        try:
            for b in self._budgets:
                prefix = self._prefix(b)
                names = sorted(self._client.scan_iter(match=f"{prefix}\\[*", count=1000))
                got = self._client.mget(names) if names else []
                snap: dict[str, dict[tuple[Any, ...], Any]] = {
                    "calls": {},
                    "tokens": {},
                    "cost": {},
                }
                for name, value in zip(names, got, strict=True):
                    if value is None:
                        continue
                    scope, _, kind = name[len(prefix) :].rpartition(":")
                    try:
                        key = tuple(json.loads(scope))
                        if kind in {"calls", "tokens"}:
                            snap[kind][key] = int(value)
                        elif kind == "cost":
                            snap[kind][key] = float(value)
                        elif kind == "rate":
                            snap["calls"][key] = int(value.split()[2])
                    except (ValueError, IndexError, TypeError):
                        continue
                out.append({"budget": b.spec.id, **snap})
        except self._errors as exc:
            raise RuntimeStateError(f"budget store unreachable ({self.path}): {exc}") from None
        return out

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _tat(value: str, calls: int, step_u: int, now_u: int) -> int:
    """The TAT stored in ``value`` for these rate parameters; ``now_u`` (fresh) otherwise."""
    parts = value.split()
    try:
        if len(parts) == 3 and int(parts[0]) == calls and int(parts[1]) == step_u:
            return int(parts[2])
    except ValueError:
        pass
    return now_u
