"""`warden.__all__` is exactly what docs/api.md promises, and every name resolves."""

from __future__ import annotations

import re
from pathlib import Path

import warden

DOC = Path(__file__).parents[1] / "docs" / "api.md"


def documented() -> set[str]:
    rows = [ln for ln in DOC.read_text().splitlines() if ln.startswith("| `")]
    return {m.group(1) for ln in rows if (m := re.match(r"\| `([A-Za-z_]+)` \|", ln))}


def test_all_matches_the_docs() -> None:
    assert set(warden.__all__) == documented()


def test_every_exported_name_exists() -> None:
    for name in warden.__all__:
        assert getattr(warden, name) is not None, name


def test_errors_share_one_root() -> None:
    errors = [
        getattr(warden, n)
        for n in warden.__all__
        if n.endswith(("Error", "Denied", "Required", "Blocked"))
    ]
    assert errors
    for cls in errors:
        assert issubclass(cls, warden.WardenError), cls
