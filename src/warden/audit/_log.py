"""AuditLog: the Governor's default sink, with group commit off the decision path.

``record`` / ``record_outcome`` / ``append`` only put an item on a bounded
queue (O(1), no I/O). A writer thread builds the records, encodes them and
commits them in batches (100 entries or 10 ms, whichever comes first; see
docs/audit.md). ``flush`` waits until everything appended before it is
durable. If the queue is full or the writer has failed, appending raises
AuditError, which the Governor turns into a deny.

The store is SQLite (``audit.db``) unless ``WARDEN_DATABASE_URL`` names a
PostgreSQL database (docs/fleet.md); any ``AuditBackend`` can be passed in.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Final

from warden._closing import Closing
from warden.audit._checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    load_or_create_key,
    sign_checkpoint,
)
from warden.audit._events import decision_event, outcome_event, rfc3339
from warden.audit._store import AuditBackend, open_backend
from warden.errors import AuditError

__all__ = ["AuditLog"]

_DECISION: Final = 0
_OUTCOME: Final = 1
_RAW: Final = 2
_FLUSH: Final = 3
_IDLE_POLL: Final = 0.1


class AuditLog(Closing):
    """An append-only, Merkle-tree audit log (docs/audit.md).

    ``path`` is the SQLite file, or with ``WARDEN_DATABASE_URL`` set the local
    anchor of the fleet's log on PostgreSQL (its key files and spool sit beside
    it). ``store`` overrides that choice; the log closes it when it closes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ".warden/audit.db",
        *,
        store: AuditBackend | None = None,
        key_path: str | os.PathLike[str] | None = None,
        batch_size: int = 100,
        batch_interval: float = 0.010,
        max_queue: int = 100_000,
        checkpoint_every: int = 10_000,
        clock: Any = time.time,
    ) -> None:
        if batch_size < 1 or batch_interval < 0 or max_queue < 1:
            raise AuditError("batch_size and max_queue must be positive")
        self.path = Path(path)
        self.store: AuditBackend = open_backend(self.path) if store is None else store
        try:
            self._start(key_path)
            self._size = self._last_checkpoint = self.store.size()
        except BaseException:
            self.store.close()
            raise
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.max_queue = max_queue
        self.checkpoint_every = checkpoint_every
        self.clock = clock
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._cond = threading.Condition()
        self._urgent = False
        self._closing = False
        self._error: BaseException | None = None
        self._spooled = False  # the last batch was accepted but not yet placed in the log
        self._writer = threading.Thread(target=self._run, name="warden-audit-writer", daemon=True)
        self._writer.start()
        _OPEN.add(self)

    def _start(self, key_path: str | os.PathLike[str] | None) -> None:
        """Load the signing key, and bind the log to it on first use."""
        origin = self.store.origin
        key_file = (
            Path(key_path)
            if key_path is not None
            else self.path.with_name(self.path.stem + "-key.pem")
        )
        _refuse_shared_key(key_file, origin)
        self.signer = NoteSigner(origin, load_or_create_key(key_file, origin))
        vkey = self.signer.verifier.to_string()
        known = self.store.meta("verifier")
        if known is None:
            self.store.set_meta("verifier", vkey)
        elif known != vkey:
            raise AuditError(
                f"{self.path}: this log is signed by another key ({known.split('+')[1]}); "
                f"`{key_file}` does not match it"
            )

    @property
    def verifier(self) -> NoteVerifier:
        """The public key that verifies this log's checkpoints."""
        return self.signer.verifier

    # --- appending (the decision path) ------------------------------------------------------

    def _put(self, item: tuple[Any, ...], *, bounded: bool = True) -> None:
        # No lock on the fast path: deque.append is atomic, and the writer is woken only
        # when the queue turns non-empty (it holds the lock between its emptiness check
        # and its wait, so that wake-up cannot be lost) or reaches a full batch.
        if self._error is not None:
            raise AuditError(f"the audit log writer failed: {self._error}")
        if self._closing:
            raise AuditError("the audit log is closed")
        queue = self._queue
        if bounded and len(queue) >= self.max_queue:
            raise AuditError(f"the audit queue is full ({self.max_queue} records waiting)")
        queue.append(item)
        n = len(queue)
        if n in (1, self.batch_size):
            with self._cond:
                self._cond.notify()

    def record(self, action: Any, decision: Any) -> None:
        """DecisionSink: queue a ``warden.decision/v1`` record (arguments copied shallowly)."""
        self._put((_DECISION, self.clock(), action, dict(action.args), decision))

    def record_outcome(
        self,
        action: Any,
        decision: Any,
        status: str,
        duration_ns: int,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Queue a ``warden.outcome/v1`` record for the action ``decision`` allowed."""
        self._put((_OUTCOME, self.clock(), action, decision, status, duration_ns, result, error))

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record of another type (it must carry a ``type``; ``seq`` is assigned).

        A record without a ``time`` gets the current one.
        """
        if not isinstance(record.get("type"), str) or "seq" in record:
            raise AuditError("a record needs a string `type` and no `seq`")
        self._put((_RAW, {"time": rfc3339(self.clock()), **record}))

    def flush(self, timeout: float | None = 30.0) -> int:
        """Wait until every record appended before this call is durable; return the log size.

        While the store spools (PostgreSQL unreachable), durable means in the spool,
        and the size is the one last seen: spooled records are not counted yet.
        """
        done = threading.Event()
        self._put((_FLUSH, done), bounded=False)  # a flush must be able to wait out a full queue
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
        if not done.wait(timeout):
            raise AuditError(f"audit flush timed out after {timeout} s")
        if self._error is not None:
            raise AuditError(f"the audit log writer failed: {self._error}")
        try:
            return self.store.size()
        except AuditError:
            if self._spooled:
                return self._size
            raise

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Flush, then sign, store and return a checkpoint of the current tree."""
        self.flush()
        return self._sign_now()

    def _sign_now(self) -> str:
        size = self.store.size()
        cp = Checkpoint(self.store.origin, size, self.store.root(size), ())
        note = sign_checkpoint(cp, self.signer)
        self.store.add_checkpoint(size, note)
        self._last_checkpoint = size
        return note

    # --- the writer -------------------------------------------------------------------------

    def _build(
        self, item: tuple[Any, ...], unrecordable: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The record for a queued item; with ``unrecordable``, one without its payload."""
        kind = item[0]
        stub = None if unrecordable is None else {"unrecordable": unrecordable}
        if kind == _DECISION:
            _, t, action, args, decision = item
            return decision_event(
                t=t,
                decision_id=decision.id,
                action=action,
                decision=decision,
                args=args if stub is None else stub,
            )
        if kind == _OUTCOME:
            _, t, action, decision, status, duration, result, error = item
            return outcome_event(
                t=t,
                decision_id=decision.id,
                action=action,
                status=status,
                duration_ns=duration,
                result=result if stub is None else stub,
                error=error if stub is None else None,
            )
        if stub is not None:
            return {"type": "warden.unrecordable/v1", "reason": unrecordable}, True
        record: dict[str, Any] = item[1]
        return record, False

    def _build_safely(self, item: tuple[Any, ...]) -> tuple[dict[str, Any], bool]:
        """Build a record; one that cannot be built still leaves a record, never a dead writer."""
        try:
            return self._build(item)
        except Exception as exc:  # noqa: BLE001 - e.g. a __repr__ or a Mapping that raises
            return self._build(item, f"{type(exc).__name__} while building the record")

    def _run(self) -> None:
        queue = self._queue
        while True:
            with self._cond:
                while not queue and not self._closing:
                    # The timeout covers the rare lost wake-up of the lock-free _put (two
                    # threads appending to an empty queue at once both see a length of 2).
                    self._cond.wait(_IDLE_POLL)
                if not queue and self._closing:
                    return
                deadline = time.monotonic() + self.batch_interval
                while len(queue) < self.batch_size and not self._closing and not self._urgent:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._urgent = False
            # Group commit: when the writer is behind, one fsync covers up to ten batches'
            # worth of records instead of falling further behind.
            take = min(self.batch_size * 10, len(queue))
            items = [queue.popleft() for _ in range(take)]
            flushes = [it[1] for it in items if it[0] == _FLUSH]
            try:
                built = [self._build_safely(it) for it in items if it[0] != _FLUSH]
                if built:
                    first, size = self.store.append_batch(
                        [r for r, _ in built], [f for _, f in built]
                    )
                    self._spooled = first < 0
                    self._size = size
                    if (
                        not self._spooled
                        and self.checkpoint_every
                        and size - self._last_checkpoint >= self.checkpoint_every
                    ):
                        # the records are durable: a checkpoint that fails now (the store
                        # went away after the commit) is tried again after the next batch
                        with contextlib.suppress(AuditError):
                            self._sign_now()
            except BaseException as exc:  # noqa: BLE001 - reported to every appender and flusher
                self._error = exc
                for it in (*items, *queue):
                    if it[0] == _FLUSH:
                        it[1].set()
                return
            for done in flushes:
                done.set()

    def close(self) -> None:
        """Flush, write a final checkpoint, stop the writer and close the file."""
        with self._cond:
            if self._closing:
                return
        try:
            if self._error is None:
                self.flush()
                try:
                    if (
                        self.store.size() != self._last_checkpoint
                        or self.store.latest_checkpoint() is None
                    ):
                        self._sign_now()
                except AuditError:
                    # the store is away and the tail is spooled: it is signed by whichever
                    # writer runs once it has shipped
                    if not self._spooled:
                        raise
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._writer.join(timeout=30)
            self.store.close()
            _OPEN.discard(self)


def _refuse_shared_key(key_file: Path, origin: str) -> None:
    """One signing key file serves one log: its ``.pub`` names the log it signs for."""
    pub = key_file.with_suffix(".pub")
    try:
        text = pub.read_text().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(f"{pub}: cannot read ({exc.strerror})") from None
    try:
        name = NoteVerifier.from_string(text).name
    except Exception:  # noqa: BLE001 - a damaged .pub is rewritten from the private key
        return
    if name != origin:
        raise AuditError(
            f"{key_file} already signs for `{name}`; give this log (`{origin}`) its own key_path"
        )


_OPEN: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for log in list(_OPEN):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            log.close()
