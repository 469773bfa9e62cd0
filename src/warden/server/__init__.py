"""``warden serve``: the decision service over HTTP (docs/fleet.md, "`warden serve`").

``create_app(governor, tokens)`` is a Starlette application: the versioned
JSON routes under ``/v1``, ``/healthz`` and ``/metrics``. ``TokenStore``
holds the bearer tokens (their SHA-256 only) with their subject and scopes.
"""

from warden.server._app import API_V1, create_app
from warden.server._tokens import PREFIX, SCOPES, Token, TokenStore, parse_scopes
from warden.server._wire import MAX_BODY

__all__ = [
    "API_V1",
    "MAX_BODY",
    "PREFIX",
    "SCOPES",
    "Token",
    "TokenStore",
    "create_app",
    "parse_scopes",
]
