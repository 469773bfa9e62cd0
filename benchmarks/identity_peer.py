"""The responder process for the handshake benchmark (benchmarks/bench_identity.py).

Usage: ``python identity_peer.py WORKDIR AUDIENCE ROUNDS``. WORKDIR holds
``root.pem`` and ``peer.pem`` (unencrypted PKCS#8). Prints the port, then answers
ROUNDS handshakes, one connection each, and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from warden.identity import Identity, Verifier, issue
from warden.identity.handshake import Responder
from warden.identity.transport import accept, listen


def _load(path: Path) -> Identity:
    return Identity(load_pem_private_key(path.read_bytes(), None))  # type: ignore[arg-type]


def main() -> int:
    work, audience, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    root, me = _load(work / "root.pem"), _load(work / "peer.pem")
    cred = issue(root, me.did, ["chat.*"], audience=audience, ttl=3600)
    responder = Responder(me, cred, Verifier([root.did], audience))
    listener = listen("127.0.0.1", 0)
    print(listener.getsockname()[1], flush=True)
    for _ in range(rounds):
        transport = accept(listener, accept_timeout=60.0)
        try:
            responder.respond(transport)
        finally:
            transport.close()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
