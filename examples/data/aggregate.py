"""Summarise whatever the sweep produced: the best result of the grid lines that succeeded.

labrun runs it after every train task ended (allow_failed = true) and writes how each
ended to {shared}/upstream/train.jsonl. It writes best.json from what is there and exits
3 when some lines failed: the summary is partial, so a rerun after the fix runs it again.
"""

import json
import os
import sys


def main(shared: str) -> int:
    with open(os.path.join(shared, "upstream", "train.jsonl")) as handle:
        ended = [json.loads(line) for line in handle]
    failed = [t["task"] for t in ended if t["state"] != "succeeded"]
    results = []
    for name in sorted(os.listdir(shared)):
        if name.startswith("result-") and name.endswith(".json"):
            with open(os.path.join(shared, name)) as handle:
                results.append(json.load(handle))
    best = max(results, key=lambda r: r["score"]) if results else None
    with open(os.path.join(shared, "best.json"), "w") as handle:
        json.dump({"best": best, "results": len(results), "failed": failed}, handle)
    print(f"{len(results)} results, best: {best}")
    if failed:
        print(f"partial: {len(failed)} grid line(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
