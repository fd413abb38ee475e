"""Attempts on a node reached over SSH, through labrun's agent there.

`start` asks the agent to launch the attempt detached from the SSH session, so a dropped
connection does not kill it. Ends are found by polling: one `poll` request per node per
`POLL_INTERVAL` over the long-lived session, for all the node's attempts at once, which
also brings back new stdout/stderr bytes; they are appended to the attempt's log files
on the head as they come (so `labrun logs -f` is live).

A node that does not answer for `lost_after` seconds (connected but silent, frozen, or
disconnected) goes offline `FENCE_MARGIN` seconds later: its running attempts are reported
lost (not counted against the task; the runner re-runs them where it can) and `online` is
False so the runner places nothing there. Fencing: each attempt holds a lease on the node
that every poll renews; when no poll came for `lost_after`, the agent's monitor kills it,
so an attempt the head gave up on does not go on beside its rerun (a frozen node's
attempt is killed the moment the node thaws). Reconnecting runs in a thread, so a node
that hangs never stalls the runner's loop; when the node answers again it is online, and
the attempts that were given up on are killed there if they still run.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labrun import private
from labrun.executors.base import Executor, Waker
from labrun.model import Facts, Launch, LaunchError, Runtime, Started, options_wire
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError

POLL_INTERVAL = 0.5  # longest wait of one poll on the node: bounds how stale live logs get
RECONNECT_INTERVAL = 2.0
ANSWER_TIMEOUT = 15.0  # beyond the poll's own wait
# The node's attempts stop themselves once no poll asked about them for `lost_after` (their
# lease, in the agent); the head declares them lost this much later, so by then they have.
FENCE_MARGIN = 2.0


@dataclass
class _Remote:
    launch: Launch
    key: str
    offsets: list[int] = field(default_factory=lambda: [0, 0])
    confirmed: bool = True  # False when the start request got no answer


def remote_key(state: str, run_id: int, attempt_id: int) -> str:
    """The attempt's name on the node: its directory under the agent's `attempts/`. It
    starts with the state directory's id: two state directories using one node workdir
    (two projects of one user, a shared lab account) both have a run 1 with an attempt 1."""
    return f"{state}-r{run_id}-a{attempt_id}" if state else legacy_key(run_id, attempt_id)


def legacy_key(run_id: int, attempt_id: int) -> str:
    """The name an attempt got before keys carried the state id: looked for on adoption and
    cancel, so an attempt started before an upgrade is still found."""
    return f"r{run_id}-a{attempt_id}"


class SshExecutor(Executor):
    """One per node: its own runtime's attempts, and those that `SshRuntime`s start through it.

    All of the node's attempts are polled (and reported by `finished`) here, whatever their
    runtime, over the node's one agent session."""

    runtime = Runtime.PROCESS

    def __init__(
        self,
        session: AgentSession,
        lost_after: float = 60.0,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL,
        waker: Waker | None = None,
        runtime: Runtime = Runtime.PROCESS,
        state: str = "",
    ) -> None:
        self.runtime = runtime
        self.state = state  # the state directory's id: labels the node's containers
        self.session, self.lost_after, self.clock = session, lost_after, clock
        self.poll_interval, self.waker = poll_interval, waker
        self.node = session.target.node
        self.attempts: dict[int, _Remote] = {}
        self.orphans: list[str] = []  # keys of attempts reported lost: killed when the node returns
        self.last_ok = clock()
        self.pending: float | None = None  # when the poll now awaiting its answer was sent
        self.stash: list[Any] = []  # poll answers read while sending another request
        self.next_connect = 0.0
        self.online = True
        self.error = ""
        self._connecting: threading.Thread | None = None
        self._connect_error = ""
        self._watched: int | None = None
        self._watch()

    # -- connection ---------------------------------------------------------------------

    def _watch(self) -> None:
        """Let the runner's Waker wake on the agent's answers (and on the connection's end)."""
        if self.waker is None:
            return
        if self._watched is not None:
            self.waker.unwatch(self._watched)
        self._watched = self.session.fd if self.session.connected else None
        if self._watched is not None:
            self.waker.watch(self._watched)

    @property
    def _up(self) -> bool:
        """Connected, and no reconnect in progress (the thread owns the session meanwhile)."""
        return self._connecting is None and self.session.connected

    def _ensure(self, now: float) -> bool:
        """Connected now; otherwise start (or look at) a reconnect in the background."""
        if self._connecting is not None:
            if self._connecting.is_alive():
                return False
            self._connecting = None
            if not self.session.connected:
                self.error = self._connect_error or self.session.target.unreachable("the connection closed")
                return False
            self._watch()
            self._back_online(now)
            return True
        if self.session.connected:
            return True
        if now < self.next_connect:
            return False
        self.next_connect = now + RECONNECT_INTERVAL
        self._connect_error = ""
        self._connecting = threading.Thread(target=self._reconnect, name=f"ssh-{self.node}", daemon=True)
        self._connecting.start()
        return False

    def _reconnect(self) -> None:
        """In the reconnect thread: may block for the connect timeout; wakes the runner when done."""
        try:
            self.session.connect()
        except SshError as exc:
            self._connect_error = str(exc)
            self.session.close()
        except Exception as exc:  # anything else still ends the attempt to connect, and says so
            self._connect_error = self.session.target.unreachable(f"{type(exc).__name__}: {exc}")
            self.session.close()
        finally:
            if self.waker is not None:
                self.waker.wake()

    def _back_online(self, now: float) -> None:
        self.last_ok, self.online, self.error = now, True, ""
        for key in self.orphans:
            try:
                self.session.request("kill", key=key, signal=9)
            except SshError:
                return
        self.orphans.clear()

    def _call(self, op: str, **fields: Any) -> Any:
        """A request while a poll may be waiting: the agent answers the poll early, then this.
        Waits at most `lost_after` (and 15 s) for a node that stopped answering."""
        timeout = min(ANSWER_TIMEOUT, max(1.0, self.lost_after))
        self.session.send(op, **fields)
        if self.pending is not None:
            self.stash.append(self.session.receive(timeout))
            self.pending = None
        answer = self.session.receive(timeout)
        self.last_ok = self.clock()
        return answer

    def _broken(self, exc: SshError) -> None:
        self.error, self.pending = str(exc), None
        self.session.close()
        self._watch()

    # -- the seam -------------------------------------------------------------------------

    def start(self, launch: Launch, runtime: Runtime | None = None) -> Started:
        remote = _Remote(launch, remote_key(self.state, launch.run_id, launch.attempt_id))
        _truncate(launch)
        request = {
            **start_request(launch, runtime or self.runtime, remote.key, self.state),
            "lease": self.lost_after,
        }
        mechanism = f"ssh-{request['runtime']}"
        try:
            if not self._ensure(self.clock()):
                raise SshError(self.error or f"node {self.node} is not connected")
            answer = self._call("start", **request)
            ref = f"{self.node}:{answer['dir']}"
            mechanism = str(answer.get("mechanism") or mechanism)
        except SshError as exc:
            # unknown whether it started: polling finds out, and loss handling covers the rest
            remote.confirmed, ref = False, f"{self.node}:?"
            self._broken(exc)
            answer = {}
        if answer.get("start_error"):
            raise LaunchError(f"on node {self.node}: {answer['start_error']}")
        self.attempts[launch.attempt_id] = remote
        return Started(ref=ref, mechanism=mechanism)

    def wake_at(self, now: float) -> float | None:
        """Polling and reconnecting happen in `finished()`, which the runner calls each tick."""
        if not self.attempts and self.online:
            return None
        lost_at = self.last_ok + self.lost_after + FENCE_MARGIN
        if self.pending is not None:  # the answer wakes the Waker; this is the give-up time
            return min(self.pending + self.poll_interval + ANSWER_TIMEOUT, lost_at)
        if self._up:
            return now
        if self._connecting is not None:  # the thread wakes the Waker when it is done
            return lost_at if self.attempts else None
        if self.attempts:  # not connected: reconnect, or give the attempts up as lost
            return min(self.next_connect, lost_at)
        return self.next_connect

    def finished(self) -> list[tuple[int, Facts]]:
        now = self.clock()
        answers, self.stash = self.stash, []
        if self.pending is None and self._up and self.session.ready():
            try:  # nothing was asked: this is the connection ending
                answers.append(self.session.receive(ANSWER_TIMEOUT))
            except SshError as exc:
                self._broken(exc)
        if self.pending is not None:
            if self.session.proc is None:  # closed under us
                self._broken(SshError(self.session.target.unreachable("the connection was closed")))
            elif self.session.ready():
                try:
                    answers.append(self.session.receive(ANSWER_TIMEOUT))
                    self.pending, self.last_ok = None, now
                except SshError as exc:
                    self._broken(exc)
            elif (
                now > self.pending + self.poll_interval + ANSWER_TIMEOUT
                or now >= self.last_ok + self.lost_after + FENCE_MARGIN
            ):
                self._broken(SshError(self.session.target.unreachable("the agent stopped answering")))
        done = [item for answer in answers for item in self._absorb_all(answer, now)]
        if self.pending is None and (self.attempts or not self.online) and self._ensure(now):
            offsets = {r.key: r.offsets for r in self.attempts.values()}
            try:
                self.session.send("poll", attempts=offsets, wait=self.poll_interval)
                self.pending = now
            except SshError as exc:
                self._broken(exc)
        if not self._up:
            done += self._maybe_lost(now)
        return done

    def _absorb_all(self, answer: Any, now: float) -> list[tuple[int, Facts]]:
        done = []
        for attempt_id, remote in list(self.attempts.items()):
            if remote.key not in answer["attempts"]:
                continue  # not asked about in this answer (adopt asks about one attempt)
            facts = self._absorb(remote, answer["attempts"][remote.key] or {}, now)
            if facts is not None:
                del self.attempts[attempt_id]
                done.append((attempt_id, facts))
        return done

    def _maybe_lost(self, now: float) -> list[tuple[int, Facts]]:
        if now - self.last_ok < self.lost_after + FENCE_MARGIN:
            return []
        self.online = False
        detail = f"node {self.node} did not answer for {now - self.last_ok:.0f}s: {self.error}"
        lost = [(i, Facts(None, None, now, lost=True, detail=detail)) for i in self.attempts]
        self.orphans.extend(r.key for r in self.attempts.values())
        self.attempts.clear()
        return lost

    def _absorb(self, remote: _Remote, info: dict[str, Any], now: float) -> Facts | None:
        short = True
        for index, stream in enumerate(("stdout", "stderr")):
            data = base64.b64decode(info.get(stream) or "")
            if data:
                path = remote.launch.stdout_path if index == 0 else remote.launch.stderr_path
                with os.fdopen(private.open_append(path), "ab") as handle:
                    handle.write(data)
                remote.offsets[index] += len(data)
            short = short and len(data) < (1 << 20)
        status = info.get("status")
        if status is None:
            if remote.confirmed:
                return None
            why = f"the start on node {self.node} was not confirmed"
            return Facts(None, None, now, lost=True, detail=why)
        if "ended" not in status or not short:
            return None  # still running, or logs still to fetch
        return _facts(status, self.node)

    def signal(self, attempt_id: int, signum: int) -> None:
        remote = self.attempts.get(attempt_id)
        if remote is None or not self._up:
            return
        try:
            self._call("kill", key=remote.key, signal=int(signum))
        except SshError as exc:
            self._broken(exc)

    def running(self) -> list[int]:
        return list(self.attempts)

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """Follow an attempt an earlier runner started on this node; False if the node has no
        record of it. One that ended while no runner watched is reported by the next poll,
        with its real exit. Its logs continue after what the head already has. One whose
        start the head never recorded (`ref` None: it died right after asking) is asked
        for by its key, which the attempt id makes."""
        if started.ref is not None and not started.ref.startswith(f"{self.node}:"):
            return False
        sizes = [_size(launch.stdout_path), _size(launch.stderr_path)]
        remote = _Remote(launch, remote_key(self.state, launch.run_id, launch.attempt_id), sizes)
        if self._ensure(self.clock()):
            legacy = legacy_key(launch.run_id, launch.attempt_id)
            try:
                answer = self._call("poll", attempts={remote.key: sizes, legacy: sizes})
            except SshError as exc:
                self._broken(exc)  # unknown: followed, and loss handling covers a node that stays away
            else:
                known = [k for k in (remote.key, legacy) if (answer["attempts"].get(k) or {}).get("status")]
                if not known:
                    return False
                remote.key = known[0]
                answer["attempts"] = {remote.key: answer["attempts"][remote.key]}
                self.stash.append(answer)  # its log bytes and status, absorbed by `finished`
        self.attempts[attempt_id] = remote
        return True

    def close(self) -> None:
        self.session.close()
        self.session.target.close()


class SshRuntime(Executor):
    """Another runtime of the same node: starts through the node's SshExecutor, which polls."""

    def __init__(self, node: SshExecutor, runtime: Runtime) -> None:
        self.node_executor, self.runtime = node, runtime

    @property
    def online(self) -> bool:  # type: ignore[override]  # the node's state, not this facade's
        return self.node_executor.online

    def start(self, launch: Launch) -> Started:
        return self.node_executor.start(launch, self.runtime)

    def finished(self) -> list[tuple[int, Facts]]:
        return []  # the node's SshExecutor reports every attempt of the node

    def signal(self, attempt_id: int, signum: int) -> None:
        self.node_executor.signal(attempt_id, signum)

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        return self.node_executor.adopt(attempt_id, launch, started)

    def running(self) -> list[int]:
        return []


def start_request(launch: Launch, runtime: Runtime, key: str, state: str = "") -> dict[str, Any]:
    """The agent's `start` request: the launch as JSON, its options as `options_wire` writes
    them; `state`, the state directory's id, labels a container (labrun/state_id.py)."""
    return {
        "key": key,
        "state": state,
        "run_id": launch.run_id,
        "task": launch.task_name,
        "attempt": launch.attempt,
        "attempt_id": launch.attempt_id,
        "argv": list(launch.argv),
        "env": dict(launch.env),
        "withheld": list(launch.withheld),
        "cwd": launch.workdir,
        "outputs": list(launch.outputs),
        "runtime": runtime.value,
        "memory": launch.memory,
        "cpus": launch.cpus,
        "gpus": list(launch.gpus),
        "options": options_wire(launch.options),
    }


def _facts(status: dict[str, Any], node: str) -> Facts:
    ended = float(status["ended"])
    if status.get("start_error"):
        return Facts(None, None, ended, start_error=f"on node {node}: {status['start_error']}")
    missing = tuple(status.get("missing") or ())
    return Facts(
        status.get("exit"),
        status.get("signal"),
        ended,
        oom_kills=int(status.get("oom_kills") or 0),
        oom_killed=bool(status.get("oom_killed")),
        peak_memory=status.get("peak_memory"),
        cpu_seconds=status.get("cpu"),
        missing_outputs=missing,
        detail=str(status.get("detail") or ""),
        memory_series=status.get("memory_series") or None,
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _truncate(launch: Launch) -> None:
    private.makedirs(os.path.dirname(launch.stdout_path))
    for path in (launch.stdout_path, launch.stderr_path):
        os.close(private.open_fd(path, os.O_WRONLY | os.O_TRUNC))
