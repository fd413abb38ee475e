"""How often the head samples the memory of running attempts, and from which source.

The rule for a process tree's size (`tree_rss`) and the bounded series (`Series`) live in
the stdlib-only `labrun.memseries`, which the SSH agent runs too. Each executor samples all
its running attempts in one round when `wake_at` says (never per attempt, never on a
fixed poll of the runner): the process runtime its trees' RSS, the cgroup runtime each
cgroup's current usage, Docker each container's parent cgroup.
"""

from __future__ import annotations

from labrun.memseries import Series, tree_rss

SAMPLE_AFTER = 1.0  # seconds an attempt runs before it is first sampled
SAMPLE_EVERY = 1.0  # seconds between samples of one executor's attempts

__all__ = ["SAMPLE_AFTER", "SAMPLE_EVERY", "Series", "tree_rss"]
