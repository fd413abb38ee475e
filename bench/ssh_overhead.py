"""Per-task overhead of SshExecutor against a plain `ssh node true` loop, both multiplexed.

Both sides reach the same loopback sshd (started here with throw-away keys, as the tests
do: tests/sshd.py) through the same ControlMaster connection. One at a time and
interleaved (one executor task, then one `ssh node true`) so that load drift hits both
equally. The executor side is a whole attempt: start through the agent, the detached
launch on the node, the end noticed by the long poll and delivered through the Waker.
Prints seconds per task for each and the ratio (target <= 1.5x), then the time for a
batch of N attempts started together (what a job with free slots sees).

    python bench/ssh_overhead.py [-n 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import sshd  # test infrastructure, found through the path above

from labrun.executors.base import Waker
from labrun.executors.ssh import SshExecutor
from labrun.model import Launch
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshTarget


def launch_for(i: int, workdir: str) -> Launch:
    return Launch(
        attempt_id=i, run_id=1, task_name="true", attempt=1, argv=("true",), env={},
        workdir=workdir, stdout_path=f"{workdir}/logs/{i}/out", stderr_path=f"{workdir}/logs/{i}/err",
        cpus=0, memory=0,
    )  # fmt: skip


def until_done(ex: SshExecutor, waker: Waker, count: int) -> None:
    done = 0
    while done < count:
        done += len(ex.finished())
        if done < count:
            wake = ex.wake_at(time.time())
            waker.wait(None if wake is None else max(0.0, wake - time.time()))


def one_executor_task(ex: SshExecutor, waker: Waker, launch: Launch) -> float:
    begun = time.perf_counter()
    ex.start(launch)
    until_done(ex, waker, 1)
    return time.perf_counter() - begun


def one_ssh_true(target: SshTarget) -> float:
    begun = time.perf_counter()
    subprocess.run(target.argv("true"), check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - begun


def start_sshd(root: str) -> sshd.SshdLab:
    reason = sshd._unavailable()
    if reason:
        raise SystemExit(f"cannot run sshd here: {reason}")
    lab = sshd.SshdLab(root)
    lab.user_key = os.path.join(root, "id_ed25519")
    lab.user_public_key = sshd._keygen(lab.user_key)
    Path(lab.known_hosts).touch()
    lab.start("bench-node")
    return lab


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="tasks per side (default 50)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="labrun-bench-")
    lab = start_sshd(root)
    waker = Waker()
    target = SshTarget("bench-node", "bench-node", f"{root}/ctl", ssh_config=lab.ssh_config)
    session = AgentSession(target, f"{root}/remote")
    session.connect()
    ex = SshExecutor(session, waker=waker)
    try:
        one_ssh_true(target)  # warm both
        one_executor_task(ex, waker, launch_for(0, root))
        ours, plain = [], []
        for i in range(1, args.n + 1):
            ours.append(one_executor_task(ex, waker, launch_for(i, root)))
            plain.append(one_ssh_true(target))
        per_ours, per_plain = sum(ours) / len(ours), sum(plain) / len(plain)
        print(f"one at a time, {args.n} each, same ControlMaster connection:")
        print(f"  labrun SshExecutor attempt: {per_ours * 1000:7.1f} ms/task")
        print(f"  ssh node true:              {per_plain * 1000:7.1f} ms/task")
        print(f"  ratio: {per_ours / per_plain:.2f}x (target <= 1.5x)")
        begun = time.perf_counter()
        for i in range(args.n + 1, 2 * args.n + 1):
            ex.start(launch_for(i, root))
        until_done(ex, waker, args.n)
        batch = time.perf_counter() - begun
        print(f"batch of {args.n} started together: {batch:.2f}s, {batch / args.n * 1000:.1f} ms/task")
    finally:
        ex.close()
        waker.close()
        lab.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
