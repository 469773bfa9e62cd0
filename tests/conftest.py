"""Shared test setup: every test gets its own warden home, so nothing lands in the repo."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _warden_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / ".warden-home"
    monkeypatch.setenv("WARDEN_HOME", str(home))
    return home
