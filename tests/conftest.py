"""Shared pytest fixtures; each section registers fixtures kept in their own module."""

# --- docker: a real dockerd and a busybox test image (tests/dockerd.py) ---
from dockerd import docker_image, docker_url

# --- slurm: a private single-node Slurm cluster with accounting (tests/slurm.py) ---
from slurm import slurm_cluster

# --- ssh: real sshd servers on loopback ports with throw-away keys (tests/sshd.py) ---
from sshd import sshd_lab

__all__ = ["docker_image", "docker_url", "slurm_cluster", "sshd_lab"]
