"""Data parallelism with JAX's own sharding: a 1-D device mesh with axis "data"; each batch is
split along it, parameters and optimizer state are replicated. XLA inserts the all-reduce of the
gradients itself: no home-made distribution layer.

    mesh = data_mesh(8)
    state, history = train.fit(..., mesh=mesh)          # or experiments/train.py --devices 8

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts) gives 8
host devices to try it. Across hosts, call jax.distributed.initialize() first on every host
(see the README); jax.devices() then lists all hosts' devices and the same mesh spans them.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import InputError

DATA = "data"


def data_mesh(n_devices=None):
    """A mesh over the first n_devices devices (all by default), one axis named "data"."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if n < 1 or n > len(devices):
        raise InputError(
            f"asked for {n} devices, {len(devices)} available ({jax.default_backend()}); on a CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts"
        )
    return Mesh(np.array(devices[:n]), (DATA,))


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicate(tree, mesh):
    """Place every leaf of tree whole on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(x, mesh):
    """Inside jit: ask XLA to split x's first (batch) axis over the mesh's devices."""
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))
