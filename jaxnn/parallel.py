"""Data parallelism with JAX's own sharding: a 1-D device mesh with axis "data"; each batch is
split along it, parameters and optimizer state are replicated. XLA inserts the all-reduce of the
gradients itself: no home-made distribution layer.

    mesh = data_mesh(8)
    options = train.TrainOptions(mesh=mesh)
    state, history = train.fit(..., options=options)    # or experiments/train.py --devices 8

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts) gives 8
host devices to try it. Across hosts (one process per host), call `start_process` first on every
host (see the README); jax.devices() then lists all processes' devices and the same mesh spans
them; each process holds the same host arrays, and XLA's all-reduce crosses the processes.
"""

import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import Error, InputError

__all__ = [
    "DATA",
    "data_mesh",
    "start_process",
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


def start_process(coordinator: str, num_processes: int, process_id: int, timeout: float = 300) -> None:
    """Join a multi-process run (`jax.distributed`); call it before any other JAX work.

    **Arguments:**

    - `coordinator`: "HOST:PORT" of process 0, the same in every process.
    - `num_processes`: the processes in the run.
    - `process_id`: this process's id in [0, num_processes).
    - `timeout`: seconds to wait for the others.

    **Returns:** None, once every process has joined. On CPUs the collectives run over gloo.

    Before JAX joins them, the processes meet on PORT with plain TCP, so that one that waits in
    vain ends with an Error instead of JAX aborting it with a C++ stack trace: process 0 listens
    and waits up to `timeout` seconds for each other process to knock once; the others knock until
    process 0 answers, for up to `timeout` seconds. Then process 0 serves JAX's coordinator on PORT.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise InputError(f"process id {process_id} is not in [0, {num_processes})")
    host, port = _host_port(coordinator)
    if not timeout > 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    if process_id == 0:
        _wait_for_peers(coordinator, port, num_processes - 1, timeout)
    else:
        _wait_for_coordinator(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # the others may knock long before the last one does: their JAX wait spans process 0's
    join_timeout = timeout if process_id == 0 else 2 * timeout
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=max(1, round(join_timeout)),
        )
    except jax.errors.JaxRuntimeError as e:  # process 0: the port was taken after the check
        raise Error(f"could not serve the coordinator at {coordinator} ({e}); is the port in use?") from None


def _host_port(coordinator):
    host, _, port = coordinator.rpartition(":") if isinstance(coordinator, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"coordinator must be HOST:PORT with a port in 1..65535, got {coordinator!r}")
    return host, int(port)


def _wait_for_peers(coordinator, port, peers, timeout):
    """Process 0: listen on every address at `port` (as JAX binds it) until `peers` connections have
    come (each other process knocks once, in _wait_for_coordinator), then close, freeing the port
    for JAX's coordinator. Fails clearly if the port is taken or the others do not all come."""
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    with socket.socket(family) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
        try:
            listener.bind(("", port))
        except OSError as e:
            raise Error(
                f"could not serve the coordinator at {coordinator}: port {port} is in use ({e.strerror or e})"
            ) from None
        listener.listen(max(1, peers))
        deadline = time.monotonic() + timeout
        arrived = 0
        while arrived < peers:
            listener.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                raise Error(
                    f"only {arrived} of the {peers} other processes reached the coordinator "
                    f"{coordinator} within {timeout:g} s: start each with the same --coordinator "
                    f"and --num-processes {peers + 1}, and a --process-id in 1..{peers}"
                ) from None
            connection.close()
            arrived += 1


def _wait_for_coordinator(host, port, timeout):
    """Try to open a TCP connection to process 0 until it answers or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise Error(
                    f"could not reach the coordinator {host}:{port} within {timeout:g} s "
                    f"({e.strerror or e}): start process 0 there first, with the same --coordinator"
                ) from None
            time.sleep(0.2)


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
