"""How much arithmetic a compiled program does, and how fast this machine can do it.

    # XLA's count for one call
    flops = program_flops(jax.jit(step).lower(*args).compile())
    # GFLOP/s, measured once per machine
    ceiling = matmul_ceiling()

The count is XLA's cost analysis of the optimised program: a multiply-add is 2 FLOPs, an element-wise
op one per element. XLA counts the body of a loop once, whatever its trip count: the count of `fit`'s
program (a `lax.scan` over a chunk of steps) is one step's, and a model with a loop of its own (a
recurrent layer's scan) is undercounted by its trip count.

The ceiling is the rate of a jitted float32 matmul (1024 x 1024 on the CPU, 4096 x 4096 on an
accelerator): what this machine's dense arithmetic reaches in practice, below the vendor's nominal
peak. It is measured once per machine and backend, in under a second, and kept in a small JSON file
beside the compile cache (`~/.cache/jaxnn/matmul_ceiling.json`, or under `$XDG_CACHE_HOME`; the file
named by `$JAXNN_CEILING_FILE` instead, if set). A file that cannot be written, or one there that is
not such a JSON object, leaves the value unkept (measured again next time) and the file as it was,
never an error.
"""

import json
import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .files import write_text

__all__ = [
    "program_flops",
    "program_bytes",
    "matmul_ceiling",
    "measure_ceiling",
    "ceiling_file",
    "measure_rate",
]


def _cost(compiled: Any) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost or {}


def program_flops(compiled: Any) -> float:
    """XLA's FLOP count of one call of a compiled program (a loop's body counted once).

    **Arguments:** `compiled` a `jax.jit(f).lower(...).compile()` program.

    **Returns:** the count (0.0 where XLA gives none).
    """
    return float(_cost(compiled).get("flops", 0.0))


def program_bytes(compiled: Any) -> float:
    """XLA's count of the bytes one call of a compiled program reads and writes (a loop's body once).

    **Arguments:** `compiled` a `jax.jit(f).lower(...).compile()` program.

    **Returns:** the count (0.0 where XLA gives none).
    """
    return float(_cost(compiled).get("bytes accessed", 0.0))


def measure_rate(fn: Any, args: tuple, work: float, budget_s: float = 0.5, min_calls: int = 5) -> list[float]:
    """Rates of a jitted function, one per call, after one warm-up call.

    **Arguments:** `fn` a jitted function; `args` its arguments; `work` what one call does (FLOPs,
    bytes); `budget_s` stop calling once this many seconds have passed (after `min_calls` calls).

    **Returns:** `work / seconds` of each timed call.
    """
    jax.block_until_ready(fn(*args))
    rates, start = [], time.perf_counter()
    while len(rates) < min_calls or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        rates.append(work / (time.perf_counter() - t0))
        if len(rates) >= 200:
            break
    return rates


def measure_ceiling() -> float:
    """Measure this machine's matmul ceiling now (under a second), without keeping it.

    **Returns:** the median rate of a jitted float32 matmul (1024 x 1024 on the CPU, 4096 x 4096 on
    an accelerator), in GFLOP/s.
    """
    n = 1024 if jax.default_backend() == "cpu" else 4096
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    rates = measure_rate(jax.jit(lambda a: a @ a), (a,), 2.0 * n**3)
    return float(np.median(rates)) / 1e9


def ceiling_file() -> str:
    """**Returns:** where the measured ceiling is kept: `$JAXNN_CEILING_FILE`, else
    `matmul_ceiling.json` in jaxnn's cache folder (`$XDG_CACHE_HOME/jaxnn` or `~/.cache/jaxnn`)."""
    if os.environ.get("JAXNN_CEILING_FILE"):
        return os.environ["JAXNN_CEILING_FILE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxnn", "matmul_ceiling.json")


def _machine_key() -> str:
    device = jax.devices()[0]
    return "|".join(
        (jax.default_backend(), device.device_kind, platform.processor() or platform.machine(),
         str(os.cpu_count()), jax.__version__)
    )  # fmt: skip


def matmul_ceiling(refresh: bool = False) -> float:
    """This machine's matmul ceiling: the median rate of a jitted float32 matmul, in GFLOP/s.

    **Arguments:** `refresh` measure again even if a kept value exists.

    **Returns:** GFLOP/s of one device of the default backend: read from `ceiling_file()` when this
    machine (backend, device kind, processor, core count, JAX version) measured it before, else
    measured now (under a second) and kept there.
    """
    path, key = ceiling_file(), _machine_key()
    kept: object = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                kept = json.load(f)
        except (OSError, ValueError):
            kept = None  # not a file of ours: measured, and the file left as it is
    if isinstance(kept, dict) and not refresh and isinstance(kept.get(key), (int, float)) and kept[key] > 0:
        return float(kept[key])
    value = measure_ceiling()
    if isinstance(kept, dict):
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write_text(path, json.dumps({**kept, key: value}, indent=1) + "\n")
        except OSError:
            pass  # kept nowhere: measured again next time
    return value
