"""Judge what the test-lane guest left in its results share.

usage: python3 vm/report.py RESULTS_DIR LANE_SECONDS

The lane fails when the guest never finished its command (did not come up, hung,
crashed), when pytest failed, or when not a single test passed (all skipped or
none collected: a lane that ran nothing proves nothing).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _outcomes(junit: Path) -> list[tuple[str, str]]:
    """(outcome, test id) for every test case in a pytest junit file."""
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append((outcome.upper(), name))
    return cases


def judge(results: Path, seconds: float) -> list[str]:
    """The problems with this run of the lane; empty when it passed. Prints the summary."""
    kernel = _read(results / "uname")
    print(f"test-vm: guest kernel {kernel or '(the guest never came up)'}")
    if _read(results / "done") is None:
        return ["the guest did not finish its command (see the console output above)"]
    rc = _read(results / "rc")
    junit = results / "junit.xml"
    cases = _outcomes(junit) if junit.exists() else []
    for outcome, name in cases:
        print(f"test-vm:   {outcome:8} {name}")
    passed = sum(1 for outcome, _ in cases if outcome == "PASSED")
    print(f"test-vm: {passed} of {len(cases)} tests passed in the guest; lane took {seconds:.0f} s")
    problems = []
    if rc != "0":
        problems.append(f"pytest in the guest exited with status {rc}")
    if passed == 0:
        problems.append("no test passed in the guest (all skipped or none collected)")
    return problems


def main(argv: list[str]) -> int:
    problems = judge(Path(argv[1]), float(argv[2]))
    for problem in problems:
        print(f"test-vm: FAIL: {problem}")
    if not problems:
        print("test-vm: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
