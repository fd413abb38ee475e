"""A stand-in for a model's training script: stdlib only, a second or less per grid line.

It holds depth x 12 MiB while it "trains" (so deeper models need more memory, as real
ones do) and writes a JSON result. A learning rate listed in diverges.txt (next to this
script) fails with exit 2, the way a NaN loss would: a deterministic error, not worth a
retry (the job says so with no_retry_exit = [2]).
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--depth", type=int, required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    diverging = os.path.join(HERE, "diverges.txt")
    if os.path.exists(diverging):
        with open(diverging) as handle:
            if str(args.lr) in handle.read().split():
                print(f"ValueError: loss is NaN after 3 steps at lr={args.lr}", file=sys.stderr)
                return 2
    weights = bytearray(args.depth * 12 * 1024 * 1024)  # the model, in memory at once
    for i in range(0, len(weights), 4096):
        weights[i] = 1  # touch every page so it counts
    time.sleep(2.0)  # the epochs: long enough for labrun to sample the peak
    score = 0.9 - abs(math.log10(args.lr) + 2) / 5 - abs(args.depth - 6) / 40 + args.fold / 100
    with open(args.out, "w") as handle:
        json.dump({"lr": args.lr, "depth": args.depth, "fold": args.fold, "score": round(score, 4)}, handle)
    print(f"lr={args.lr} depth={args.depth} fold={args.fold}: score {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
