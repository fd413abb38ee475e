"""Shared pytest fixtures; each section registers fixtures kept in their own module."""

# --- docker: a real dockerd and a busybox test image (tests/dockerd.py) ---
from dockerd import docker_image, docker_url

__all__ = ["docker_image", "docker_url"]
