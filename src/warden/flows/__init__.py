"""Provenance of data: labels on what enters a session, on actions, and the flow step.

Specified in docs/flows.md.
"""

from warden.flows._control import FlowHit, Flows, compile_scope, evaluate_with_flows
from warden.flows._session import DROPPED, INTEGRITY, MAX_KEYS, SECRET, USER, Scope, SessionFlow

__all__ = [
    "DROPPED",
    "INTEGRITY",
    "MAX_KEYS",
    "SECRET",
    "USER",
    "FlowHit",
    "Flows",
    "Scope",
    "SessionFlow",
    "compile_scope",
    "evaluate_with_flows",
]
