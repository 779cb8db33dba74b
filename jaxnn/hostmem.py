"""Host memory for XLA's CPU programs: keep what a call frees for the next call, as an opt-in.

Each call of a compiled XLA program on the CPU allocates its temporary buffers as one block and
frees it when the call ends. glibc's malloc hands a block that large straight from the operating
system (mmap, or a heap of a worker thread's arena that is deleted once empty) and gives it back,
so every call of a program jitted once per step touches fresh pages, and page faults take a large
share of a small step's time (the own-loop benchmark page). A `lax.scan` of many steps inside one
call pays that once, which is why `fit` does not need this and a user's own `jax.jit` loop does.

`reuse_host_memory()` makes every thread allocate from one heap (one arena, no mmap) that keeps
freed memory instead of returning it to the system (as a GPU allocator keeps its pool). The
threads' arenas are chosen when JAX starts its threads, so it must run before JAX's first array:
first thing in a script, after `import jaxnn` and before anything else. `import jaxnn` itself
changes nothing in the process: the setting is process-wide (the resident memory of every library
in the process, PyTorch included, stays at its peak), so it is the script's choice. The same
setting without code, for any program, is glibc's environment variable:

    export GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0
    export GLIBC_TUNABLES=$GLIBC_TUNABLES:glibc.malloc.trim_threshold=2147483647
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
    """Opt in, first thing in a script: one malloc arena for every thread, no mmap, no trimming, so
    that each call of a jitted step reuses the memory the last call freed.

    **Returns:** True if the settings were made; False where they cannot help or were declined: not
    Linux with glibc, JAX's backends already started (call it before the first array is made: the
    threads' arenas exist afterwards, and the other two settings alone do not help), an accelerator
    plugin installed (its programs do not run in host memory), or `JAXNN_HOST_MEMORY=release` in the
    environment.
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
