"""Choosing the backend from the environment (docs/fleet.md, "Choosing the backend")."""

from __future__ import annotations

import pytest

from warden.errors import ConfigurationError
from warden.store import FleetConfig


def test_embedded_by_default() -> None:
    config = FleetConfig.from_env({})
    assert config == FleetConfig(None, None, "warden")
    assert not config.fleet


def test_fleet_urls_and_namespace() -> None:
    config = FleetConfig.from_env(
        {
            "WARDEN_REDIS_URL": "redis://127.0.0.1:6379/0",
            "WARDEN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
            "WARDEN_FLEET_NAMESPACE": "prod_eu",
        }
    )
    assert config.fleet
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.namespace == "prod_eu"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WARDEN_REDIS_URL": "http://127.0.0.1:6379"},
            "WARDEN_REDIS_URL must start with redis://",
        ),
        ({"WARDEN_REDIS_URL": "redis://127.0.0.1:notaport"}, "WARDEN_REDIS_URL is not a URL"),
        ({"WARDEN_DATABASE_URL": "mysql://x/y"}, "WARDEN_DATABASE_URL must start with postgres://"),
        ({"WARDEN_REDIS_URL": "redis:///0"}, "WARDEN_REDIS_URL names no host"),
        ({"WARDEN_FLEET_NAMESPACE": "Prod-1"}, "WARDEN_FLEET_NAMESPACE `Prod-1`"),
    ],
)
def test_a_wrong_setting_is_an_error_not_a_fallback(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        FleetConfig.from_env(env)
    assert str(err.value).startswith(message)
