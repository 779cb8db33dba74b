"""Launching a run as several processes: the rendezvous of `start_process` (one process per host,
or several on one machine) and `launch_local`, which starts the processes of one run here."""

import os
import socket
import subprocess
import sys
import time

import jax

from jaxnn.errors import Error, InputError


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


def launch_local(script, args, argv):
    """--local-processes N: run `script` with this command line as N processes of one run on this
    machine (process 0 at a free local port is the coordinator), each with --devices / N CPU
    devices; wait for all."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(argv):
        if word == "--local-processes":
            del argv[i : i + 2]
            break
        if word.startswith("--local-processes="):
            del argv[i]
            break
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    n = args.local_processes
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices // n}")
    children = []
    for i in range(n):
        command = [sys.executable, os.path.abspath(script), *argv, "--coordinator", f"localhost:{port}"]
        command += ["--num-processes", str(n), "--process-id", str(i)]
        children.append(subprocess.Popen(command, env=env))
    stopped = set()
    try:  # wait for all; when one fails, stop the others rather than leave them waiting for it
        while any(child.poll() is None for child in children) and not any(c.poll() for c in children):
            time.sleep(0.2)
    finally:
        for i, child in enumerate(children):
            if child.poll() is None:
                child.terminate()
                stopped.add(i)
    codes = [child.wait() for child in children]
    failed = [f"process {i} exited with status {c}" for i, c in enumerate(codes) if c and i not in stopped]
    if failed:
        raise Error("; ".join(failed) + (" (the others were stopped)" if stopped else ""))
