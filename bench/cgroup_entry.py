"""How much a per-attempt cgroup costs a trivial task, by way of entering it.

Runs N trivial tasks (/bin/true) serially each way, interleaved, in the same run:
  plain     Popen only (the process runtime's spawn)
  entered   create cgroup, `with cg.entered(): Popen`, usage(), remove()   (chosen)
  sh-prefix create cgroup, Popen(cg.wrap_argv(argv)), usage(), remove()
  preexec   create cgroup, Popen(preexec_fn=<write "0" to cgroup.procs>), usage(), remove()
Needs root and a cgroup (v1 or v2). Usage: python bench/cgroup_entry.py [N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from labrun.cgroup import AttemptCgroup, Limits, create, detect

ARGV = ["/bin/true"]
LIMITS = Limits(memory=256 * 1024 * 1024, cpus=1.0)


def preexec(cg: AttemptCgroup) -> Callable[[], None]:
    files = cg.procs_files

    def enter() -> None:
        for path in files:
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)

    return enter


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    support = detect()
    if not support.ok:
        sys.exit(f"no cgroup here: {support.reason}")
    null = subprocess.DEVNULL

    def popen(argv: list[str], **kw: object) -> None:
        subprocess.Popen(argv, process_group=0, stdout=null, stderr=null, **kw).wait()  # type: ignore[call-overload]

    def plain(i: int) -> None:
        popen(ARGV)

    def attempt(i: int, how: str) -> None:
        cg = create(support, f"bench-{os.getpid()}-{i}", LIMITS)
        if how == "entered":
            with cg.entered():
                proc = subprocess.Popen(cg.command(ARGV), process_group=0, stdout=null, stderr=null)
            proc.wait()
        elif how == "sh-prefix":
            popen(cg.wrap_argv(ARGV))
        else:
            popen(ARGV, preexec_fn=preexec(cg))
        cg.usage()
        cg.remove()

    ways: dict[str, Callable[[int], None]] = {"plain": plain}
    for how in ("entered", "sh-prefix", "preexec"):
        ways[how] = lambda i, how=how: attempt(i, how)  # type: ignore[misc]
    # Interleaved, one of each way per round, so a load change hits every way alike.
    spent = dict.fromkeys(ways, 0.0)
    for i in range(n):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn(i)
            spent[name] += time.perf_counter() - start
    print(f"{support.mechanism}, {n} trivial tasks each way, serial, interleaved")
    for name, total in spent.items():
        print(
            f"  {name:10s} {n / total:7.0f} tasks/s {1e3 * total / n:5.2f} ms/task "
            f"{spent['plain'] / total:4.2f}x plain"
        )


if __name__ == "__main__":
    main()
