"""Host memory for XLA's CPU programs: keep what a call frees for the next call.

Each call of a compiled XLA program on the CPU allocates its temporary buffers as one block and
frees it when the call ends. glibc's malloc hands a block that large (over its mmap threshold)
straight from the operating system with mmap and gives it back with munmap, so every call of a
program jitted once per step touches fresh pages, and page faults take a large share of a small
step's time (benchmarks/own_loop.py measures it). A `lax.scan` of many steps inside one call pays
that once, which is why `fit` does not need this and a user's own `jax.jit` loop does.

Two settings, neither made by `import jaxnn`:

- `keep_freed_memory()`: no mmap for large blocks and no trimming of the heap, so the later calls of
  a program find their block already mapped. These are process-wide settings that take effect at
  any time; `nn.jit` makes them when it compiles a step on a Linux CPU machine (the reason to call
  it), and `JAXNN_HOST_MEMORY=release` in the environment declines them.
- `reuse_host_memory()`: the same, and one malloc arena for every thread. It must run before JAX
  starts its threads (their arenas exist afterwards), so it is an explicit opt-in, called first
  thing by a script that wants it.

The price of both is that the process's resident memory stays at its peak, for every library in
the process.
"""

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys

__all__ = ["reuse_host_memory", "keep_freed_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


KEEP = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
"""No mmap for large blocks, no trimming: process-wide, effective whenever they are made."""


def reuse_host_memory() -> bool:
    """Opt in, first thing in a script: one malloc arena for every thread, no mmap, no trimming.

    **Returns:** True if the settings were made; False where they cannot help or were declined: not
    Linux with glibc, JAX's backends already started (call it before the first array is made), an
    accelerator plugin installed (its programs do not run in host memory), or
    `JAXNN_HOST_MEMORY=release` in the environment.
    """
    if _backends_started():
        return False
    return _mallopt(((_M_ARENA_MAX, 1),) + KEEP)


def keep_freed_memory() -> bool:
    """No mmap for large blocks and no heap trimming, so that a program called once per step reuses
    the memory its last call freed (what `nn.jit` sets when it compiles a step).

    **Returns:** True if the settings were made; False where they cannot help or were declined (not
    Linux with glibc, an accelerator plugin installed, `JAXNN_HOST_MEMORY=release`).
    """
    return _mallopt(KEEP)


def _mallopt(settings: tuple) -> bool:
    if os.environ.get("JAXNN_HOST_MEMORY", "").lower() == "release" or not sys.platform.startswith("linux"):
        return False
    if _accelerator_plugin():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return all(mallopt(option, value) == 1 for option, value in settings)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge  # noqa: PLC0415  (no public way to ask)

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True  # unknown: do not touch a running process


def _accelerator_plugin() -> bool:
    """Whether JAX will run on an accelerator: JAX_PLATFORMS names one first, or (unset) a GPU or
    TPU plugin is installed, found as JAX finds them."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return not platforms.startswith("cpu")
    if importlib.util.find_spec("jax_plugins") is not None or importlib.util.find_spec("libtpu"):
        return True
    return any(True for _ in importlib.metadata.entry_points(group="jax_plugins"))
