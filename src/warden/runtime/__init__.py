"""Runtime containment: rings, the kill switch, the sandbox, sagas and budgets.

The specification is docs/runtime.md. The Governor owns a ``Runtime``
(``warden.runtime.control``); the sandbox (``warden.runtime.sandbox``) and
sagas (``warden.runtime.saga``) are imported on use.
"""
