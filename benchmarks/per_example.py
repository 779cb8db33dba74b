"""Per-example gradients: one vmapped computation vs a Python loop of single-example gradients.

python benchmarks/per_example.py [--batch 128] [--out FILE]
"""

import argparse
import json
import time

import jax
import numpy as np

import jaxnn as nn
from jaxnn_lab.bench import write_json


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    model = nn.mlp([784, 512, 512, 10])
    loss = nn.losses.softmax_cross_entropy
    _, params = model.init(jax.random.PRNGKey(0), (784,))
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, 784))
    y = jax.random.randint(jax.random.PRNGKey(2), (args.batch,), 0, 10)
    vmapped = jax.jit(nn.per_example_grads(model, loss))
    single = jax.jit(nn.value_and_grad(model, loss))
    jax.block_until_ready(vmapped(params, x, y))
    jax.block_until_ready(single(params, x[:1], y[:1]))

    def loop():
        out = [single(params, x[i : i + 1], y[i : i + 1]) for i in range(args.batch)]
        jax.block_until_ready(out)
        return out

    times = {"vmap": [], "loop": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(vmapped(params, x, y))
        times["vmap"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop()
        times["loop"].append(time.perf_counter() - t0)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    result = {
        "device": jax.devices()[0].device_kind,
        "batch": args.batch,
        "ms": ms,
        "speedup_vmap_over_loop": ms["loop"] / ms["vmap"],
    }
    print(json.dumps(result))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
