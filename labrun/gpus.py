"""GPUs: the local inventory (NVML through pynvml) and exclusive assignment to attempts.

The inventory is one seam, `INVENTORY`: a function returning the local GPUs. Tests (and
machines without NVML) replace it with `use_inventory`; the real one asks NVML and
returns nothing where there is no driver or no pynvml. Remote nodes are probed by the
agent with nvidia-smi instead (the agent has no third-party modules).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str = ""
    memory: int = 0  # bytes


def nvml_inventory() -> tuple[Gpu, ...]:
    """The GPUs NVML sees; () without pynvml, a driver or a device."""
    if not os.path.exists("/dev/nvidiactl"):  # no NVIDIA driver loaded: skip pynvml's import
        return ()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecated `pynvml` package, if installed, warns
            import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no device
        return ()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            text = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(Gpu(index, text, int(memory)))
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


INVENTORY: list[Callable[[], tuple[Gpu, ...]]] = [nvml_inventory]


def use_inventory(inventory: Callable[[], tuple[Gpu, ...]]) -> Callable[[], tuple[Gpu, ...]]:
    """Replace the local inventory (tests feed fake GPUs here); returns the previous one."""
    previous = INVENTORY[0]
    INVENTORY[0] = inventory
    return previous


def local_gpu_indices() -> tuple[int, ...]:
    return tuple(gpu.index for gpu in INVENTORY[0]())


def assign(count: int, devices: Iterable[int], busy: Iterable[int]) -> tuple[int, ...]:
    """`count` device indices not in `busy`, lowest first; () when not enough are free."""
    taken = set(busy)
    free = [d for d in devices if d not in taken]
    return tuple(free[:count]) if count <= len(free) else ()


def gpu_env(indices: tuple[int, ...]) -> dict[str, str]:
    """What tells CUDA programs which devices are theirs."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, indices))}
