"""Data parallelism with JAX's own sharding: a 1-D device mesh with axis "data"; each batch is
split along it, parameters and optimizer state are replicated. XLA inserts the all-reduce of the
gradients itself: no home-made distribution layer.

    mesh = data_mesh(8)
    state, history = train.fit(..., mesh=mesh)          # or experiments/train.py --devices 8

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts) gives 8
host devices to try it. Across hosts (one process per host), call `start_process` first on every
host (see the README); jax.devices() then lists all processes' devices and the same mesh spans
them; each process holds the same host arrays, and XLA's all-reduce crosses the processes.
"""

import socket
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import Error, InputError

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


def start_process(coordinator, num_processes, process_id, timeout=300):
    """Join a multi-process run (jax.distributed): call it before any other JAX work, in each of
    num_processes processes, with the same coordinator "HOST:PORT" (process 0's host) and this
    process's id in [0, num_processes). On CPUs the collectives run over gloo.

    Process 0 serves the coordinator at PORT; the others first wait up to `timeout` seconds for it
    to answer, and fail with an Error if it does not (JAX itself would abort the process). Process 0
    waits up to `timeout` seconds for the others; if they never come, JAX aborts it.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise InputError(f"process id {process_id} is not in [0, {num_processes})")
    host, port = _host_port(coordinator)
    if not timeout > 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    if process_id == 0:
        _check_port_free(coordinator, port)
    else:
        _wait_for_coordinator(host, port, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=max(1, round(timeout)),
        )
    except jax.errors.JaxRuntimeError as e:  # process 0: the port was taken after the check
        raise Error(f"could not serve the coordinator at {coordinator} ({e}); is the port in use?") from None


def _host_port(coordinator):
    host, _, port = coordinator.rpartition(":") if isinstance(coordinator, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"coordinator must be HOST:PORT with a port in 1..65535, got {coordinator!r}")
    return host, int(port)


def _check_port_free(coordinator, port):
    """Process 0 serves on every address at `port` (as JAX binds it): fail clearly if it is taken
    (JAX itself can crash after failing to bind)."""
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
        try:
            probe.bind(("", port))
        except OSError as e:
            raise Error(
                f"could not serve the coordinator at {coordinator}: port {port} is in use ({e.strerror or e})"
            ) from None


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


def is_main_process():
    """True in process 0 (the one that writes files and prints), and in a single-process run."""
    return jax.process_index() == 0


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicate(tree, mesh):
    """Place every leaf of tree whole on every device of the mesh. Across processes every process
    passes the same values; they go through host memory (a process's own device arrays cannot be
    sent to another process's devices directly)."""
    if jax.process_count() > 1:
        tree = jax.tree_util.tree_map(np.asarray, tree)
    return jax.device_put(tree, replicated(mesh))


def shard_batch(x, mesh):
    """Inside jit: ask XLA to split x's first (batch) axis over the mesh's devices."""
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))
