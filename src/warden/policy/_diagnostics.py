"""Diagnostics about a user's file: location, stable code, message, hint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One finding, rendered as ``file:line:col: code: message``.

    ``line`` and ``col`` are 1-based; 0 means the whole file. Codes are
    snake_case and prefixed by the stage that found them (``policy_``,
    ``expr_``, ``lint_``, ``test_``).
    """

    file: str
    line: int
    col: int
    code: str
    message: str
    severity: Severity = "error"
    hint: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        sev = "warning: " if self.severity == "warning" else ""
        return f"{where}: {sev}{self.code}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }
        if self.hint:
            out["hint"] = self.hint
        return out
