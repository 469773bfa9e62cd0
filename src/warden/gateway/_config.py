"""The gateway's upstream list (``--config servers.yaml``).

Two spellings are read, ``servers:`` and the ``mcpServers:`` of MCP client
configuration files, each a mapping from a server name to::

    command: python              # a string, with `args`, or a list (argv)
    args: [my_server.py]
    env: {API_TOKEN: "..."}      # added to the few variables a server inherits
    cwd: /srv/tools
    # or
    url: http://127.0.0.1:8000/mcp

A server name is letters, digits, ``-`` and ``_``, without ``__`` (the
separator of namespaced tool names) and without ``.`` (the separator of
governed action names, ``mcp.SERVER.TOOL``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from warden.errors import GatewayError
from warden.policy._diagnostics import Diagnostic
from warden.policy._yaml import YNode, parse_yaml

__all__ = ["GatewayError", "Upstream", "check_name", "load_servers"]

_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEYS: Final = frozenset({"command", "args", "env", "cwd", "url"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one upstream server is: a stdio ``command`` (argv) or a streamable-HTTP ``url``.

    ``env`` is added to the few variables a stdio server inherits (PATH,
    HOME, USER, ...; the SDK's default): the gateway's own environment, which
    may hold the agent's secrets, is not passed on.
    """

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def describe(self) -> str:
        return self.url if self.url is not None else " ".join(self.command)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name an upstream server, or None if it can."""
    if not _NAME.fullmatch(name):
        return f"server name `{name}` must be 1-64 letters, digits, `-` or `_`"
    if "__" in name:
        return f"server name `{name}` must not contain `__` (it separates SERVER__TOOL)"
    return None


def load_servers(path: str | Path) -> list[Upstream]:
    """The upstreams a servers file names; GatewayError listing every problem found."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GatewayError(f"{filename}: cannot read: {reason.lower()}") from None
    tree, diags = parse_yaml(text, filename)
    errors = [_rename(d) for d in diags if d.severity == "error"]
    out: list[Upstream] = []
    if tree is not None and not errors:
        out = _servers(tree, filename, errors)
    if errors:
        errors.sort()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise GatewayError(errors[0].render() + more, errors)
    return out


def _rename(d: Diagnostic) -> Diagnostic:
    code = "mcp_config_" + d.code.removeprefix("policy_")
    return Diagnostic(d.file, d.line, d.col, code, d.message, d.severity, d.hint)


def _err(errors: list[Diagnostic], filename: str, node: YNode, message: str) -> None:
    errors.append(Diagnostic(filename, node.line, node.col, "mcp_config_error", message))


def _servers(tree: YNode, filename: str, errors: list[Diagnostic]) -> list[Upstream]:
    if tree.kind != "map":
        _err(errors, filename, tree, "the file must be a mapping with a `servers` key")
        return []
    keys = [k for k in ("servers", "mcpServers") if k in tree.items]
    if len(keys) != 1:
        _err(errors, filename, tree, "the file needs one of `servers` or `mcpServers`")
        return []
    for key, (knode, _) in tree.items.items():
        if key != keys[0]:
            _err(errors, filename, knode, f"unknown key `{key}` (known: servers, mcpServers)")
    node = tree.items[keys[0]][1]
    if node.kind != "map" or not node.items:
        _err(errors, filename, node, f"`{keys[0]}` must map server names to servers")
        return []
    out: list[Upstream] = []
    for name, (knode, snode) in node.items.items():
        problem = check_name(name)
        if problem is not None:
            _err(errors, filename, knode, problem)
            continue
        server = _server(name, snode, filename, errors)
        if server is not None:
            out.append(server)
    return out


def _strings(node: YNode, what: str, filename: str, errors: list[Diagnostic]) -> list[str] | None:
    if node.kind != "seq" or not all(
        v.kind == "scalar" and isinstance(v.value, str) for v in node.seq
    ):
        _err(errors, filename, node, f"{what} must be a list of strings")
        return None
    return [v.value for v in node.seq]


def _server(name: str, node: YNode, filename: str, errors: list[Diagnostic]) -> Upstream | None:
    if node.kind != "map":
        _err(errors, filename, node, f"server `{name}` must be a mapping (`command` or `url`)")
        return None
    before = len(errors)
    for key, (knode, _) in node.items.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            _err(
                errors, filename, knode, f"unknown key `{key}` in server `{name}` (known: {known})"
            )
    items = {k: v for k, (_, v) in node.items.items()}
    if ("command" in items) == ("url" in items):
        _err(errors, filename, node, f"server `{name}` needs exactly one of `command` or `url`")
        return None
    command: list[str] = []
    url: str | None = None
    if "url" in items:
        unode = items["url"]
        if not isinstance(unode.value, str) or not re.match(r"https?://", unode.value):
            _err(errors, filename, unode, f"`url` of server `{name}` must be an http(s) URL")
        else:
            url = unode.value
        for key in ("args", "env", "cwd"):
            if key in items:
                _err(errors, filename, items[key], f"`{key}` applies to a `command`, not a `url`")
    else:
        cnode = items["command"]
        if cnode.kind == "scalar" and isinstance(cnode.value, str) and cnode.value:
            command = [cnode.value]
        elif cnode.kind == "seq":
            command = _strings(cnode, f"`command` of server `{name}`", filename, errors) or []
            if not command:
                _err(errors, filename, cnode, f"`command` of server `{name}` is empty")
        else:
            _err(errors, filename, cnode, f"`command` of server `{name}` must be a string or list")
        if "args" in items:
            command += _strings(items["args"], f"`args` of server `{name}`", filename, errors) or []
    env: dict[str, str] = {}
    if "env" in items:
        enode = items["env"]
        if enode.kind != "map" or not all(
            v.kind == "scalar" and isinstance(v.value, str) for _, v in enode.items.values()
        ):
            _err(errors, filename, enode, f"`env` of server `{name}` must map names to strings")
        else:
            env = {k: v.value for k, (_, v) in enode.items.items()}
    cwd: str | None = None
    if "cwd" in items:
        wnode = items["cwd"]
        if not isinstance(wnode.value, str):
            _err(errors, filename, wnode, f"`cwd` of server `{name}` must be a string")
        else:
            cwd = wnode.value
    if len(errors) > before:
        return None
    return Upstream(name, tuple(command), url, env, cwd)
