"""Shared fixtures of the supply-chain tests: a trusted signer and a stranger (fixed seeds)."""

from __future__ import annotations

import pytest

from warden.identity.keys import Identity


@pytest.fixture(scope="module")
def signer() -> Identity:
    return Identity.from_seed(b"s" * 32)


@pytest.fixture(scope="module")
def stranger() -> Identity:
    return Identity.from_seed(b"x" * 32)
