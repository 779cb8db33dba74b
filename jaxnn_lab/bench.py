"""Shared by the benchmark scripts: write a result as JSON, creating the folder; a median with its
spread; compiled functions timed in turns; the machine a result was measured on."""

import json
import os
import platform
import time

import jax
import numpy as np

from jaxnn.files import write_text


def write_json(path, result):
    """Write result to path (if a path is given); the folder is created."""
    if not path:
        return
    write_text(path, json.dumps(result, indent=2))  # atomic; the folder is created


def spread(values):
    """{"median", "min", "max"} of repeated measurements, as the README reports them."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def time_in_turns(compiled, args, rounds):
    """{name: [seconds of each round]} for compiled functions of the same (already warm) args, each
    round running every function once, in turn, so that a change in the machine's speed falls on all."""
    import jax  # noqa: PLC0415

    seconds = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, fn in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def fit_quietly(model, ds, epochs, batch_size, opt, seed, loss=None, augment=None):
    """train.fit on ds's (x_train, y_train, x_test, y_test) with softmax cross-entropy (or `loss`,
    e.g. a label-smoothed one; the test loss stays plain cross-entropy), no progress bar and no
    per-epoch evaluation (the test accuracy after the last epoch only), as the time-to-accuracy
    benchmarks run it; augment: as train.fit's. Returns fit's history."""
    import jax  # noqa: PLC0415

    import jaxnn as nn  # noqa: PLC0415
    from jaxnn import train  # noqa: PLC0415

    return train.fit(
        model,
        loss or nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=epochs,
        batch_size=batch_size,
        opt=opt,
        key=jax.random.PRNGKey(seed),
        options=train.TrainOptions(augment=augment, test_loss=nn.losses.softmax_cross_entropy),
        reporting=train.Reporting(progress=False, eval_every_epoch=False),
    )[1]


def machine():
    info = {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except Exception:
        pass
    try:  # the CPU's marketing name, on Linux
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
        pass
    info["gpu"] = jax.devices()[0].device_kind if jax.default_backend() == "gpu" else None
    return info


def step_runner(step, state, x, y):
    """A timing loop over a training step `step(state, x, y) -> (state, aux)`: returns run(n), which
    makes n calls, each from the state the last one left, and waits for the result. One call is
    made here (it compiles, if nothing has yet)."""
    holder = {"state": step(state, x, y)[0]}

    def run(n):
        s = holder["state"]
        for _ in range(n):
            s, _ = step(s, x, y)
        jax.block_until_ready(s)
        holder["state"] = s

    return run
