"""The YAML case corpus under tests/cases/, one pytest item per case.

The files are in the test-file format of docs/policy-language.md ("Test files") and
are run by :func:`warden.policy.testing.run_test_file`, the same code behind
`warden policy test`. Items are named ``file::note`` so a failure names its case.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

from warden.policy.testing import FileResult, discover, run_test_file

CASES_DIR = Path(__file__).parent / "cases"
FILES = discover([CASES_DIR])


def _planned(path: Path) -> list[str]:
    """The notes of a file's cases in order (``want_errors`` for a load-error file).

    Composed, not loaded: load-error files hold YAML (tags, dates) no loader should build.
    """
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    top = {k.value: v for k, v in root.value}
    if "want_errors" in top:
        return ["want_errors"]
    return [
        next(v.value for k, v in case.value if k.value == "note") for case in top["cases"].value
    ]


PLAN = {path: _planned(path) for path in FILES}
ITEMS = [(path, i) for path, notes in PLAN.items() for i in range(len(notes))]


@functools.cache
def _run(path: Path) -> FileResult:
    return run_test_file(path)


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 12
    assert len(ITEMS) >= 150


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_file_is_well_formed(path: Path) -> None:
    """No file-level diagnostics, unique notes, and one result per planned case."""
    result = _run(path)
    assert [d.render() for d in result.diagnostics] == []
    notes = PLAN[path]
    assert len(set(notes)) == len(notes), "notes must be unique within a file"
    assert [c.note for c in result.cases] == notes


@pytest.mark.parametrize(
    ("path", "index"), ITEMS, ids=[f"{p.name}::{PLAN[p][i]}" for p, i in ITEMS]
)
def test_case(path: Path, index: int) -> None:
    result = _run(path)
    assert not result.diagnostics, [d.render() for d in result.diagnostics]
    case = result.cases[index]
    assert case.note == PLAN[path][index]
    if not case.passed:
        pytest.fail(f"{path.name}:{case.line}: {case.note}\n  " + "\n  ".join(case.diff))
