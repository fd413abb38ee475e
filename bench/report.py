"""`labrun report` at scale: time, file size and peak memory for 1k/10k/100k-task runs.

Each run is the synthetic store of the tests (every 50th task failed after an OOM-killed
attempt, four nodes), written straight into a real database; each report is the real
CLI in a subprocess, its peak RSS read from wait4. Prints one table; asserts nothing
(the bounds are tested in tests/test_report_html.py and tests/test_report_trace.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic_store import make_run

SIZES = (1_000, 10_000, 100_000)


def measure(state: Path, fmt: str, out: Path) -> tuple[float, int, int]:
    """(seconds, bytes written, peak RSS in KiB) of one `labrun report`."""
    env = {**os.environ, "LABRUN_STATE_DIR": str(state)}
    cmd = [sys.executable, "-m", "labrun", "report", "last", "--format", fmt, "-o", str(out)]
    begin = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - begin
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"labrun report --format {fmt} failed on {state}")
    return took, out.stat().st_size, int(usage.ru_maxrss)


def main() -> None:
    print(f"{'tasks':>8} {'format':>6} {'seconds':>8} {'size':>10} {'peak RSS':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            state = make_run(Path(tmp) / f"s{n}", n)
            for fmt in ("html", "tsv", "json"):
                took, size, rss = measure(state, fmt, Path(tmp) / f"r{n}.{fmt}")
                print(f"{n:>8} {fmt:>6} {took:>8.2f} {size / 1e6:>8.2f}MB {rss / 1024:>8.1f}MB")


if __name__ == "__main__":
    main()
