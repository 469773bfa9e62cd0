"""Signed policy bundles: a directory of policies and their tests in one DSSE envelope.

The bundle is an in-toto statement (docs/supply-chain.md, "Signed policy
bundles"): one subject per file, and the files themselves, base64, in the
predicate. Building runs the tests on exactly the bytes that are packed;
loading verifies the signature, then every file against its subject digest,
then loads ``main``. The loaded policy's hash names the signed payload, so
every decision names the bundle it was taken under.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from warden.errors import PolicyError, SupplyChainError
from warden.policy._diagnostics import Diagnostic
from warden.policy.compile import Policy, compile_policy
from warden.policy.load import MAX_FILE_BYTES, PolicyDocument, parse_policy

if TYPE_CHECKING:
    from warden.identity.keys import Identity

__all__ = [
    "BUNDLE_PREDICATE",
    "Bundle",
    "build_bundle",
    "document_of",
    "env_signers",
    "is_bundle",
    "is_test_file",
    "load_bundle",
    "policy_of",
    "read_bundle",
    "unpacked",
]

BUNDLE_PREDICATE: Final = "https://warden.dev/policy-bundle/v1"
_TEST_SUFFIXES: Final = ("_test.yaml", ".test.yaml")
# The first key of a DSSE envelope is one of its three fields; a policy written as JSON
# starts with one of its own fields instead.
_SNIFF: Final = re.compile(rb'\A(?:\xef\xbb\xbf)?\s*\{\s*"(?:payload|payloadType|signatures)"\s*:')


def is_test_file(name: str) -> bool:
    """True for a policy test file name (``*_test.yaml`` or ``*.test.yaml``)."""
    return name.endswith(_TEST_SUFFIXES)


def env_signers() -> tuple[str, ...]:
    """The trusted signers named by ``WARDEN_SIGNERS`` (comma-separated did:key)."""
    raw = os.environ.get("WARDEN_SIGNERS", "")
    return tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that looks like a DSSE envelope (JSON); never raises.

    A sniff of the first bytes only: whether it verifies is load_bundle's business.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except (OSError, TypeError, ValueError):
        return False
    return _SNIFF.match(head) is not None


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle: its files (relative POSIX path to bytes) and which one is ``main``.

    ``digest`` is ``sha256:`` and the hex digest of the signed payload; ``signer``
    is the did:key whose signature was accepted.
    """

    path: str
    main: str
    files: Mapping[str, bytes]
    digest: str
    signer: str

    @property
    def policy_hash(self) -> str:
        """The hash a policy loaded from this bundle carries: ``bundle:sha256:<hex>``."""
        return "bundle:" + self.digest


# --- building ---------------------------------------------------------------------------


def _collect(root: Path) -> dict[str, bytes]:
    """Every policy and test under ``root`` (``*.yaml``, not hidden), by POSIX path."""
    out: dict[str, bytes] = {}
    for file in sorted(root.rglob("*.yaml")):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        name = rel.as_posix()
        try:
            size = file.stat().st_size
            if size > MAX_FILE_BYTES:
                raise SupplyChainError(
                    f"`{file}` is larger than {MAX_FILE_BYTES >> 20} MiB: not packed"
                )
            out[name] = file.read_bytes()
        except OSError as exc:
            raise SupplyChainError(
                f"`{file}`: cannot read: {(exc.strerror or str(exc)).lower()}"
            ) from None
    return {name: data for name, data in sorted(out.items()) if not _other_kind(name, data)}


def _other_kind(name: str, data: bytes) -> bool:
    """True for a YAML document that says it is not a policy (``kind: Deployment``).

    A deployment manifest lives next to its policy; it is not packed. A file
    that does not parse, or names no kind, is taken for a policy (and must load).
    """
    if is_test_file(name):
        return False
    from warden.policy._yaml import parse_yaml

    try:
        tree, _ = parse_yaml(data.decode("utf-8"), name)
    except UnicodeDecodeError:
        return False
    if tree is None or tree.kind != "map" or "kind" not in tree.items:
        return False
    kind = tree.items["kind"][1]
    return kind.kind == "scalar" and isinstance(kind.value, str) and kind.value != "Policy"


def _main_of(files: Mapping[str, bytes], main: str | None, root: Path) -> str:
    policies = [name for name in files if not is_test_file(name)]
    if main is not None:
        wanted = PurePosixPath(main.replace(os.sep, "/")).as_posix()
        if wanted not in policies:
            listed = ", ".join(f"`{p}`" for p in policies) or "none"
            raise SupplyChainError(
                f"main policy `{main}` is not a policy under `{root}` (policies: {listed})"
            )
        return wanted
    if len(policies) == 1:
        return policies[0]
    if not policies:
        raise SupplyChainError(f"no policy under `{root}`: only tests")
    raise SupplyChainError(
        f"{len(policies)} policies under `{root}`: name the main one (`--main`): "
        + ", ".join(f"`{p}`" for p in policies)
    )


@contextlib.contextmanager
def unpacked(files: Mapping[str, bytes]) -> Iterator[Path]:
    """The files written under a fresh temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="warden-bundle-") as tmp:
        root = Path(tmp)
        for name, data in files.items():
            if not _safe_name(name):
                raise SupplyChainError(f"`{name}` is not a relative path inside the bundle")
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield root


def _problems(files: Mapping[str, bytes], root: Path) -> list[str]:
    """Why the files cannot be bundled: policies that do not load, tests that fail."""
    from warden.policy.testing import run_test_file

    report: list[str] = []
    for name, data in files.items():
        if is_test_file(name):
            continue
        shown = str(root / name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.append(f"{shown}: policy_file_error: file is not valid UTF-8 (byte {exc.start})")
            continue
        doc, diags = parse_policy(text, shown, data)
        if doc is None:
            report.extend(d.render() for d in diags if d.severity == "error")
    with unpacked(files) as tmp:
        # The tests run on the very bytes that are packed, not on the directory, which may
        # change meanwhile; a test reaching outside the directory fails, as it would later.
        prefix = str(tmp) + os.sep
        shown_prefix = str(root) + os.sep

        def show(text: str) -> str:
            return text.replace(prefix, shown_prefix)

        for name in files:
            if not is_test_file(name):
                continue
            result = run_test_file(tmp / name)
            report.extend(show(d.render()) for d in result.diagnostics)
            for case in result.cases:
                if not case.passed:
                    report.append(
                        show(f"{case.file}:{case.line}: test failed: {case.note}: ")
                        + "; ".join(case.diff)
                    )
    return report


def build_bundle(
    directory: str | os.PathLike[str], identity: Identity, main: str | None = None
) -> dict[str, Any]:
    """Pack and sign the policies and tests under ``directory``; the DSSE envelope as a dict.

    Every policy must load and every test must pass first: SupplyChainError, with
    one report line per problem, otherwise. ``main`` (a path relative to the
    directory) defaults to the only policy that is not a test.
    """
    from warden.supply.dsse import MAX_ENVELOPE, sha256_hex, sign_statement, statement

    root = Path(directory)
    if not root.is_dir():
        raise SupplyChainError(f"`{root}` is not a directory")
    files = _collect(root)
    if not files:
        raise SupplyChainError(f"no policy files (`*.yaml`) under `{root}`")
    main_name = _main_of(files, main, root)
    report = _problems(files, root)
    if report:
        n = len(report)
        raise SupplyChainError(
            f"the bundle was not built: {n} problem{'s' if n != 1 else ''} under `{root}`"
            f" (first: {report[0]})",
            report,
        )
    stmt = statement(
        [(name, sha256_hex(data)) for name, data in files.items()],
        BUNDLE_PREDICATE,
        {
            "main": main_name,
            "files": {name: base64.b64encode(data).decode("ascii") for name, data in files.items()},
        },
    )
    envelope = sign_statement(stmt, identity)
    if len(envelope["payload"]) > MAX_ENVELOPE:
        raise SupplyChainError(
            f"the bundle would be larger than {MAX_ENVELOPE >> 20} MiB, which no loader reads"
        )
    return envelope


# --- loading ----------------------------------------------------------------------------


def _contents(stmt: Mapping[str, Any]) -> tuple[str | None, dict[str, bytes], list[str]]:
    """``main``, the decoded files and every inconsistency between files and subjects.

    Also run on statements that did not verify (to say what was changed), so it
    must not trust any shape.
    """
    problems: list[str] = []
    predicate = stmt.get("predicate")
    if not isinstance(predicate, dict):
        return None, {}, ["the statement's `predicate` is not a mapping"]
    main = predicate.get("main")
    encoded = predicate.get("files")
    if not isinstance(main, str) or not isinstance(encoded, dict):
        return None, {}, ["the predicate needs `main` (a path) and `files` (a mapping)"]
    subjects: dict[str, str] = {}
    raw_subjects = stmt.get("subject")
    for s in raw_subjects if isinstance(raw_subjects, list) else ():
        name = s.get("name") if isinstance(s, dict) else None
        digest = s.get("digest") if isinstance(s, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str):
            problems.append("a subject is malformed")
        elif name in subjects:
            problems.append(f"`{name}` is a subject twice")
        else:
            subjects[name] = sha.lower()
    from warden.supply.dsse import sha256_hex

    files: dict[str, bytes] = {}
    for name, value in encoded.items():
        if not _safe_name(name):
            problems.append(f"`{name}` is not a relative path inside the bundle")
            continue
        if not isinstance(value, str):
            problems.append(f"`{name}`: its content is not a base64 string")
            continue
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"`{name}`: its content is not valid base64")
            continue
        files[name] = data
        if name not in subjects:
            problems.append(f"`{name}` is in the bundle but not a subject of the statement")
            continue
        found = sha256_hex(data)
        if found != subjects[name]:
            problems.append(
                f"`{name}` does not match its subject digest "
                f"(sha256:{subjects[name][:16]}… signed, sha256:{found[:16]}… in the bundle)"
            )
    problems.extend(
        f"`{name}` is a subject of the statement but not in the bundle"
        for name in subjects
        if name not in encoded
    )
    if main not in encoded:
        problems.append(f"main policy `{main}` is not in the bundle")
    return main, files, problems


def _safe_name(name: str) -> bool:
    """A relative POSIX path that stays inside the directory it is unpacked in."""
    path = PurePosixPath(name)
    return (
        bool(name)
        and "\\" not in name
        and "\0" not in name
        and not path.is_absolute()
        and path.as_posix() == name
        and all(part not in ("", ".", "..") for part in path.parts)
    )


def _unverified_changes(data: bytes) -> list[str]:
    """What is inconsistent in an envelope's unverified payload: a hint for a failed signature."""
    try:
        env = json.loads(data)
        stmt = json.loads(base64.b64decode(env["payload"], validate=True))
        return _contents(stmt)[2] if isinstance(stmt, dict) else []
    except Exception:  # noqa: BLE001 - best effort over untrusted bytes: no hint is fine
        return []


def read_bundle(path: str | os.PathLike[str], trusted: Sequence[str]) -> Bundle:
    """Verify a bundle signed by one of ``trusted`` (did:key) and return its files.

    SupplyChainError when the file cannot be read, the envelope does not verify,
    or any file differs from its subject digest (the report names each).
    """
    from warden.supply.dsse import MAX_ENVELOPE, verify_envelope

    name = str(path)
    try:
        if os.stat(path).st_size > MAX_ENVELOPE:
            raise SupplyChainError(
                f"bundle `{name}`: larger than {MAX_ENVELOPE >> 20} MiB: not a bundle"
            )
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SupplyChainError(
            f"bundle `{name}`: cannot read: {(exc.strerror or str(exc)).lower()}"
        ) from None
    try:
        verified = verify_envelope(data, trusted, BUNDLE_PREDICATE)
    except SupplyChainError as exc:
        changed = _unverified_changes(data)
        if changed:
            raise SupplyChainError(
                f"bundle `{name}`: {exc}; the signed content was changed: {changed[0]}",
                [str(exc), *changed],
            ) from None
        raise SupplyChainError(f"bundle `{name}`: {exc}", exc.report or [str(exc)]) from None
    main, files, problems = _contents(verified.statement)
    if problems or main is None:
        raise SupplyChainError(f"bundle `{name}`: {problems[0]}", problems)
    return Bundle(name, main, files, verified.digest, verified.signer)


def load_bundle(path: str | os.PathLike[str], trusted: Sequence[str]) -> Policy:
    """Verify a bundle and load its main policy (hash ``bundle:sha256:…``, file ``BUNDLE#main``).

    SupplyChainError when it does not verify, PolicyError (diagnostics located in
    ``BUNDLE#main``) when the main policy does not load.
    """
    bundle = read_bundle(path, trusted)
    return policy_of(bundle)


def policy_of(bundle: Bundle) -> Policy:
    """Load a verified bundle's main policy; PolicyError when it does not load."""
    doc, diags = document_of(bundle)
    if doc is None:
        raise PolicyError([d for d in diags if d.severity == "error"])
    return compile_policy(doc)


def document_of(bundle: Bundle) -> tuple[PolicyDocument | None, list[Diagnostic]]:
    """Check a verified bundle's main policy, located in ``BUNDLE#main``, with the bundle's hash."""
    filename = f"{bundle.path}#{bundle.main}"
    raw = bundle.files[bundle.main]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"file is not valid UTF-8 (byte {exc.start})"
        return None, [Diagnostic(filename, 0, 0, "policy_file_error", message)]
    doc, diags = parse_policy(text, filename, raw)
    if doc is None:
        return None, diags
    return dataclasses.replace(doc, hash=bundle.policy_hash), diags
