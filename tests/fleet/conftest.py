"""The fleet fault tests restart the shared PostgreSQL and Redis: they run only when asked.

`make fault-test` runs them, serially, with ``WARDEN_FAULT_TESTS=1``;
otherwise they are deselected, so the parallel main run never sees a restart.
"""

from __future__ import annotations

import os

import pytest

MARKER = "fleet_faults"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: restarts the shared PostgreSQL and Redis (run with WARDEN_FAULT_TESTS=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("WARDEN_FAULT_TESTS") == "1":
        return
    keep = [item for item in items if item.get_closest_marker(MARKER) is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
