"""Content scanners: injected instructions, hidden Unicode, secrets and PII (docs/flows.md).

``scan_content`` is the scanner for tool results and action arguments
(docs/scanners.md); ``scan_text`` and the rest are the text checks that the MCP
gateway's tool-listing scanner (``warden.gateway.scan``) is built on.
"""

from warden.scan._content import PII_KINDS, REDACT_KINDS, ContentScan, redact_text, scan_content
from warden.scan._rules import CONTENT_RULES, ContentRule
from warden.scan._text import (
    DEFAULT_SEVERITY,
    HIDDEN_INSTRUCTION_RULES,
    SEVERITIES,
    Finding,
    Rule,
    normalize,
    scan_text,
    severity_at_least,
    skeleton,
)
from warden.scan.identifiers import Identifier

__all__ = [
    "CONTENT_RULES",
    "DEFAULT_SEVERITY",
    "HIDDEN_INSTRUCTION_RULES",
    "PII_KINDS",
    "REDACT_KINDS",
    "SEVERITIES",
    "ContentRule",
    "ContentScan",
    "Finding",
    "Identifier",
    "Rule",
    "normalize",
    "redact_text",
    "scan_content",
    "scan_text",
    "severity_at_least",
    "skeleton",
]
