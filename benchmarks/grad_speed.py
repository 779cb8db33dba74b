"""Manual vs autodiff gradients of the MLP 784-512-512-10 at batch 128: time and compiled memory.

    python benchmarks/grad_speed.py [--batch 128] [--rounds 20] [--out results/grad_speed.json]

The two jitted functions are timed alternately in one process (each round times N calls of each),
so machine noise hits both alike; the ratio autodiff_time / manual_time is >= 1 when manual is faster.
"""

import argparse
import json
import time

import jax
import numpy as np

import jaxnn as nn
from jaxnn_lab.bench import write_json


def timed(f, args, calls):
    start = time.perf_counter()
    for _ in range(calls):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = nn.mlp([784, 512, 512, 10], activation="relu")
    _, params = model.init(jax.random.PRNGKey(0), (784,))
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, 784))
    labels = jax.random.randint(jax.random.PRNGKey(2), (args.batch,), 0, 10)
    inputs = (params, x, labels)

    result = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "batch": args.batch}
    fns = {}
    for mode in ("manual", "autodiff"):
        jitted = jax.jit(nn.value_and_grad(model, nn.losses.softmax_cross_entropy, mode))
        compiled = jitted.lower(*inputs).compile()
        memory = compiled.memory_analysis()
        result[f"{mode}_temp_bytes"] = int(memory.temp_size_in_bytes) if memory is not None else None
        jax.block_until_ready(compiled(*inputs))
        fns[mode] = compiled
    times = {"manual": [], "autodiff": []}
    for _ in range(args.rounds):
        for mode in ("manual", "autodiff"):
            times[mode].append(timed(fns[mode], inputs, args.calls))
    for mode in times:
        result[f"{mode}_ms"] = 1e3 * float(np.median(times[mode]))
    result["speed_ratio_autodiff_over_manual"] = result["autodiff_ms"] / result["manual_ms"]
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
