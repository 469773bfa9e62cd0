"""Policies: load (YAML) → check → compile (indexed) → evaluate, plus lint and tests.

The language is specified in docs/policy-language.md.
"""

from __future__ import annotations

import os

from warden.errors import PolicyError
from warden.policy._diagnostics import Diagnostic
from warden.policy.compile import Policy, compile_policy
from warden.policy.evaluate import RuleTrace, Trace, evaluate, explain
from warden.policy.lint import lint
from warden.policy.load import API_VERSION, PolicyDocument, RuleSpec, load_file, parse_policy

__all__ = [
    "API_VERSION",
    "Diagnostic",
    "Policy",
    "PolicyDocument",
    "RuleSpec",
    "RuleTrace",
    "Trace",
    "compile_policy",
    "evaluate",
    "explain",
    "lint",
    "load_policy",
    "load_policy_text",
    "parse_policy",
]


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load, check and compile a policy file; raise PolicyError with every diagnostic."""
    doc, diags = load_file(path)
    if doc is None:
        raise PolicyError([d for d in diags if d.severity == "error"])
    return compile_policy(doc)


def load_policy_text(text: str, filename: str = "<policy>") -> Policy:
    """Load, check and compile a policy from a string."""
    doc, diags = parse_policy(text, filename)
    if doc is None:
        raise PolicyError([d for d in diags if d.severity == "error"])
    return compile_policy(doc)
