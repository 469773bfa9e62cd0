"""Policy changes reach every replica through Redis (docs/fleet.md, "Policy changes").

Two Governors, each with its own home and a ``PolicyFollower`` on one fresh
namespace, stand for two replicas. ``warden policy publish`` runs through
click's CliRunner with the namespace in its environment.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from click.testing import CliRunner, Result

from warden import Action, Effect, Governor
from warden.cli import cli
from warden.identity.keys import Identity
from warden.store.policy import PolicyFollower
from warden.supply.bundle import build_bundle

REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


# Skipped without Redis, except in CI (or with WARDEN_REQUIRE_REDIS) where it must run.
pytestmark = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_REDIS") or os.environ.get("CI")) and not _redis_up(),
    reason=f"no Redis at {REDIS_URL} (set WARDEN_TEST_REDIS_URL)",
)


def policy_text(name: str, effect: str = "allow") -> str:
    return f"""apiVersion: warden/v1
kind: Policy
name: {name}
default: deny
rules:
  - id: read
    tool: db.read
    effect: {effect}
"""


BROKEN = "apiVersion: warden/v1\nkind: Policy\nname: broken\nrules: [{id: x, effect: maybe}]\n"


def eventually(check: Callable[[], T], timeout: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: last {value!r}")
        time.sleep(0.001)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"wt_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(autouse=True)
def _no_fleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WARDEN_REDIS_URL", "WARDEN_DATABASE_URL", "WARDEN_FLEET_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WARDEN_STRICT", raising=False)
    monkeypatch.delenv("WARDEN_SIGNERS", raising=False)


def publish(namespace: str, path: Path, *extra: str) -> Result:
    env = {"WARDEN_REDIS_URL": REDIS_URL, "WARDEN_FLEET_NAMESPACE": namespace}
    return CliRunner().invoke(cli, ["policy", "publish", str(path), *extra], env=env)


def effect(gov: Governor) -> tuple[Effect, str]:
    decision = gov.check(Action(tool="db.read"))
    return decision.effect, decision.policy_hash


@pytest.fixture
def replicas(tmp_path: Path, namespace: str) -> Iterator[list[tuple[Governor, PolicyFollower]]]:
    start = tmp_path / "start.yaml"
    start.write_text(policy_text("start", "deny"))
    out = []
    for i in range(2):
        gov = Governor.from_policy(start, home=tmp_path / f"home{i}", audit=False)
        out.append((gov, PolicyFollower(gov, REDIS_URL, namespace)))
    yield out
    for gov, follower in out:
        follower.close()
        gov.runtime.close()


def test_publish_reaches_both_replicas(
    tmp_path: Path, namespace: str, replicas: list[tuple[Governor, PolicyFollower]]
) -> None:
    for gov, _ in replicas:
        assert effect(gov)[0] is Effect.DENY
    latencies = []
    for n in range(20):
        path = tmp_path / f"p{n}.yaml"
        path.write_text(policy_text(f"p{n}", "allow" if n % 2 == 0 else "deny"))
        started = time.perf_counter()
        result = publish(namespace, path, "--by", "alice")
        assert result.exit_code == 0, result.output
        want = Effect.ALLOW if n % 2 == 0 else Effect.DENY
        for gov, _ in replicas:
            eventually(
                lambda gov=gov, want=want, name=f"p{n}": (
                    effect(gov)[0] is want and gov.policy.name == name
                )
            )
        latencies.append(time.perf_counter() - started)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    stored = client.hgetall(f"{namespace}:policy")
    client.close()
    assert base64.b64decode(stored["bytes"]).decode() == policy_text("p19", "deny")
    assert stored["by"] == "alice" and stored["hash"] == replicas[0][0].policy.hash  # type: ignore[union-attr]
    median = statistics.median(latencies) * 1000
    print(
        f"\npublish (CLI, incl. load check) to both replicas applied: median {median:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms over {len(latencies)}"
    )
    assert max(latencies) < 2.0


def test_follower_started_late_catches_up(tmp_path: Path, namespace: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text("published"))
    assert publish(namespace, path).exit_code == 0
    start = tmp_path / "start.yaml"
    start.write_text(policy_text("start", "deny"))
    gov = Governor.from_policy(start, home=tmp_path / "late", audit=False)
    with PolicyFollower(gov, REDIS_URL, namespace) as follower:
        assert gov.policy is not None and gov.policy.name == "published"
        assert follower.applied == gov.policy.hash
    gov.runtime.close()


def test_broken_policy_refused_and_forced_one_ignored(
    tmp_path: Path, namespace: str, replicas: list[tuple[Governor, PolicyFollower]]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(policy_text("good"))
    assert publish(namespace, good).exit_code == 0
    for gov, _ in replicas:
        eventually(lambda gov=gov: gov.policy.name == "good")
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = publish(namespace, broken)
    assert result.exit_code == 1
    assert "did not load" in result.output
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    assert client.hget(f"{namespace}:policy", "hash") == replicas[0][0].policy.hash  # type: ignore[union-attr]
    # forced into Redis behind publish's back: the followers keep the good policy
    client.hset(
        f"{namespace}:policy",
        mapping={"bytes": base64.b64encode(BROKEN.encode()).decode(), "hash": "sha256:x"},
    )
    client.publish(f"{namespace}:policy:events", json.dumps({"type": "policy", "hash": "x"}))
    for gov, follower in replicas:
        eventually(lambda follower=follower: follower.error is not None)
        assert gov.policy is not None and gov.policy.name == "good"
        assert effect(gov)[0] is Effect.ALLOW
    client.close()


def test_strict_governor_ignores_untrusted_bundle(tmp_path: Path, namespace: str) -> None:
    signer, stranger = Identity.from_seed(b"s" * 32), Identity.from_seed(b"x" * 32)

    def bundle(name: str, effect_: str, by: Identity) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "policy.yaml").write_text(policy_text(name, effect_))
        out = tmp_path / f"{name}.bundle.json"
        out.write_text(json.dumps(build_bundle(d, by)))
        return out

    trusted = bundle("trusted", "deny", signer)
    gov = Governor.from_policy(
        trusted, strict=True, signers=[signer.did], home=tmp_path / "h", audit=False
    )
    with PolicyFollower(gov, REDIS_URL, namespace) as follower:
        untrusted = bundle("untrusted", "allow", stranger)
        # publish checks it against the signers it is told to trust...
        assert publish(namespace, untrusted, "--trust", signer.did).exit_code == 1
        # ...but an operator trusting the stranger can publish it: the strict replica refuses it
        assert publish(namespace, untrusted, "--trust", stranger.did).exit_code == 0
        eventually(lambda: follower.error is not None)
        assert gov.policy is not None and gov.policy.name == "trusted"
        assert effect(gov)[0] is Effect.DENY
        # a plain policy is refused in strict mode too
        plain = tmp_path / "plain.yaml"
        plain.write_text(policy_text("plain"))
        assert publish(namespace, plain).exit_code == 0
        eventually(lambda: "strict" in (follower.error or ""))
        assert gov.policy.name == "trusted"
        # a bundle by the trusted signer is applied
        good = bundle("good", "allow", signer)
        assert publish(namespace, good, "--trust", signer.did).exit_code == 0
        eventually(lambda: gov.policy is not None and gov.policy.name == "good")
        assert follower.error is None and effect(gov)[0] is Effect.ALLOW
    gov.runtime.close()


def test_publish_needs_redis(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text("p"))
    result = CliRunner().invoke(cli, ["policy", "publish", str(path)])
    assert result.exit_code == 1 and "WARDEN_REDIS_URL" in result.output
