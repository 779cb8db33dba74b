"""Host memory for XLA's CPU programs: keep what a call frees for the next call.

Each call of a compiled XLA program on the CPU allocates its temporary buffers as one block and
frees it when the call ends; the CNN's training step at batch 128 needs about 72 MiB of them.
glibc's malloc hands a block that large (over 32 MiB, or over 64 MiB from a worker thread's arena)
straight from the operating system with mmap and gives it back with munmap, so every call touches
fresh pages: about 18,000 page faults per step, a third of the step's time on a 2-core CPU
(benchmarks/own_loop.py). A `lax.scan` of many steps inside one call pays that once, which is why
`fit` did not see it and a user's own `jax.jit` loop, one call per step, did.

`reuse_host_memory()` tells glibc to serve every allocation from one heap (one arena, no mmap) and
to keep freed memory instead of returning it to the system (as a GPU allocator keeps its pool): the
later calls of a program find their block already mapped (most of them: now and then a call still
faults its pages in again). The price is that the process's resident memory stays at its peak.
`import jaxnn` calls it on a Linux CPU machine, before JAX has started its threads (later, their
arenas exist already and the setting cannot reach them); `JAXNN_HOST_MEMORY=release` in the
environment leaves glibc's defaults alone.
"""

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import sys

__all__ = ["reuse_host_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def reuse_host_memory() -> bool:
    """Make glibc keep freed memory for reuse (one arena, no mmap, no trimming).

    **Returns:** True if the setting was made; False where it cannot help or was declined: not
    Linux with glibc, JAX's backends already started, an accelerator plugin installed (its programs
    do not run in host memory), or `JAXNN_HOST_MEMORY=release` in the environment.
    """
    if os.environ.get("JAXNN_HOST_MEMORY", "").lower() == "release" or not sys.platform.startswith("linux"):
        return False
    if _backends_started() or _accelerator_plugin():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
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
