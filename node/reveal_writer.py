"""Where a password reveal is decided and its audit row (and the account's last access)
written (node/reveals.py says what both are).

A password is shown only once the audit row of its reveal is committed (fail closed).
Reveals that arrive together share one transaction and one commit (the store's group
commit, :meth:`node.store.db.Store.submit`). Two writers offer that, behind one interface
(:class:`RevealWriter`):

- :class:`InProcessWriter`: the read in the caller's thread, the commit by the store's
  committer thread, in this process. The default: the CLI, the tests, anything that does
  not serve requests.
- :class:`WriterProcess`: a child process with its own connection and committer, fed over
  a pipe. ``strongroom serve`` uses it. The serving process is limited by its one event
  loop thread; with a committer *thread* each of the loop's SQLite and OpenSSL calls (which
  give the GIL up) lets the committer in, and the loop waits for it to give the GIL back.
  In another process the reveal's read and commit cost the loop one pipe write per reveal
  and one read per batch (measured: bench/gil_handoff.py, bench/retrieval.py,
  docs/benchmarks.md), and on PostgreSQL no round trip at all.

Either way the answer is the password's *ciphertext*; the caller decrypts it
(VaultService.submit_reveal), so the child never holds a key that opens a password.

The child process runs :func:`serve_writes` (its entry point is ``python -m
appliance.reveal_writer``, which also sets its logging up). The pipe carries frames of a
4-byte length and a pickle: first the configuration (database URL and audit key: never on
a command line or in the environment), then one tuple of plain values per reveal (its
sequence number and :class:`RevealRequest`'s fields, :func:`_to_wire`); back come lists of
``(seq, outcome)``, the outcome being the ciphertext or the name of an error and its
message (:func:`_error_of`). Both ends are this program, and the pipe's ends are held by
the node and its child only.

Failure, always closed: a reveal whose batch did not commit is answered AuditWriteError; so
is every reveal waiting when the child dies (its pipe closes), when it cannot take a reveal
within SEND_TIMEOUT, when it has left a reveal unanswered for ANSWER_TIMEOUT (it is taken
for stuck and killed: a child that still reads but never answers would otherwise hold
every caller, and every worker thread of the console, for good), or while it cannot be
restarted (at most once per RESTART_INTERVAL). A new child is started for the next reveal
after one died. A read the child could not make is answered RevealFailed (a server error;
the child logs why).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import pickle
import select
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from node.audit import AuditLog
from node.auth import SessionUser
from node.errors import (
    AUDIT_NOT_WRITTEN,
    AuditWriteError,
    NotFoundError,
    PermissionDeniedError,
    StrongroomError,
    ValidationError,
)
from node.reveals import RevealRequest, check_reveal, record_reveal
from node.roles import Role
from node.store.db import Store, make_engine

log = logging.getLogger("strongroom.reveals")

SEND_TIMEOUT = 2.0  # seconds a reveal may wait for room in the pipe to the child
RESTART_INTERVAL = 1.0  # seconds between two starts of the child
STOP_TIMEOUT = 20.0  # seconds the child may take to write what it holds when the node stops
EXIT_TIMEOUT = 5.0  # seconds from the end of the child's pipe to its exit (then killed)
# seconds the child may leave a reveal unanswered before it is taken for stuck and killed:
# more than a batch can take when it waits its longest for the database's write lock
# (node/store/db.py, SQLITE_BUSY_SECONDS for the writer's turn, as much again at BEGIN)
ANSWER_TIMEOUT = 30.0
WATCH_INTERVAL = 1.0  # seconds between two looks for a reveal unanswered too long
_LENGTH = struct.Struct(">I")


class RevealWriter(Protocol):
    def reveal(self, request: RevealRequest) -> Future[bytes]:
        """Decide ``request`` (node/reveals.py: check_reveal) and write its audit record in
        a group commit. The future holds the password's ciphertext once that record is
        committed; else the error: NotFoundError or PermissionDeniedError (nothing
        written), the ValidationError the reveal was refused with (the refusal recorded),
        AuditWriteError (nothing written: nothing may be shown)."""
        ...

    def on_batch_done(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once per batch whose futures have all been set (from any
        thread; it must be quick and thread-safe)."""
        ...


class InProcessWriter:
    """Reveals decided in the caller's thread and written by the store's committer thread,
    in this process."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    def reveal(self, request: RevealRequest) -> Future[bytes]:
        shown: Future[bytes] = Future()
        try:
            with self._store.reading() as conn:
                record, refusal, ciphertext = check_reveal(conn, request)
        except StrongroomError as exc:
            shown.set_exception(exc)
            return shown

        def committed(done: Future[None]) -> None:
            _settle(shown, _outcome_of(refusal, ciphertext, done))

        self._store.submit(record_reveal(self._audit, record)).add_done_callback(committed)
        return shown

    def on_batch_done(self, listener: Callable[[], None]) -> None:
        self._store.on_batch_done(listener)


# --- frames on a pipe ---------------------------------------------------------------------


def _to_wire(seq: int, request: RevealRequest) -> tuple[Any, ...]:
    """``request`` as a tuple of plain values: a third of the pickling time of the
    dataclasses themselves."""
    actor = request.actor
    return (
        seq,
        request.op,
        actor.id,
        actor.username,
        actor.role.value,
        actor.super_admin,
        actor.full_name,
        request.ip,
        request.account_id,
        request.resource_id,
        request.reason,
        request.ticket,
    )


def _from_wire(values: tuple[Any, ...]) -> tuple[int, RevealRequest]:
    seq, op, uid, username, role, super_admin, full_name, ip, aid, rid, reason, ticket = values
    actor = SessionUser(uid, username, Role(role), super_admin, False, full_name)
    return seq, RevealRequest(op, actor, ip, aid, rid, reason, ticket)


# An answer is the password's ciphertext, or the name of what went wrong and its message.
_NOT_WRITTEN = "not written"  # its batch did not commit
_FAILED = "failed"  # an unexpected error before any write (logged by the child)
_RAISED: dict[str, type[StrongroomError]] = {
    cls.__name__: cls for cls in (NotFoundError, PermissionDeniedError, ValidationError)
}
Outcome = bytes | tuple[str, str]


class RevealFailed(RuntimeError):
    """The writer process could not check a reveal (its log says why): nothing was shown
    or written. Not a StrongroomError: callers answer it as any unexpected server error."""


def _outcome_of(refusal: ValidationError | None, ciphertext: bytes, done: Future[None]) -> Outcome:
    """The answer to a reveal whose audit work ``done`` ended: the ciphertext only once its
    row is committed; the refusal it was recorded with; or "not written" (logged)."""
    error = done.exception()
    if error is not None:
        log.error(
            "a reveal's audit row could not be written",
            exc_info=(type(error), error, error.__traceback__),
        )
        return (_NOT_WRITTEN, "")
    if refusal is not None:
        return (type(refusal).__name__, str(refusal))  # recorded: the attempt is audited
    return ciphertext


def _error_of(outcome: tuple[str, str]) -> Exception:
    kind, message = outcome
    raised = _RAISED.get(kind)
    if raised is not None:
        return raised(message)
    if kind == _FAILED:
        return RevealFailed("the audit writer process could not check a password reveal")
    return _not_written("its batch did not commit")


def _settle(future: Future[bytes], outcome: Outcome) -> None:
    if isinstance(outcome, bytes):
        future.set_result(outcome)
    else:
        future.set_exception(_error_of(outcome))


def frame(value: object) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def unframe(buffer: bytearray) -> Iterator[Any]:
    """The whole frames at the start of ``buffer``, removed from it as they are read."""
    at = 0
    while len(buffer) - at >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer, at)
        end = at + _LENGTH.size + size
        if end > len(buffer):
            break
        # Only this program writes these pipes (module docstring): not untrusted data.
        yield pickle.loads(buffer[at + _LENGTH.size : end])  # noqa: S301
        at = end
    del buffer[:at]


def send_all(fd: int, data: bytes, timeout: float) -> bool:
    """Write all of ``data`` to the non-blocking ``fd``, waiting at most ``timeout`` seconds
    for room; False if it could not (the reader is gone, or stuck)."""
    view = memoryview(data)
    deadline: float | None = None
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            if now >= deadline:
                return False
            select.select([], [fd], [], deadline - now)
        except OSError:  # EPIPE: the child is gone (SIGPIPE is ignored by Python)
            return False
    return True


# --- the node's side of the child process -----------------------------------------------------


class _Child:
    """One run of the child process and what it has not answered yet."""

    def __init__(self, proc: subprocess.Popen[bytes], send_fd: int, recv_fd: int) -> None:
        self.proc = proc
        self.send_fd = send_fd  # non-blocking; closed = "no more reveals" for the child
        self.recv_fd = recv_fd
        self.pending: dict[int, Future[bytes]] = {}
        self.sent_at: dict[int, float] = {}  # when each pending reveal was sent, oldest first
        self.inbox = bytearray()
        self.usable = True  # False once a send failed or the node stops: start another
        self.gone = False  # its answers' pipe reached its end
        self.reader: threading.Thread | None = None


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> None:
    """Wait EXIT_TIMEOUT for ``proc`` to exit, then kill it."""
    try:
        proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _not_written(why: str) -> AuditWriteError:
    error = AuditWriteError(AUDIT_NOT_WRITTEN)
    error.add_note(why)
    return error


class WriterProcess:
    """Reveals written by a child process (module docstring). ``command`` runs the child's
    entry point; ``config`` goes to it first (``url`` and ``key`` at least). With ``loop``,
    the child's answers are read by that event loop (``add_reader``: no thread of this
    process wakes up for them); without, by a thread."""

    def __init__(
        self,
        command: Sequence[str],
        config: dict[str, Any],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._command = list(command)
        self._config = frame(config)
        self._loop = loop
        self._lock = threading.Lock()  # the current child, its pending reveals, the pipe
        self._listeners: list[Callable[[], None]] = []
        self._seq = itertools.count(1)
        self._child: _Child | None = None
        self._last_start = -RESTART_INTERVAL
        self._closed = False
        self._stop_watching = threading.Event()
        with self._lock:
            self._start()
        threading.Thread(target=self._watch_answers, name="sr-reveal-watch", daemon=True).start()

    def _start(self) -> _Child | None:
        """A new child (the lock held), or None if one started less than RESTART_INTERVAL
        ago or it cannot start at all."""
        now = time.monotonic()
        if now - self._last_start < RESTART_INTERVAL:
            return None
        self._last_start = now
        from_node, to_child = os.pipe()  # (read end, write end)
        from_child, to_node = os.pipe()
        try:
            proc = subprocess.Popen(
                [*self._command, str(from_node), str(to_node)],
                pass_fds=(from_node, to_node),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            log.exception("cannot start the audit writer process")
            for fd in (to_child, from_node, from_child, to_node):
                os.close(fd)
            return None
        os.close(from_node)
        os.close(to_node)
        os.set_blocking(to_child, False)
        child = self._child = _Child(proc, to_child, from_child)
        if not send_all(child.send_fd, self._config, SEND_TIMEOUT):
            child.usable = False
            proc.kill()
        if self._loop is not None:
            os.set_blocking(from_child, False)
            self._loop.call_soon_threadsafe(self._watch, child)
        else:
            child.reader = threading.Thread(
                target=self._read_loop, args=(child,), name="sr-reveal-acks", daemon=True
            )
            child.reader.start()
        log.info("audit writer process started", extra={"pid": proc.pid})
        return child

    def _watch(self, child: _Child) -> None:
        assert self._loop is not None
        if not child.gone:
            self._loop.add_reader(child.recv_fd, self._readable, child)

    def _send(self, child: _Child, data: bytes) -> None:
        """Send frames to ``child`` (the lock held). If it cannot take them, end it: it may
        hold half a frame; its pipe's end then fails whatever it had not answered."""
        if not send_all(child.send_fd, data, SEND_TIMEOUT):
            log.error("the audit writer process does not take reveals: stopping it")
            child.usable = False
            child.proc.kill()

    def reveal(self, request: RevealRequest) -> Future[bytes]:
        future: Future[bytes] = Future()
        failed: AuditWriteError | None = None
        with self._lock:
            child = self._child
            if self._closed:
                failed = _not_written("the node is stopping")
            elif child is None or not child.usable:
                child = self._start()
            if failed is None and (child is None or not child.usable):
                failed = _not_written("the audit writer process is not running")
            elif failed is None and child is not None:
                seq = next(self._seq)
                child.pending[seq] = future
                child.sent_at[seq] = time.monotonic()
                self._send(child, frame(_to_wire(seq, request)))
        if failed is not None:
            future.set_exception(failed)
        return future

    def on_batch_done(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _watch_answers(self) -> None:  # its own thread, until close()
        while not self._stop_watching.wait(WATCH_INTERVAL):
            self.stop_if_stuck()

    def stop_if_stuck(self, now: float | None = None) -> bool:
        """Kill the child if a reveal it was sent has waited ANSWER_TIMEOUT for its answer
        (True): its pipe's end then fails whatever it held, and the next reveal starts
        another child."""
        now = time.monotonic() if now is None else now
        with self._lock:
            child = self._child
            if child is None or not child.usable or not child.sent_at:
                return False  # none, already being stopped, or nothing awaited
            waited = now - next(iter(child.sent_at.values()))
            if waited < ANSWER_TIMEOUT:
                return False
            child.usable = False
            child.proc.kill()
        log.error(
            "the audit writer process left a reveal unanswered: stopping it",
            extra={"pid": child.proc.pid, "waited_s": round(waited, 1)},
        )
        return True

    # answers -------------------------------------------------------------------------

    def _read_once(self, child: _Child) -> bool:
        """Take what the child wrote; False at the end of its pipe."""
        try:
            data = os.read(child.recv_fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        self._received(child, data)
        return True

    def _read_loop(self, child: _Child) -> None:  # the reader thread, without a loop
        while self._read_once(child):
            pass
        self._ended(child)

    def _readable(self, child: _Child) -> None:  # on the event loop
        if not self._read_once(child):
            assert self._loop is not None
            self._loop.remove_reader(child.recv_fd)
            self._ended(child)

    def _received(self, child: _Child, data: bytes) -> None:
        child.inbox += data
        answered: list[tuple[Future[bytes], Outcome]] = []
        with self._lock:
            for batch in unframe(child.inbox):
                for seq, outcome in batch:
                    child.sent_at.pop(seq, None)
                    future = child.pending.pop(seq, None)
                    if future is not None:
                        answered.append((future, outcome))
            listeners = list(self._listeners)
        for future, outcome in answered:
            if not future.cancelled():
                _settle(future, outcome)
        if answered:
            self._tell(listeners)

    def _ended(self, child: _Child) -> None:
        """The child's answers ended: it exited (or was killed). Whatever it had not
        answered was not shown."""
        with self._lock:
            if child.gone:
                return
            child.gone = True
            child.usable = False
            lost, child.pending = list(child.pending.values()), {}
            child.sent_at = {}
            listeners = list(self._listeners)
            stopping = self._closed
            send_fd, child.send_fd = child.send_fd, -1
        os.close(child.recv_fd)
        if send_fd >= 0:
            os.close(send_fd)
        for future in lost:
            if not future.cancelled():
                future.set_exception(_not_written("the audit writer process stopped"))
        if lost:
            self._tell(listeners)
        if child.proc.poll() is None:  # its pipe closes just before it exits: wait elsewhere
            threading.Thread(
                target=self._reap,
                args=(child, len(lost), stopping),
                name="sr-reveal-reap",
                daemon=True,
            ).start()
        else:
            self._stopped(child, len(lost), stopping)

    def _reap(self, child: _Child, failed: int, stopping: bool) -> None:
        _wait_or_kill(child.proc)
        self._stopped(child, failed, stopping)

    @staticmethod
    def _stopped(child: _Child, failed: int, stopping: bool) -> None:
        code = child.proc.returncode
        if code != 0 or failed or not stopping:
            log.error(
                "the audit writer process stopped",
                extra={"pid": child.proc.pid, "exit_code": code, "reveals_failed": failed},
            )

    @staticmethod
    def _tell(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - the answers must go on
                log.exception("a reveal listener failed")

    def close(self) -> None:
        """Let the child write what it holds and stop; wait for it (STOP_TIMEOUT at most,
        then it is killed). Reveals submitted afterwards fail. With a loop, call it on
        that loop: the last answers are then read here."""
        self._stop_watching.set()
        with self._lock:
            self._closed = True
            child = self._child
            if child is None or child.gone:
                return
            child.usable = False
            send_fd, child.send_fd = child.send_fd, -1
        if send_fd >= 0:
            os.close(send_fd)  # the child's frames end: it writes what it holds and exits
        if child.reader is not None:
            child.reader.join(STOP_TIMEOUT)
            if not child.gone:
                child.proc.kill()
                child.reader.join()
            _wait_or_kill(child.proc)
            return
        assert self._loop is not None
        self._loop.remove_reader(child.recv_fd)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not child.gone:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([child.recv_fd], [], [], left)[0]:
                child.proc.kill()  # its pipe's end follows
                deadline = time.monotonic() + STOP_TIMEOUT
            elif not self._read_once(child):
                self._ended(child)
        _wait_or_kill(child.proc)


# --- the child's side -------------------------------------------------------------------------


class _Answers:
    """The child's answers: gathered as the committer sets its futures, written once per
    batch (and at once for a reveal refused before any write)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._outbox: list[tuple[int, Outcome]] = []

    def add(self, seq: int, outcome: Outcome) -> None:
        with self._lock:
            self._outbox.append((seq, outcome))

    def done(
        self, seq: int, refusal: ValidationError | None, ciphertext: bytes, future: Future[None]
    ) -> None:
        self.add(seq, _outcome_of(refusal, ciphertext, future))

    def flush(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            # A blocking pipe: waits while the node reads; False only when the node is
            # gone, and then nobody is waiting for these answers.
            if batch:
                send_all(self._fd, frame(batch), STOP_TIMEOUT)


def read_frames(fd: int) -> Iterator[Any]:
    """Frames from the blocking ``fd`` until its end."""
    buffer = bytearray()
    while True:
        data = os.read(fd, 65536)
        if not data:
            return
        buffer += data
        yield from unframe(buffer)


def serve_writes(frames: Iterator[Any], out_fd: int, config: dict[str, Any]) -> None:
    """The child's work: decide each reveal of ``frames`` (check_reveal), write its audit
    record in a group commit and answer on ``out_fd`` once per batch (a reveal refused
    before any write: at once); when the frames end (the node closed its end, or exited),
    write what is queued, answer, and return."""
    store = Store(make_engine(str(config["url"])))
    audit = AuditLog(bytes(config["key"]))
    answers = _Answers(out_fd)
    store.on_batch_done(answers.flush)
    try:
        for values in frames:
            seq, request = _from_wire(values)
            try:
                with store.reading() as conn:
                    record, refusal, ciphertext = check_reveal(conn, request)
            except (NotFoundError, PermissionDeniedError) as exc:
                answers.add(seq, (type(exc).__name__, str(exc)))
                answers.flush()
                continue
            except Exception:  # noqa: BLE001 - a failed read: nothing shown, nothing written
                log.exception("a reveal could not be checked")
                answers.add(seq, (_FAILED, ""))
                answers.flush()
                continue
            future = store.submit(record_reveal(audit, record))
            future.add_done_callback(functools.partial(answers.done, seq, refusal, ciphertext))
            if future.done():  # set before the callback was added: its batch has flushed
                answers.flush()
    finally:
        store.dispose()  # commits what is queued, then stops the committer
        answers.flush()
