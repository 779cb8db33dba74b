"""bfloat16 against float32: one scanned epoch of an MLP on MNIST, per precision (issue 10, item 4).

    python benchmarks/bf16_mlp.py --data-dir ../shared/data/mnist [--configs 160:256 2048:1024]
                                  [--repeats 5] [--out benchmarks/results/cpu/bf16_mlp.json]

Each config WIDTH:BATCH is the MLP 784-WIDTH-WIDTH-10 with Adam and label smoothing, as the main
job trains it, compiled once per precision ("float32", and "bfloat16" through
`nn.mixed_precision`: parameters, optimizer and loss in float32, matmuls in bfloat16 with float32
accumulation). The two precisions take turns, epoch by epoch, so that drifts of the machine's
speed hit both; the first epoch of each is a warm-up and is not counted. Reported: seconds per
epoch, median [min, max], and float32's median over bfloat16's (> 1: bfloat16 is faster).
First, the bare kernels (median ms of 10 jitted calls): a 2048x2048 matmul in float32, in
bfloat16 -> bfloat16, and in bfloat16 with float32 accumulation (what `core.matmul` does), and
a 3x3 convolution 32 -> 64 channels at 14x14, batch 128, in float32 and bfloat16.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.bench import spread, write_json

PRECISIONS = ("float32", "bfloat16")


def kernel_ms(f, *args):
    f = jax.jit(f)
    f(*args).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def kernels():
    """The bare matmul and convolution, float32 against bfloat16 (ms)."""
    a, b = (jax.random.normal(jax.random.PRNGKey(i), (2048, 2048)) for i in (0, 1))
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(2), (128, 14, 14, 32))
    w = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 32, 64))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return {
        "matmul 2048 float32": kernel_ms(jnp.matmul, a, b),
        "matmul 2048 bfloat16 -> bfloat16": kernel_ms(jnp.matmul, a16, b16),
        "matmul 2048 bfloat16, float32 accumulation (core.matmul)": kernel_ms(nn.core.matmul, a16, b16),
        "conv 3x3 32->64 14x14 b128 float32": kernel_ms(conv, x, w),
        "conv 3x3 32->64 14x14 b128 bfloat16": kernel_ms(
            conv, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        ),
    }


def compiled_epoch(width, batch, precision, images, labels):
    model = nn.mixed_precision(nn.mlp([784, width, width, 10]), precision)
    steps = len(images) // batch
    opt = train.optimizer("adam", 8e-3, "onecycle", 3 * steps)
    state = train.init_state(model, opt, jax.random.PRNGKey(0), (784,))
    run = jax.jit(
        train.steps_function(model, nn.losses.smoothed_cross_entropy(0.1), opt, (784,)), donate_argnums=0
    )
    order = np.random.default_rng(0).permutation(len(images))[: steps * batch].reshape(steps, batch)
    order = jax.device_put(order.astype(np.int32))
    compiled = run.lower(state, images, labels, order).compile()
    return compiled, state, order


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--configs", nargs="+", default=["160:256", "2048:1024"], help="WIDTH:BATCH")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per precision")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    try:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.configs]
    except ValueError:
        p.error(f"--configs: expected WIDTH:BATCH pairs of integers, got {args.configs}")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    images, labels = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "kernels_ms": kernels()}
    print("kernels (ms):", {k: round(v, 1) for k, v in result["kernels_ms"].items()}, flush=True)
    result["configs"] = {}
    for width, batch in configs:
        runs = {p: compiled_epoch(width, batch, p, images, labels) for p in PRECISIONS}
        states = {p: runs[p][1] for p in PRECISIONS}
        seconds = {p: [] for p in PRECISIONS}
        for i in range(args.repeats + 1):
            for precision in PRECISIONS:
                compiled, _, order = runs[precision]
                t = time.perf_counter()
                states[precision], metrics = compiled(states[precision], images, labels, order)
                losses = metrics.loss
                np.asarray(losses)  # waits for the epoch
                if i:  # the first epoch warms up
                    seconds[precision].append(time.perf_counter() - t)
        row = {p: spread(seconds[p]) for p in PRECISIONS}
        row["float32_over_bfloat16"] = row["float32"]["median"] / row["bfloat16"]["median"]
        result["configs"][f"784-{width}-{width}-10, batch {batch}"] = row
        print(f"width {width}, batch {batch}: " + ", ".join(f"{p} {row[p]}" for p in PRECISIONS), flush=True)
        print(f"  float32 / bfloat16 = {row['float32_over_bfloat16']:.2f}", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
