"""Data parallelism with JAX's own sharding: a 1-D device mesh with axis "data"; each batch is
split along it, parameters and optimizer state are replicated. XLA inserts the all-reduce of the
gradients itself: no home-made distribution layer.

    mesh = data_mesh(8)
    options = train.TrainOptions(mesh=mesh)
    # or experiments/train.py --devices 8
    state, history = train.fit(..., options=options)

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts) gives 8
host devices to try it. Across hosts (one process per host), join them first on every host
(`jax.distributed.initialize`, or the lab's `jaxnn_lab.launcher.start_process`, which adds
a rendezvous with clear errors); jax.devices() then lists all processes' devices and the same
mesh spans them; each process holds the same host arrays, and XLA's all-reduce crosses them.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import InputError
from .renamed import removed_attribute

__all__ = [
    "DATA",
    "data_mesh",
    "is_main_process",
    "replicated",
    "batch_sharded",
    "replicate",
    "shard_batch",
]

DATA = "data"
"""The name of the mesh axis a batch is split along."""


def data_mesh(n_devices: int | None = None) -> Mesh:
    """A device mesh for data parallelism.

    **Arguments:**

    - `n_devices`: how many of `jax.devices()` to use (all by default).

    **Returns:** a Mesh over the first n_devices devices, with one axis named "data".
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if n < 1 or n > len(devices):
        raise InputError(
            f"asked for {n} devices, {len(devices)} available ({jax.default_backend()}); on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts"
        )
    return Mesh(np.array(devices[:n]), (DATA,))


def is_main_process() -> bool:
    """**Returns:** True in process 0 (the one that writes files and prints), and in a single-process run."""
    return jax.process_index() == 0


def replicated(mesh: Mesh) -> NamedSharding:
    """**Returns:** the sharding that puts an array whole on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """**Returns:** the sharding that splits an array's first (batch) axis over `mesh`'s "data" axis."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of a pytree whole on every device of a mesh.

    **Arguments:**

    - `tree`: a pytree of arrays; across processes every process passes the same values (they go
      through host memory: a process's own device arrays cannot be sent to another's devices).
    - `mesh`: the mesh.

    **Returns:** the tree, replicated.
    """
    if jax.process_count() > 1:
        tree = jax.tree_util.tree_map(np.asarray, tree)
    return jax.device_put(tree, replicated(mesh))


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Inside jit: ask XLA to split x's first (batch) axis over the mesh's devices.

    **Arguments:** `x` an array with a batch axis; `mesh` the mesh.

    **Returns:** x, with the sharding constraint.
    """
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))


def __getattr__(name: str):
    """Names earlier versions had here: an error that says where they went."""
    moved = {
        "start_process": "jax.distributed.initialize, or jaxnn_lab.launcher.start_process (the lab's "
        "launcher, with a rendezvous that fails with a clear error)",
    }
    raise removed_attribute(__name__, name, moved)
