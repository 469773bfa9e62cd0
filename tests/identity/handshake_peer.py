"""A responder in its own process, for the two-process handshake tests.

Usage: ``python handshake_peer.py WORKDIR CONNECTIONS [--require-tool TOOL]``.
WORKDIR holds ``keys/responder.pem`` (a KeyStore), ``responder.cred``, ``root.did``
and ``audience``. The peer listens on 127.0.0.1, prints ``PORT <n>``, then for
each connection prints one JSON line: the session it agreed (the key only as its
SHA-256) or the error. After a successful handshake it opens one envelope from
the initiator and answers with an envelope carrying ``echo:`` + the body.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from warden.errors import HandshakeError, IdentityError
from warden.identity import KeyStore, Verifier
from warden.identity.handshake import PeerPolicy, Responder
from warden.identity.transport import accept, listen


def main() -> int:
    work = Path(sys.argv[1])
    connections = int(sys.argv[2])
    require_tool = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--require-tool" else None
    identity = KeyStore(work / "keys").load("responder")
    verifier = Verifier([(work / "root.did").read_text()], (work / "audience").read_text())
    policy = PeerPolicy(require_tool=require_tool) if require_tool else None
    responder = Responder(identity, (work / "responder.cred").read_text(), verifier, policy=policy)
    listener = listen("127.0.0.1", 0)
    print("PORT", listener.getsockname()[1], flush=True)
    for _ in range(connections):
        transport = accept(listener, accept_timeout=30.0)
        try:
            session = responder.respond(transport)
            body = session.reader().open(transport.recv())
            transport.send(session.writer().seal(b"echo:" + body))
        except IdentityError as exc:  # HandshakeError or EnvelopeError
            print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
            continue
        finally:
            transport.close()
        line = {
            "ok": True,
            "id": session.id,
            "key_sha256": hashlib.sha256(session.key).hexdigest(),
            "peer": session.peer_did,
            "purpose": session.purpose,
            "body": body.decode(),
        }
        print(json.dumps(line), flush=True)
    listener.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HandshakeError as exc:
        print(json.dumps({"ok": False, "fatal": str(exc)}), flush=True)
        sys.exit(1)
