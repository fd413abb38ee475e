"""Executors start, watch, signal and adopt attempts: one per runtime (process, cgroup, docker).

`base.py` holds the seam every executor implements; executors report raw `Facts` and
never decide what they mean (that is `outcome.py`).
"""
