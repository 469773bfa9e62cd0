"""Circuit breaker state shared by a fleet, in Redis (docs/sre.md, "Circuit breakers"; issue 9).

``RedisBreakers`` has the interface and the semantics of the embedded
``warden.sre.breakers.Breakers``: a breaker opened by failures seen on any
replica is open on every replica. Layout, namespace ``N``, under
``N:breaker:<id>:<key>:``:

- ``...:state``: absent or ``closed|<since>``; ``open|<probe_at>|<probe wall>|<since>|<why>``;
  ``half_open|<since>``;
- ``...:win``: the window, a hash of ten buckets (``c<i>``, ``f<i>``, ``e<i>``)
  and ``cons`` (failures in a row); it expires once its outcomes left the window;
- ``...:trials``: the half-open trials in flight (token → admission time);
- ``...:ok``: the trials that succeeded.

Every transition is one Lua script, so it happens once, on the replica whose
script made it, and only that replica returns the ``Transition``. ``check``
reads the state of every key the action's breakers guard in one MGET (one
round trip); it takes a script only when a key is open past its probe time or
half-open. Trials are remembered locally by the identity of the action's
``args`` (the outcome of a call is reported on the replica that checked it)
and in Redis by a random token. The state clock (``clock``, default wall
time) must be shared by the replicas.

Fail closed: while Redis does not answer, ``check`` refuses every call that a
breaker guards, reason ``breaker store unreachable (<url>): denying``;
``record`` drops the outcome (logged); ``states`` raises RuntimeStateError.
``implicit`` (id → ``open_for``) names the implicit breakers that
``force_open`` may create on another replica (``cascade``): ``check`` reads
their state by agent id too, so a key one replica forced open is open on all.
Keys are not bounded by ``max_keys`` (accepted, ignored): closed keys expire
with their window instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from warden._re import ByTool
from warden.errors import RuntimeStateError
from warden.policy.sections import BreakerSpec
from warden.sre.breakers import (
    IMPLICIT_OPEN_FOR,
    BreakerState,
    Transition,
    _Breaker,
    _open_text,
    breaker_key,
)
from warden.store._redis import connect, redact

if TYPE_CHECKING:
    import redis

    from warden.action import Action

__all__ = ["RedisBreakers"]

log = logging.getLogger(__name__)

_BUCKETS: Final = 10
_FAILED: Final = frozenset({"error", "timeout"})

# Shared Lua: open the key (KEYS 1 state, 2 win, 3 trials, 4 ok); ARGV-derived values given.
_OPEN_FN: Final = """
local function open(now, span, wall, why)
  redis.call('SET', KEYS[1], 'open|' .. string.format('%.17g', now + span) .. '|' ..
    string.format('%.17g', wall + span) .. '|' .. string.format('%.17g', wall) .. '|' .. why)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
local function kind(s)
  if not s then return 'closed' end
  return string.match(s, '^([a-z_]+)')
end
"""

# ARGV: 1 bucket, 2 failed, 3 consecutive (-1 none), 4 ratio (-1 none), 5 min_calls,
# 6 now, 7 wall, 8 open_for, 9 window text, 10 window ttl ms.
# Returns {} or {from, why} when it opened.
_COUNT: Final = (
    _OPEN_FN
    + """
local s = redis.call('GET', KEYS[1])
if kind(s) ~= 'closed' then return {} end
local bucket = tonumber(ARGV[1])
local slot = bucket % 10
local failed = ARGV[2] == '1'
if tonumber(redis.call('HGET', KEYS[2], 'e' .. slot) or '-1') ~= bucket then
  redis.call('HSET', KEYS[2], 'e' .. slot, bucket, 'c' .. slot, 0, 'f' .. slot, 0)
end
redis.call('HINCRBY', KEYS[2], 'c' .. slot, 1)
local cons = 0
if failed then
  redis.call('HINCRBY', KEYS[2], 'f' .. slot, 1)
  cons = redis.call('HINCRBY', KEYS[2], 'cons', 1)
else
  redis.call('HSET', KEYS[2], 'cons', 0)
end
if not s then redis.call('SET', KEYS[1], 'closed|' .. ARGV[7]) end
redis.call('PEXPIRE', KEYS[2], ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[10])
local now, wall, span = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local limit = tonumber(ARGV[3])
if limit >= 0 and cons >= limit then
  local why = cons .. ' failures in a row'
  open(now, span, wall, why)
  return {'closed', why}
end
local ratio = tonumber(ARGV[4])
if ratio >= 0 then
  local calls, fails = 0, 0
  for i = 0, 9 do
    local e = tonumber(redis.call('HGET', KEYS[2], 'e' .. i) or '-1')
    if e > bucket - 10 then
      calls = calls + tonumber(redis.call('HGET', KEYS[2], 'c' .. i) or '0')
      fails = fails + tonumber(redis.call('HGET', KEYS[2], 'f' .. i) or '0')
    end
  end
  if calls >= tonumber(ARGV[5]) and fails / calls >= ratio then
    local why = fails .. ' of ' .. calls .. ' calls failed in the last ' .. ARGV[9] .. ' s'
    open(now, span, wall, why)
    return {'closed', why}
  end
end
return {}
"""
)

# ARGV: 1 now, 2 wall, 3 open_for, 4 probes, 5 token, 6 lost why.
# Returns {verdict, half_opened, detail}: verdict 'none' (closed: allowed, no trial),
# 'open' (detail: the state), 'lost' (detail: the state), 'full' (detail: trials in flight),
# 'trial'.
_TRIAL: Final = (
    _OPEN_FN
    + """
local s = redis.call('GET', KEYS[1])
local k = kind(s)
local now, wall, span = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local probes = tonumber(ARGV[4])
local opened = 0
if k == 'closed' then return {'none', 0, ''} end
if k == 'open' then
  local p = tonumber(string.match(s, '^open|([^|]+)|'))
  if now < p then return {'open', 0, s} end
  redis.call('SET', KEYS[1], 'half_open|' .. ARGV[2])
  redis.call('DEL', KEYS[3], KEYS[4])
  opened = 1
end
local n = redis.call('HLEN', KEYS[3])
local ok = tonumber(redis.call('GET', KEYS[4]) or '0')
if n > 0 and n + ok >= probes then
  local oldest = nil
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
    local t = tonumber(v)
    if oldest == nil or t < oldest then oldest = t end
  end
  if now - oldest >= span then
    open(now, span, wall, ARGV[6])
    return {'lost', opened, redis.call('GET', KEYS[1])}
  end
end
if n + ok >= probes then return {'full', opened, tostring(n)} end
redis.call('HSET', KEYS[3], ARGV[5], ARGV[1])
return {'trial', opened, ''}
"""
)

# ARGV: 1 token, 2 counts, 3 failed, 4 probes, 5 now, 6 wall, 7 open_for, 8 status.
# Returns {} or {to, why}.
_SETTLE: Final = (
    _OPEN_FN
    + """
local s = redis.call('GET', KEYS[1])
local held = redis.call('HDEL', KEYS[3], ARGV[1])
if kind(s) ~= 'half_open' or held == 0 or ARGV[2] ~= '1' then return {} end
if ARGV[3] == '1' then
  local why = 'a trial call ended `' .. ARGV[8] .. '`'
  open(tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[6]), why)
  return {'open', why}
end
local ok = redis.call('INCR', KEYS[4])
if ok >= tonumber(ARGV[4]) then
  redis.call('SET', KEYS[1], 'closed|' .. ARGV[6])
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  return {'closed', ''}
end
return {}
"""
)

# ARGV: 1 now, 2 wall, 3 span, 4 why. Returns {from} when it opened, {} otherwise.
_FORCE: Final = (
    _OPEN_FN
    + """
local s = redis.call('GET', KEYS[1])
local k = kind(s)
local now, wall, span = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if k == 'open' then
  local p, pw, since = string.match(s, '^open|([^|]+)|([^|]+)|([^|]+)|')
  if now + span > tonumber(p) then
    redis.call('SET', KEYS[1], 'open|' .. string.format('%.17g', now + span) .. '|' ..
      string.format('%.17g', wall + span) .. '|' .. since .. '|' .. ARGV[4])
  end
  return {}
end
open(now, span, wall, ARGV[4])
return {k}
"""
)


class RedisBreakers:
    """The circuit breakers of one policy, their state in Redis for every replica. Thread-safe."""

    def __init__(
        self,
        specs: tuple[BreakerSpec, ...],
        url: str,
        namespace: str = "warden",
        clock: Callable[[], float] = time.time,
        wall: Callable[[], float] = time.time,
        *,
        max_keys: int = 0,
        timeout: float = 1.0,
        implicit: Mapping[str, float] | None = None,
    ) -> None:
        # One immediate retry on a fresh connection: a pooled one may have died idle.
        self._client: redis.Redis = connect(url, timeout, 1, "the Redis breaker store")
        import redis  # installed: connect() said so otherwise

        del max_keys
        self.path = redact(url)
        self.namespace = namespace
        self._breakers = [_Breaker(s) for s in specs]
        self._by_id = {b.spec.id: b for b in self._breakers}
        self._for = ByTool(self._breakers, _Breaker.applies)
        self._clock = clock
        self._wall = wall
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._count_s = self._client.register_script(_COUNT)
        self._trial_s = self._client.register_script(_TRIAL)
        self._settle_s = self._client.register_script(_SETTLE)
        self._force_s = self._client.register_script(_FORCE)
        self._lock = threading.Lock()
        self._pending: list[Transition] = []
        # (breaker id, key) -> [(args, tool, session, token, admitted at)]
        self._trials: dict[tuple[str, str], list[tuple[Any, str, str | None, str, float]]] = {}
        # implicit breakers another replica may have opened (id -> open_for): checked by
        # agent id, and made known here when one is seen open
        self._latent = {
            i: _Breaker(BreakerSpec(i, "agent", None, None, None, open_for=span))
            for i, span in (implicit or {}).items()
            if i not in self._by_id
        }

    def __bool__(self) -> bool:
        return bool(self._breakers)

    def _keys(self, b: _Breaker, key: str) -> list[str]:
        base = f"{self.namespace}:breaker:{b.spec.id}:{key}:"
        return [base + "state", base + "win", base + "trials", base + "ok"]

    # --- the decision path ----------------------------------------------------------------

    def check(self, action: Action) -> tuple[str, str] | None:
        """(breaker id, reason) when an open breaker refuses ``action``; else None.

        One MGET of the guarded keys' states; a script only for a key open past its
        probe time or half-open. Redis unreachable: refused.
        """
        plan: list[tuple[_Breaker, str]] = []
        for b in self._for(action.tool):
            key = breaker_key(b.spec, action)
            if key is not None:
                plan.append((b, key))
        if self._latent:
            for b in list(self._latent.values()):
                key = breaker_key(b.spec, action)
                if key is not None:
                    plan.append((b, key))
        if not plan:
            return None
        try:
            names = [self._keys(b, key)[0] for b, key in plan]
            states: list[str | None] = self._client.mget(names)  # type: ignore[assignment]
        except self._errors:
            return plan[0][0].spec.id, f"breaker store unreachable ({self.path}): denying"
        admitted: list[tuple[_Breaker, str]] = []
        refusal: tuple[str, str] | None = None
        for (b, key), s in zip(plan, states, strict=True):
            if s is None or s.startswith("c"):
                continue
            if b.spec.id in self._latent:
                self._adopt(b)
            if s.startswith("o"):
                _, p, pw, _, why = s.split("|", 4)
                if self._clock() < float(p):
                    refusal = b.spec.id, _open_text(b, key, why, float(pw))
                    break
            try:
                refusal = self._trial(b, key, action)
            except self._errors:
                refusal = b.spec.id, f"breaker store unreachable ({self.path}): denying"
            if refusal is not None:
                break
            admitted.append((b, key))
        if refusal is not None and admitted:
            for b, key in admitted:
                self._free(b, key, action)
        return refusal

    def _adopt(self, b: _Breaker) -> None:
        """Make a latent implicit breaker one of ours (another replica opened it)."""
        with self._lock:
            if self._latent.pop(b.spec.id, None) is not None:
                self._breakers = [*self._breakers, b]
                self._by_id[b.spec.id] = b
                self._for.reset(self._breakers)

    def _trial(self, b: _Breaker, key: str, action: Action) -> tuple[str, str] | None:
        spec = b.spec
        token = uuid.uuid4().hex
        now, wall = self._clock(), self._wall()
        lost = f"a trial call did not report within {spec.open_for:g} s"
        verdict, opened, detail = self._trial_s(
            keys=self._keys(b, key),
            args=[repr(now), repr(wall), repr(spec.open_for), spec.probes, token, lost],
        )
        if int(opened):
            why = f"open for {spec.open_for:g} s: admitting {spec.probes} trial calls"
            with self._lock:
                self._pending.append(Transition(spec.id, key, "open", "half_open", why, wall))
        if verdict == "none":
            return None
        if verdict in ("open", "lost"):
            _, _, pw, _, why = detail.split("|", 4)
            if verdict == "lost":
                with self._lock:
                    self._pending.append(Transition(spec.id, key, "half_open", "open", lost, wall))
            return spec.id, _open_text(b, key, why, float(pw))
        if verdict == "full":
            return spec.id, (
                f"breaker `{spec.id}` is half-open for {b.where(key)} "
                f"({detail} of its {spec.probes} trial calls in flight)"
            )
        with self._lock:
            held = self._trials.setdefault((spec.id, key), [])
            horizon = now - 2 * spec.open_for  # Redis forgot these (reopened or lost)
            held[:] = [t for t in held if t[4] >= horizon]
            held.append((action.args, action.tool, action.session, token, now))
        return None

    def _take(self, b: _Breaker, key: str, action: Action) -> str | None:
        """The token of the trial ``action`` holds, forgotten locally; None if it holds none."""
        args, tool, session = action.args, action.tool, action.session
        with self._lock:
            held = self._trials.get((b.spec.id, key))
            if not held:
                return None
            for i, (a, t, s, token, _) in enumerate(held):
                if a is args and t == tool and s == session:
                    del held[i]
                    if not held:
                        del self._trials[(b.spec.id, key)]
                    return token
        return None

    def _free(self, b: _Breaker, key: str, action: Action) -> None:
        token = self._take(b, key, action)
        if token is not None:
            try:
                self._client.hdel(self._keys(b, key)[2], token)
            except self._errors as exc:
                log.warning("breaker store unreachable (%s): trial not freed: %s", self.path, exc)

    def release(self, action: Action) -> None:
        """Free the half-open trial slot ``action`` took in ``check``, when it will not run."""
        if not self._trials:
            return
        for b in self._for(action.tool):
            key = breaker_key(b.spec, action)
            if key is not None:
                self._free(b, key, action)

    # --- outcomes ---------------------------------------------------------------------------

    def record(self, action: Action, status: str) -> list[Transition]:
        """Count one outcome; the transitions it caused, after those of ``check`` since."""
        out = self.drain()
        failed = status in _FAILED
        counts = failed or status == "ok"
        for b in self._for(action.tool):
            key = breaker_key(b.spec, action)
            if key is None:
                continue
            try:
                t = self._record(b, key, action, status, failed, counts)
            except self._errors as exc:
                log.warning("breaker store unreachable (%s): outcome dropped: %s", self.path, exc)
                continue
            if t is not None:
                out.append(t)
        return out

    def _record(
        self, b: _Breaker, key: str, action: Action, status: str, failed: bool, counts: bool
    ) -> Transition | None:
        spec = b.spec
        keys = self._keys(b, key)
        token = self._take(b, key, action) if self._trials else None
        now, wall = self._clock(), self._wall()
        if token is not None:
            got = self._settle_s(
                keys=keys,
                args=[
                    token,
                    int(counts),
                    int(failed),
                    spec.probes,
                    repr(now),
                    repr(wall),
                    repr(spec.open_for),
                    status,
                ],
            )
            if not got:
                return None
            if got[0] == "open":
                return Transition(spec.id, key, "half_open", "open", got[1], wall)
            why = f"{spec.probes} trial calls succeeded"
            return Transition(spec.id, key, "half_open", "closed", why, wall)
        if not counts or not b.counts:
            return None
        width = spec.window / _BUCKETS
        got = self._count_s(
            keys=keys,
            args=[
                int(now // width),
                int(failed),
                -1 if spec.consecutive is None else spec.consecutive,
                -1 if spec.failure_ratio is None else repr(spec.failure_ratio),
                spec.min_calls,
                repr(now),
                repr(wall),
                repr(spec.open_for),
                f"{spec.window:g}",
                max(1, math.ceil((spec.window + width) * 1000)),
            ],
        )
        if not got:
            return None
        return Transition(spec.id, key, got[0], "open", got[1], wall)

    def drain(self) -> list[Transition]:
        """The transitions ``check`` made that no ``record`` has returned yet."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    # --- operators and status ---------------------------------------------------------------

    def force_open(
        self, breaker_id: str, key: str, reason: str, open_for: float | None = None
    ) -> Transition | None:
        """Open ``breaker_id`` for ``key`` now; None if it already was (see ``Breakers``)."""
        latent = self._latent.get(breaker_id)
        if latent is not None and (open_for is None or open_for == latent.spec.open_for):
            self._adopt(latent)
        with self._lock:
            b = self._by_id.get(breaker_id)
            if b is None:
                span = IMPLICIT_OPEN_FOR if open_for is None else open_for
                b = _Breaker(BreakerSpec(breaker_id, "agent", None, None, None, open_for=span))
                self._breakers = [*self._breakers, b]
                self._by_id[breaker_id] = b
                self._for.reset(self._breakers)
        span = b.spec.open_for if open_for is None else open_for
        now, wall = self._clock(), self._wall()
        try:
            got = self._force_s(
                keys=self._keys(b, key), args=[repr(now), repr(wall), repr(span), reason]
            )
        except self._errors as exc:
            raise RuntimeStateError(f"breaker store unreachable ({self.path}): {exc}") from None
        if not got:
            return None
        return Transition(breaker_id, key, got[0], "open", reason, wall)

    def states(self) -> list[BreakerState]:
        """Every key of every breaker, by breaker then key (RuntimeStateError if unreachable)."""
        out: list[BreakerState] = []
        now = self._clock()
        try:
            for b in list(self._breakers):
                prefix = f"{self.namespace}:breaker:{b.spec.id}:"
                match = _glob_escape(prefix) + "*:state"
                names = sorted(self._client.scan_iter(match=match, count=1000))
                keys = sorted(n[len(prefix) : -len(":state")] for n in names)
                bucket = int(now // (b.spec.window / _BUCKETS))
                for key in keys:
                    state_key, win_key = self._keys(b, key)[:2]
                    pipe = self._client.pipeline(transaction=True)
                    pipe.get(state_key)
                    pipe.hgetall(win_key)
                    s, win = pipe.execute()
                    if s is None:
                        continue
                    parts = s.split("|", 4)
                    probe: float | None = None
                    if parts[0] == "open":
                        probe, since = float(parts[2]), float(parts[3])
                    else:
                        since = float(parts[1])
                    calls = fails = 0
                    for i in range(_BUCKETS):
                        if int(win.get(f"e{i}", -1)) > bucket - _BUCKETS:
                            calls += int(win.get(f"c{i}", 0))
                            fails += int(win.get(f"f{i}", 0))
                    out.append(
                        BreakerState(
                            b.spec.id,
                            key,
                            parts[0],
                            since,
                            probe,
                            calls,
                            fails,
                            int(win.get("cons", 0)),
                        )
                    )
        except self._errors as exc:
            raise RuntimeStateError(f"breaker store unreachable ({self.path}): {exc}") from None
        return out

    def close(self) -> None:
        self._client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
