"""`[nodes.NAME]` tables of labrun.toml for machines reached over SSH: their keys, declared once.

    [nodes.gpu-box]
    ssh = "alice@gpu-box"          # anything `ssh` accepts; the user's ~/.ssh/config applies
    ssh_config = "~/lab/ssh_config"  # optional: passed to ssh as -F
    ssh_options = ["Port=2222"]    # optional: each passed as -o
    cpus = "auto"                  # or a number; "auto" asks the node
    memory = "auto"                # or a size
    gpus = "auto"                  # or a list of device indices; "auto" asks nvidia-smi there
    runtimes = ["process", "cgroup"]   # or "docker" (the node's docker CLI and daemon)
    workdir = "~/.cache/labrun"    # on the node: the agent and the attempts' status and logs
    accept_new_host_keys = false   # true: trust a node's first host key (never a changed one)
    lost_after = "60s"             # silence after which its running attempts count as lost

Values left "auto" are None here and filled in from the node's probe when it connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from labrun.config.lab import NodeConfig, NodeSpec
from labrun.config.schema import Key
from labrun.model import Runtime
from labrun.units import SIZE_HELP

REMOTE_RUNTIMES = tuple(runtime.value for runtime in Runtime)  # what the agent can run
DEFAULT_WORKDIR = "~/.cache/labrun"

SSH_KEYS: tuple[Key, ...] = (
    Key("ssh", "str", None, 'The destination, as `ssh` takes it: "user@host" or a Host of your ssh config.'),
    Key("ssh_config", "path", None, "An ssh config file passed to ssh as -F (relative: to labrun.toml)."),
    Key("ssh_options", "ssh_options", (), 'Options passed to ssh, each as -o: ["Port=2222"].'),
    Key("cpus", "auto_cpus", None, 'CPUs attempts may use there: "auto" (asks the node) or a number.'),
    Key(
        "memory",
        "auto_size",
        None,
        'Memory attempts may use there: "auto" (asks the node) or ' + SIZE_HELP + ".",
    ),
    Key(
        "gpus",
        "gpus",
        None,
        'GPU indices attempts may be given: "auto" (nvidia-smi there) or a list like [0, 1].',
    ),
    Key("runtimes", "runtimes", ("process",), "Runtimes the node offers.", choices=REMOTE_RUNTIMES),
    Key(
        "workdir", "remote_dir", DEFAULT_WORKDIR, "On the node: the agent and the attempts' status and logs."
    ),
    Key("accept_new_host_keys", "bool", False, "Trust a node's first host key (never a changed one)."),
    Key("lost_after", "silence", 60.0, "Silence after which the node's running attempts count as lost."),
)


@dataclass(frozen=True)
class SshNodeSpec(NodeConfig):
    backend: ClassVar[str] = "ssh"
    ssh: str = ""
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    cpus: float | None = None  # None: "auto"
    memory: int | None = None
    gpus: tuple[int, ...] | None = None
    runtimes: tuple[Runtime, ...] = (Runtime.PROCESS,)
    workdir: str = DEFAULT_WORKDIR
    accept_new_host_keys: bool = False
    lost_after: float = 60.0

    def declared(self) -> NodeSpec:
        return NodeSpec(self.name, self.cpus or 0.0, self.memory or 0, self.runtimes, self.gpus or ())

    def auto(self) -> frozenset[str]:
        values = {"cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}
        return frozenset(key for key, value in values.items() if value is None)
