"""A real single-node Slurm cluster for the Slurm tests, from Debian's packages.

`slurm_cluster` (session): a cluster that answers. Everything lives under STATE_DIR: its
own SLURM_CONF directory, ports, munge key and socket, a MariaDB data directory with
slurmdbd (so `sacct` works), `slurmctld` and one `slurmd` whose node is this machine
(cgroup process tracking and task containment, so `--mem` is enforced). The daemons are
LEFT RUNNING, like the test dockerd, so later and concurrent sessions share them; a
cluster that does not answer is stopped and started again from a clean state (what a
killed earlier session left is ended by the directory its command line names).

The tests point Slurm's commands at it with SLURM_CONF (`env`). Skips, with the reason,
only where a cluster cannot be had (not root; packages missing and no apt-get); missing
packages where apt-get could install them, or a cluster that does not come up, fail the
tests (with the tail of the daemons' logs), so CI never passes with them skipped.
Stop it with `kill $(cat /tmp/labrun-test-slurm/*.pid)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest
from dockerd import pids_using
from procs import pids_where

STATE_DIR = "/tmp/labrun-test-slurm"
CLUSTER = "labruntest"
NODE = "labrun-node"
PARTITION = "debug"
CPUS = 8  # advertised (config_overrides): more than the machine has, so tests do not queue
NODE_MEMORY_MB = 1500  # what one job may ask for at most
PORTS = {"ctld": 16817, "slurmd": 16818, "dbd": 16819, "mysql": 16820}
START_TIMEOUT_S = 120.0
PROGRAMS = {
    "munged": "munge",
    "mariadbd": "mariadb-server-core",
    "slurmdbd": "slurmdbd",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
}
SETUP_HINT = "run `sudo tests/setup-system.sh` (installs slurmctld, slurmd, slurmdbd, munge, mariadb)"


class Unavailable(Exception):
    """No cluster can be had here; the message is the skip reason."""


class StartFailed(Exception):
    """The packages are there and we may start the daemons, but the cluster did not come up."""


@dataclass(frozen=True)
class Cluster:
    conf: str  # SLURM_CONF
    partition: str = PARTITION
    node: str = NODE
    cpus: int = CPUS
    memory_mb: int = NODE_MEMORY_MB

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.conf}

    def command(self, *argv: str, check: bool = True) -> str:
        done = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout


def path(name: str) -> str:
    return os.path.join(STATE_DIR, name)


def _slurm_conf() -> str:
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={PORTS["ctld"]}
SlurmdPort={PORTS["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={path("munge.sock")}
CredType=cred/munge
StateSaveLocation={path("ctld-state")}
SlurmdSpoolDir={path("slurmd-spool")}
SlurmctldPidFile={path("slurmctld.pid")}
SlurmdPidFile={path("slurmd.pid")}
SlurmctldLogFile={path("slurmctld.log")}
SlurmdLogFile={path("slurmd.log")}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/cgroup
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={PORTS["dbd"]}
AccountingStoragePass={path("munge.sock")}
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmdTimeout=60
SlurmctldTimeout=60
MailProg=/bin/true
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=60 State=UP
"""


CGROUP_CONF = """\
CgroupAutomount=no
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
"""


def _dbd_conf() -> str:
    return f"""\
AuthType=auth/munge
AuthInfo=socket={path("munge.sock")}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={PORTS["dbd"]}
SlurmUser=root
PidFile={path("slurmdbd.pid")}
LogFile={path("slurmdbd.log")}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={PORTS["mysql"]}
StorageUser=root
StorageLoc=slurm_acct_db
"""


def _write(name: str, text: str, mode: int = 0o644) -> None:
    with open(path(name), "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path(name), mode)


def answers(conf: str) -> bool:
    """The controller answers and the node takes jobs, and accounting answers."""
    env = {**os.environ, "SLURM_CONF": conf}
    try:
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10
        )
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    state = nodes.stdout.strip().rstrip("*~#!%$@^-")
    return nodes.returncode == 0 and state in ("idle", "mixed", "allocated") and acct.returncode == 0


def _missing() -> list[str]:
    where = "/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")
    return sorted({pkg for prog, pkg in PROGRAMS.items() if shutil.which(prog, path=where) is None})


def find_or_start() -> Cluster:
    cluster = Cluster(path("slurm.conf"))
    if os.path.exists(cluster.conf) and answers(cluster.conf):
        return cluster
    if os.geteuid() != 0:
        raise Unavailable("only root may start the test Slurm cluster (slurmd needs cgroups)")
    missing = _missing()
    if missing and shutil.which("apt-get") is None:
        raise Unavailable(f"missing Debian packages {', '.join(missing)} and no apt-get to install them")
    if missing:  # CI runs `make test`, which installs them first: missing here is a failure
        raise StartFailed(f"missing Debian packages {', '.join(missing)}; {SETUP_HINT}")
    os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
    with open(path("lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions starting at once start one cluster
        if os.path.exists(cluster.conf) and answers(cluster.conf):
            return cluster
        started = time.monotonic()
        start_clean()
        _wait(lambda: answers(cluster.conf), "the cluster (sinfo: node idle; sacct answers)", started)
        _write("start-seconds", f"{time.monotonic() - started:.1f}\n")
    return cluster


def daemons() -> list[int]:
    """The cluster's processes: those whose command line names STATE_DIR (munged, mariadbd)
    or whose environment does (the Slurm daemons and job steps find it by SLURM_CONF)."""
    needle = b"SLURM_CONF=" + STATE_DIR.encode()
    found = set(pids_using(STATE_DIR)) | set(pids_where("environ", lambda environ: needle in environ))
    return sorted(found)


def clear_leftovers() -> None:
    """End every daemon a killed session left, then empty their state."""
    for pid in daemons():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    _remove_job_cgroups()
    for name in os.listdir(STATE_DIR):
        if name != "lock":
            full = path(name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)


def _remove_job_cgroups() -> None:
    """The slurm cgroups a killed slurmd left (emptied by the kills above), deepest first."""
    for controller in ("memory", "cpuset", "freezer", "devices", "cpuacct", "cpu", "pids"):
        root = f"/sys/fs/cgroup/{controller}/slurm_{NODE}"
        if not os.path.isdir(root):
            continue
        for current, _, _ in sorted(os.walk(root), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(current)


def _spawn(argv: list[str], log: str) -> None:
    with open(path(log), "ab") as out:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "SLURM_CONF": path("slurm.conf")},
        )


def start_clean() -> None:
    clear_leftovers()
    for name in ("ctld-state", "slurmd-spool", "mysql", "munge"):
        os.makedirs(path(name), mode=0o700, exist_ok=True)
    started = time.monotonic()
    _write("munge.key", os.urandom(1024).hex(), 0o400)
    _spawn(
        [
            "munged",
            "--force",
            f"--key-file={path('munge.key')}",
            f"--socket={path('munge.sock')}",
            f"--pid-file={path('munged.pid')}",
            f"--log-file={path('munged.log')}",
            f"--seed-file={path('munge/seed')}",
        ],
        "munged.out",
    )
    _start_mariadb(started)
    _write("slurm.conf", _slurm_conf())
    _write("cgroup.conf", CGROUP_CONF)
    _write("slurmdbd.conf", _dbd_conf(), 0o600)
    _spawn(["slurmdbd", "-D"], "slurmdbd.out")
    _wait(lambda: _sacctmgr_answers(), "slurmdbd (sacctmgr list cluster)", started)
    _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], check=False)
    _spawn(["slurmctld", "-D", "-i"], "slurmctld.out")
    _spawn(["slurmd", "-D", "-N", NODE], "slurmd.out")


def _start_mariadb(started: float) -> None:
    # No system tables (mariadb-install-db needs the client package): with the grant
    # tables skipped, an empty data directory is a working server.
    _spawn(
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={path('mysql')}",
            f"--socket={path('mysql.sock')}",
            f"--pid-file={path('mariadbd.pid')}",
            f"--port={PORTS['mysql']}",
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",  # a private database on loopback: no accounts to manage
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=8M",
        ],
        "mariadbd.log",
    )
    _wait(lambda: _port_open(PORTS["mysql"]), "MariaDB (its port)", started)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _sacctmgr_answers() -> bool:
    return _run(["sacctmgr", "-n", "list", "cluster"], check=False) == 0


def _run(argv: list[str], check: bool = True) -> int:
    done = subprocess.run(
        argv,
        env={**os.environ, "SLURM_CONF": path("slurm.conf")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and done.returncode != 0:
        raise StartFailed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.returncode


def _wait(condition: object, what: str, started: float) -> None:
    assert callable(condition)
    while not condition():
        if time.monotonic() - started > START_TIMEOUT_S:
            raise StartFailed(f"{what} did not come up within {START_TIMEOUT_S:.0f}s; {_log_tails()}")
        time.sleep(0.2)


def _log_tails() -> str:
    out = []
    for name in ("munged.log", "mariadbd.log", "slurmdbd.log", "slurmctld.log", "slurmd.log"):
        try:
            with open(path(name), errors="replace") as log:
                tail = "".join(log.readlines()[-8:]).strip()
        except OSError:
            tail = "(no log)"
        out.append(f"{path(name)} ends with:\n{tail}")
    return "\n".join(out)


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    try:
        return find_or_start()
    except Unavailable as exc:
        pytest.skip(f"slurm tests skipped: {exc}")
    except StartFailed as exc:
        pytest.fail(str(exc), pytrace=False)
