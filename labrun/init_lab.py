"""`labrun init --lab [user@host ...]`: a commented labrun.toml from what the machines say.

This machine is probed here (psutil for CPUs and memory, the GPU seam `labrun.gpus` for
NVML, the cgroup detector and the docker CLI for runtimes); each SSH host through the
agent labrun uses for nodes (one `probe` request). A host that does not answer is
written commented out, with the reason, so the file still loads and `labrun check`
still passes. Values stay "auto" where labrun reads them at each run; the comments say
what was found today.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import tomli_w

from labrun.config.lab import default_state_dir
from labrun.errors import UsageError
from labrun.init_job import inline_list
from labrun.ssh.config import SshNodeSpec
from labrun.units import format_size


@dataclass(frozen=True)
class Found:
    """What one machine said: its probe, or why it could not be probed."""

    name: str
    ssh: str | None  # None: this machine
    probe: dict[str, Any] | None
    error: str = ""


def probe_local() -> dict[str, Any]:
    import psutil

    from labrun.gpus import INVENTORY

    runtimes = ["process"]
    try:
        from labrun.cgroup.detect import detect

        if detect().ok:
            runtimes.append("cgroup")
    except Exception:  # a cgroup layer that fails here only means no cgroup runtime
        pass
    if shutil.which("docker"):
        runtimes.append("docker")
    gpus = [{"index": g.index, "name": g.name} for g in INVENTORY[0]()]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count()
    return {
        "cpus": cpus,
        "memory": int(psutil.virtual_memory().total),
        "gpus": gpus,
        "runtimes": runtimes,
        "hostname": os.uname().nodename,
    }


def node_name(destination: str) -> str:
    """`alice@gpu-box.lab.org` → gpu-box: a name for [nodes.NAME]."""
    host = destination.rsplit("@", 1)[-1].split(":")[0].split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-")
    return name if name and name != "local" else "node"


def probe_ssh(
    destination: str, state_dir: str, ssh_config: str | None = None, timeout: float = 60.0
) -> Found:
    from labrun.ssh.nodes import target_of_spec
    from labrun.ssh.session import AgentSession
    from labrun.ssh.transport import SshError

    spec = SshNodeSpec(node_name(destination), destination, ssh_config=ssh_config)
    session = AgentSession(target_of_spec(spec, state_dir), spec.workdir)
    try:
        return Found(spec.name, destination, session.connect(timeout=timeout))
    except SshError as exc:
        return Found(spec.name, destination, None, str(exc))
    finally:
        session.close()


def _summary(probe: dict[str, Any]) -> str:
    gpus = probe.get("gpus") or []
    names = sorted({str(g.get("name", "")) for g in gpus if g.get("name")})
    gpu_text = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" + (f" ({', '.join(names)})" if names else "")
    return (
        f"{probe['cpus']} CPUs, {format_size(int(probe['memory']))}, {gpu_text}; "
        f"runtimes {', '.join(probe['runtimes'])}"
    )


def _value(key: str, value: object) -> str:
    return tomli_w.dumps({key: value}).strip()


def lab_text(local: dict[str, Any], remote: list[Found], ssh_config: str | None = None) -> str:
    lines = [
        f"# labrun.toml, written by `labrun init --lab` on {time.strftime('%Y-%m-%d')}: the machines",
        '# labrun may use. "auto" is read again at every run; a number caps what labrun uses.',
        "# Looked up as --config, $LABRUN_CONFIG, ./labrun.toml, ~/.config/labrun/labrun.toml.",
        "",
        f'# state_dir = "{default_state_dir()}"  # runs, logs and locks (0700)',
        "",
        f"[nodes.local]  # this machine, {local['hostname']}: {_summary(local)}",
        'cpus = "auto"',
        'memory = "auto"',
        'gpus = "auto"  # or the device indices labrun may hand out, e.g. [0, 1]',
    ]
    taken = {"local"}
    for found in remote:
        name = found.name
        while name in taken:
            name += "-2"
        taken.add(name)
        lines += ["", *_node_lines(name, found, ssh_config)]
    return "\n".join(lines) + "\n"


def _node_lines(name: str, found: Found, ssh_config: str | None) -> list[str]:
    body = [
        _value("ssh", found.ssh),
        *([_value("ssh_config", ssh_config)] if ssh_config else []),
        'cpus = "auto"',
        'memory = "auto"',
        'gpus = "auto"',
    ]
    if found.probe is None:
        reason = " ".join(found.error.split())[:300]
        return [
            f"# {found.ssh} did not answer today, so it is left out (uncomment when it does):",
            f"# {reason}",
            f"# [nodes.{name}]",
            *[f"# {line}" for line in [*body, inline_list("runtimes", ["process"])]],
        ]
    python = found.probe.get("python", "?")
    host = found.probe.get("hostname", found.ssh)
    return [
        f"[nodes.{name}]  # {host}: {_summary(found.probe)}; python {python}",
        *body,
        inline_list("runtimes", list(found.probe["runtimes"])),
    ]


def write_lab_file(
    output: str,
    hosts: list[str],
    ssh_config: str | None = None,
    state_dir: str | None = None,
    local: Callable[[], dict[str, Any]] = probe_local,
) -> str:
    """Probes and writes `output`; returns what to tell the user. Never overwrites a file."""
    if os.path.lexists(output):
        raise UsageError(
            f"{output} exists; labrun init never overwrites a file: write to another with -o NEW.toml"
        )
    state = state_dir or default_state_dir()
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        remote = list(pool.map(lambda host: probe_ssh(host, state, ssh_config), hosts))
    text = lab_text(local(), remote, ssh_config)
    try:
        with open(output, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{output} exists; labrun init never overwrites a file") from None
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    answered = [f.name for f in remote if f.probe is not None]
    missing = [f"{f.ssh} ({f.error.split(';')[0]})" for f in remote if f.probe is None]
    text = f"wrote {output}: local" + "".join(f", {name}" for name in answered)
    if missing:
        text += "; left out (commented): " + ", ".join(missing)
    return text + f"; next: labrun nodes --config {output}"
