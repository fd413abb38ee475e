"""labrun's agent on a remote node: standard library only, Python >= 3.8.

The head ships it to the node as one zipapp, `agent-<hash>.pyz` (this file as
`__main__`, plus the stdlib-only `labrun.cgroup` package and the modules it shares with the
head: attempt facts, Docker arguments, private files), cached there by content hash,
and talks to it over the multiplexed SSH connection. Commands, each a JSON request on
stdin and a JSON answer on stdout:

    probe            cpus, memory, python, free disk in the work directory, runtimes, GPUs
    start            launch one attempt detached from the SSH session (double fork, setsid)
    poll             status of many attempts, plus log bytes after given offsets; with
                     "wait", it first waits up to that long for one of them to end
    kill             signal an attempt's process group (and its cgroup); one still launching
                     gets the signal from its monitor as soon as its task runs
    serve            many requests, one JSON line each, over one long-lived session

Each attempt has a directory `<workdir>/attempts/<key>/` holding `stdout`, `stderr` and
`status.json`, rewritten atomically by a monitor process that outlives the SSH session:
pid and start time first, then the exit code or signal, CPU time, missing outputs and
the memory series sampled while it ran.
The monitor then appends the attempt's key to `<workdir>/ended.log`, so a waiting poll
watches one file's size instead of every status file.

Runtimes: `process` (a process group: no memory limit, no OOM counter); `cgroup`:
`start` makes the attempt's cgroup with its memory and CPU limits (labrun.cgroup: v2,
v1 or systemd-run, whichever the node allows) and the monitor spawns the task inside it;
when the task ends the monitor records the cgroup's OOM-kill counter, peak memory and
CPU time in the status file, then removes the cgroup with anything left in it; `docker`
(labrun/ssh/remote_docker.py, also shipped): `start` runs the container with the node's
`docker` CLI, the monitor follows its logs into the attempt's files, waits, records the
exit code and Docker's OOMKilled, then removes it. A runtime that cannot start (no
cgroup allowed, image missing on the node) is a `start_error` with the fix.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from labrun import attempt_facts, memseries, private  # shipped in the zipapp: the head's rules

CHUNK = 1 << 20  # log bytes per stream per poll: keeps one answer small
WAIT_STEP = 0.005  # how often a waiting poll looks at ended.log (one stat)
SAMPLE_EVERY = 1.0  # seconds between memory samples of a running attempt (as on the head)
_INPUT = [b""]  # serve's unread input: a waiting poll returns early when a request is there


def _attempt_dir(workdir: str, key: str) -> str:
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"bad attempt key {key!r}")
    return os.path.join(workdir, "attempts", key)


def _write_status(directory: str, status: dict[str, Any]) -> None:
    private.write_atomic(os.path.join(directory, "status.json"), json.dumps(status).encode())


LEASE_FILE = "lease"  # in the attempt directory: touched by every poll that asks about it
LEASE_STEP = 0.5  # how often a monitor looks at its lease


def _renew(directory: str) -> None:
    try:
        os.utime(os.path.join(directory, LEASE_FILE))
    except OSError:
        pass  # an attempt started without a lease, or gone


def _fence_when_lapsed(directory: str, lease: float, stop: Callable[[], object]) -> None:
    """Fencing, in a monitor: when no poll asked about this attempt for `lease` seconds, the
    head has given it up as lost (after `lost_after` plus a margin) and runs the task
    elsewhere, so it must not go on here: `stop` kills it, and its status says fenced."""
    path = os.path.join(directory, LEASE_FILE)
    os.close(private.open_fd(path, os.O_WRONLY))  # the lease starts now

    def watch() -> None:
        while True:
            time.sleep(LEASE_STEP)
            try:
                age = time.time() - os.stat(path).st_mtime
            except OSError:
                return
            if age > lease:
                why = f"no poll for {age:.1f}s (lease {lease:g}s)\n"
                private.write_atomic(os.path.join(directory, "fenced"), why.encode())
                stop()
                return

    threading.Thread(target=watch, daemon=True).start()


def _fenced(directory: str) -> str:
    try:
        with open(os.path.join(directory, "fenced")) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _read_status(directory: str) -> Any:
    try:
        with open(os.path.join(directory, "status.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _gpus() -> list[dict[str, Any]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
            universal_newlines=True,  # noqa: UP021 - Python 3.6+ nodes,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append({"index": int(parts[0]), "name": parts[1], "memory_mib": parts[2]})
    return gpus


def probe(request: dict[str, Any]) -> dict[str, Any]:
    workdir = request["workdir"]
    private.makedirs(workdir)
    disk = os.statvfs(workdir)
    runtimes = ["process"]
    if shutil.which("docker"):
        runtimes.append("docker")
    try:
        if _cgroup_support().ok:
            runtimes.append("cgroup")
    except Exception:  # a cgroup layer that fails here only means no cgroup runtime
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": cpus or 1,
        "memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "python": ".".join(map(str, sys.version_info[:3])),
        "free_disk": disk.f_bavail * disk.f_frsize,
        "workdir": os.path.abspath(workdir),
        "runtimes": runtimes,
        "gpus": _gpus(),
        "hostname": os.uname().nodename,
    }


def _cgroup_support() -> Any:
    from labrun.cgroup import detect  # shipped in the zipapp; only the cgroup runtime needs it

    return detect()


def _make_cgroup(directory: str, spec: dict[str, Any]) -> Any:
    """The attempt's cgroup with its limits; raises CgroupError with the reason."""
    from labrun.cgroup import CgroupError, Limits, create

    support = _cgroup_support()
    if not support.ok:
        raise CgroupError(
            f"no cgroup can be made on this node: {support.reason}; log in as root there "
            '(or use a systemd node with cgroup v2), or use runtime = "process"'
        )
    options = spec.get("options") or {}  # as model.options_wire writes CgroupOptions
    limits = Limits(
        memory=int(spec.get("memory") or 0) or None,
        cpus=float(spec.get("cpus") or 0) or None,
        cpuset=options.get("cpuset") or None,
    )
    name = f"{spec['key']}-{os.getpid()}"
    return create(support, name, limits, os.path.join(directory, "cgroup-usage"))


def _cgroup_ended(cg: Any, status: dict[str, Any]) -> None:
    """Record the cgroup's counters in the status, then remove it (killing what is left)."""
    reading = attempt_facts.read_cgroup(cg)
    status["oom_kills"] = reading.oom_kills or 0
    status["peak_memory"] = reading.peak_memory
    if reading.cpu_seconds is not None:
        status["cpu"] = reading.cpu_seconds
    notes = list(reading.notes)
    try:
        cg.remove()
    except Exception as exc:
        notes.append(str(exc))
    if notes:
        status["detail"] = attempt_facts.join_notes(*notes)


def _become_subreaper() -> None:
    """A process of the attempt that leaves its group (setsid) comes back here when orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass  # no prctl: such a process outlives the attempt, as it would anywhere


def _end_escapees() -> None:
    """After the attempt: kill (with their groups) and reap the monitor's other children,
    which can only be the attempt's processes that left its group."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as handle:
                pids.update(int(p) for p in handle.read().split())
        except OSError:
            continue
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass


def _monitor(directory: str, spec: dict[str, Any], cg: Any = None) -> None:
    """In the detached grandchild: run the attempt, wait, record how it ended."""
    _become_subreaper()
    status: dict[str, Any] = {"started": time.time()}
    if cg is not None:
        status["mechanism"], status["cgroup"] = cg.mechanism, cg.name
    out = private.open_fd(os.path.join(directory, "stdout"), os.O_WRONLY | os.O_TRUNC)
    err = private.open_fd(os.path.join(directory, "stderr"), os.O_WRONLY | os.O_TRUNC)
    env = dict(os.environ)
    for name in spec.get("withheld") or ():  # secrets of other tasks, should the node have them
        env.pop(name, None)
    env.update(spec.get("env", {}))
    try:
        with cg.entered() if cg is not None else contextlib.nullcontext():
            proc = subprocess.Popen(
                cg.command(spec["argv"]) if cg is not None else spec["argv"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=spec.get("cwd") or None,
                env=env,
                start_new_session=True,
            )
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and spec.get("cwd") and not os.path.isdir(spec["cwd"]):
            status["start_error"] = f"the working directory {spec['cwd']} does not exist on this node"
        elif isinstance(exc, FileNotFoundError):
            status["start_error"] = (
                f"command not found: {spec['argv'][0]!r}; install it on the node or fix the command"
            )
        else:
            status["start_error"] = f"cannot start {spec['argv'][0]!r}: {exc.strerror}"
        if cg is not None:
            _cgroup_ended(cg, status)
        status["ended"] = time.time()
        _write_status(directory, status)
        _announce_end(spec["workdir"], spec["key"])
        return
    status["pid"] = proc.pid
    _write_status(directory, status)
    if spec.get("lease"):
        _fence_when_lapsed(directory, float(spec["lease"]), lambda: _kill_all(proc.pid, cg))
    _deliver_pending(directory, lambda signum: os.killpg(proc.pid, signum))
    sampled = _sample_memory(proc.pid, cg, status["started"])
    _, code, usage = os.wait4(proc.pid, 0)
    status["memory_series"] = sampled()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the attempt left behind ends with it
    except OSError:
        pass
    _end_escapees()
    status["cpu"] = usage.ru_utime + usage.ru_stime
    if _fenced(directory):
        status["fenced"] = _fenced(directory)
    if cg is not None:
        _cgroup_ended(cg, status)
    status["ended"] = time.time()
    exit_code, signum = attempt_facts.exit_of(code)
    if signum is not None:
        status["signal"] = signum
    else:
        status["exit"] = exit_code
    _record_outputs(status, spec)
    _write_status(directory, status)
    _announce_end(spec["workdir"], spec["key"])


def _sample_memory(pid: int, cg: Any, started: float) -> Callable[[], str | None]:
    """Sample the attempt's memory once a second in a thread (its cgroup's charge, else its
    process tree's RSS) while the monitor waits; the returned call stops it and gives the
    encoded series (labrun.memseries, the head's rule), None when it ended within a second."""
    series = memseries.Series(started)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY):
            size = cg.current_memory() if cg is not None else None
            if size is None:
                size = memseries.tree_rss([pid]).get(pid)
            if size is not None:
                series.add(time.time(), size)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def finish() -> str | None:
        stop.set()
        thread.join()
        return series.encode()

    return finish


def _kill_all(pid: int, cg: Any) -> None:
    """SIGKILL the attempt: its process group, and its cgroup when it has one."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if cg is not None:
        try:
            cg.kill(signal.SIGKILL)
        except Exception:
            pass


def _monitor_container(directory: str, spec: dict[str, Any], container: str) -> None:
    """In the detached grandchild: follow the container's logs, wait, record how it ended."""
    from labrun.ssh import remote_docker

    status: dict[str, Any] = {"started": time.time(), "container": container, "mechanism": "docker"}
    status["pid"] = os.getpid()  # the monitor: what a lost head's reconnect finds alive
    _write_status(directory, status)
    if spec.get("lease"):
        stop = lambda: _signal_container(directory, container, signal.SIGKILL)  # noqa: E731
        _fence_when_lapsed(directory, float(spec["lease"]), stop)
    _deliver_pending(directory, lambda signum: _signal_container(directory, container, signum))
    out = private.open_fd(os.path.join(directory, "stdout"), os.O_WRONLY | os.O_TRUNC)
    err = private.open_fd(os.path.join(directory, "stderr"), os.O_WRONLY | os.O_TRUNC)
    status.update(remote_docker.monitor(container, out, err))
    # Docker gives its init's exit code: 128+N is signal N only if N was sent (the head's rule)
    signum = attempt_facts.container_signal(
        status.get("exit"), bool(status.get("oom_killed")), _sent(directory)
    )
    if signum is not None:
        status["signal"] = signum
    if _fenced(directory):
        status["fenced"] = _fenced(directory)
    status["ended"] = time.time()
    _record_outputs(status, spec)
    _write_status(directory, status)
    _announce_end(spec["workdir"], spec["key"])


def _events(workdir: str) -> str:
    return os.path.join(workdir, "ended.log")


def _announce_end(workdir: str, key: str) -> None:
    fd = private.open_append(_events(workdir))
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)


def _events_size(workdir: str) -> int:
    try:
        return os.stat(_events(workdir)).st_size
    except OSError:
        return 0


def _wait_for_an_end(request: dict[str, Any]) -> None:
    """Until an attempt ends, a request comes in, or `wait` seconds pass."""
    deadline = time.time() + float(request.get("wait") or 0)
    seen = _events_size(request["workdir"])
    for key in request["attempts"]:
        status = _read_status(_attempt_dir(request["workdir"], key)) or {}
        if "ended" in status:
            return
    while time.time() < deadline and _events_size(request["workdir"]) == seen:
        if b"\n" in _INPUT[0] or select.select([0], [], [], WAIT_STEP)[0]:
            return


def _record_outputs(status: dict[str, Any], spec: dict[str, Any]) -> None:
    """After exit 0, the declared outputs that are not present (the head's rule, shipped)."""
    if status.get("exit") == 0:
        status["missing"] = list(attempt_facts.missing_outputs(spec.get("outputs") or []))


def start(request: dict[str, Any]) -> dict[str, Any]:
    directory = _attempt_dir(request["workdir"], request["key"])
    private.makedirs(directory)
    _write_status(directory, {"launching": time.time()})
    cg, container, runtime = None, "", request.get("runtime") or "process"
    try:
        if runtime == "cgroup":
            cg = _make_cgroup(directory, request)
        elif runtime == "docker":
            from labrun.ssh import remote_docker

            container = remote_docker.start(request)
    except Exception as exc:  # the head reports it as a launch error, with the reason
        _write_status(directory, {"ended": time.time(), "start_error": f"runtime {runtime}: {exc}"})
        return {"dir": directory, "start_error": f"runtime {runtime}: {exc}"}
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked processes
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                if container:
                    _monitor_container(directory, request, container)
                else:
                    _monitor(directory, request, cg)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    mechanism = cg.mechanism if cg is not None else "docker" if container else "process"
    return {"dir": directory, "mechanism": mechanism, "container": container}


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return base64.b64encode(handle.read(CHUNK)).decode("ascii")
    except OSError:
        return ""


def poll(request: dict[str, Any]) -> dict[str, Any]:
    for key in request["attempts"]:  # the head still follows them: their leases go on
        _renew(_attempt_dir(request["workdir"], key))
    if request.get("wait"):
        _wait_for_an_end(request)
    answer: dict[str, Any] = {}
    for key, (out_offset, err_offset) in request["attempts"].items():
        directory = _attempt_dir(request["workdir"], key)
        answer[key] = {
            "status": _read_status(directory),
            "stdout": _read_from(os.path.join(directory, "stdout"), out_offset),
            "stderr": _read_from(os.path.join(directory, "stderr"), err_offset),
        }
    return {"attempts": answer, "now": time.time()}


def _pending(directory: str) -> str:
    return os.path.join(directory, "pending-signal")


def _sent_path(directory: str) -> str:
    return os.path.join(directory, "signals-sent")


def _sent(directory: str) -> list[int]:
    """The signals labrun sent to the attempt's container, as `_signal_container` recorded them."""
    try:
        with open(_sent_path(directory)) as handle:
            return [int(line) for line in handle.read().split() if line.isdigit()]
    except OSError:
        return []


def _signal_container(directory: str, container: str, signum: int) -> bool:
    """Record the signal, then send it: the monitor reads the record once the container ended."""
    from labrun.ssh import remote_docker

    with os.fdopen(private.open_append(_sent_path(directory)), "a") as handle:
        handle.write(f"{int(signum)}\n")
    return remote_docker.kill(container, signum)


def _deliver_pending(directory: str, send: Callable[[int], object]) -> None:
    """In the monitor, once the task's pid is recorded: a signal `kill` left while it launched.

    `kill` writes the file, then reads the status; the monitor writes the status, then reads
    the file: whichever comes second sends it, so a signal right after `start` is never lost
    (at worst it is sent twice)."""
    try:
        with open(_pending(directory)) as handle:
            signum = int(handle.read().strip())
    except (OSError, ValueError):
        return
    try:
        send(signum)
    except OSError:
        pass  # ended already


def kill(request: dict[str, Any]) -> dict[str, Any]:
    directory = _attempt_dir(request["workdir"], request["key"])
    status = _read_status(directory)
    if status is None or "ended" in status:
        return {"sent": False}
    if not status.get("pid"):  # still launching: the monitor sends it once the task runs
        private.write_atomic(_pending(directory), str(int(request["signal"])).encode())
        status = _read_status(directory) or {}
        if not status.get("pid") or "ended" in status:
            return {"sent": True}
    pid = status["pid"]
    if status.get("container"):
        return {"sent": _signal_container(directory, status["container"], request["signal"])}
    if status.get("cgroup"):  # also what left the process group
        from labrun.cgroup import open_existing

        try:
            found = open_existing(_cgroup_support(), status["cgroup"], "")
            if found is not None:
                found.kill(request["signal"])
        except Exception:
            pass  # the process group is still signalled below
    try:
        os.killpg(pid, request["signal"])
    except OSError:
        return {"sent": False}
    return {"sent": True}


COMMANDS = {"probe": probe, "start": start, "poll": poll, "kill": kill}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    try:
        request["workdir"] = os.path.abspath(os.path.expanduser(request.get("workdir") or "~/.cache/labrun"))
        return {"ok": True, "result": COMMANDS[request["op"]](request)}
    except Exception as exc:  # answered, never a traceback on the wire
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve() -> None:
    print(json.dumps({"ok": True, "result": {"ready": True}}), flush=True)
    while True:
        while b"\n" not in _INPUT[0]:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return  # the head went away; attempts keep running without us
            _INPUT[0] += chunk
        line, _, _INPUT[0] = _INPUT[0].partition(b"\n")
        if line.strip():
            print(json.dumps(handle(json.loads(line))), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in (*COMMANDS, "serve"):
        sys.stderr.write("usage: agent.py probe|start|poll|kill|serve (JSON request on stdin)\n")
        return 2
    if argv[1] == "serve":
        serve()
        return 0
    request = json.load(sys.stdin)
    request["op"] = argv[1]
    print(json.dumps(handle(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
