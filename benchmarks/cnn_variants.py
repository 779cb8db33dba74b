"""Two ideas for the small MNIST CNN's CPU step (issue 10, item 1), timed against the model as it is.

    python benchmarks/cnn_variants.py [--rounds 9] [--out benchmarks/results/cpu/cnn_variants.json]

Variants of conv 3x3x32, ReLU, max pool, conv 3x3x64, ReLU, max pool, Dense 128, ReLU, Dense 10
(Adam 1e-3, batch 128, random data), each jaxnn's hand backward in a jitted lax.scan of 20 steps
(as fit trains), the variants taking turns in one process (JAX only, so no thread pools compete):
  base:      the model as models.cnn builds it;
  pool-relu: max pool before ReLU in each block. The same function (ReLU and max commute), with
             the ReLU and its backward on a quarter of the pixels;
  patches1:  the first convolution's forward as one matmul of its 3x3x1 patches (9 numbers per
             pixel) instead of XLA's convolution, which handles one input channel poorly in theory.
Reported: ms per step, median [min, max] over the rounds.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import jaxnn as nn
from jaxnn import train
from jaxnn.conv import Conv2D, ConvResiduals
from jaxnn.core import make_layer
from jaxnn.layers import Dense, Flatten
from jaxnn.pooling import MaxPool
from jaxnn_lab.bench import spread, write_json

STEPS, BATCH = 20, 128


def patches_conv(features):
    """Conv2D(features, 3x3, SAME) with its forward as a patches matmul; the backward is Conv2D's."""
    conv = Conv2D(features, (3, 3))

    def forward(params, x):
        w = params["w"]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        views = [padded[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)]
        patches = jnp.concatenate(views, axis=-1)  # (n, h, w, 9 c_in), taps in w's (i, j, c) order
        y = jnp.einsum("nhwk,ko->nhwo", patches, w.reshape(-1, w.shape[3]))
        return y + params["b"], ConvResiduals(x, w)

    return make_layer(f"patches {conv.name}", conv.init, forward, conv.backward)


def model(variant):
    blocks = []
    for i, channels in enumerate((32, 64)):
        conv = patches_conv(channels) if variant == "patches1" and i == 0 else Conv2D(channels, (3, 3))
        relu, pool = nn.activation("relu"), MaxPool()
        blocks += [conv, pool, relu] if variant == "pool-relu" else [conv, relu, pool]
    return nn.serial(*blocks, Flatten(), Dense(128), nn.activation("relu"), Dense(10))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (BATCH, 28, 28, 1))
    y = jax.random.randint(key, (BATCH,), 0, 10)
    runs = {}
    for variant in ("base", "pool-relu", "patches1"):
        net, opt = model(variant), optax.adam(1e-3)
        step = train.make_step(net, nn.losses.softmax_cross_entropy, opt)

        def many(state, step=step):
            return jax.lax.scan(lambda s, _: (step(s, x, y)[0], None), state, None, length=STEPS)[0]

        run = jax.jit(many, donate_argnums=0)
        state = jax.block_until_ready(run(train.init_state(net, opt, key, (28, 28, 1))))  # compile
        runs[variant] = {"run": run, "state": state, "ms": []}
    for _ in range(args.rounds):
        for entry in runs.values():
            start = time.perf_counter()
            entry["state"] = jax.block_until_ready(entry["run"](entry["state"]))
            entry["ms"].append((time.perf_counter() - start) / STEPS * 1e3)
    result = {"batch": BATCH, "steps_per_timing": STEPS, "rounds": args.rounds, "ms_per_step": {}}
    for variant, entry in runs.items():
        ms = result["ms_per_step"][variant] = dict(spread(entry["ms"]), all=entry["ms"])
        print(f"{variant:10s} {ms['median']:6.2f} ms/step [{ms['min']:.2f}, {ms['max']:.2f}]")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
