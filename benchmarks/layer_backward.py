"""Each new layer's hand-derived backward against jax.grad of its forward, inside a jitted
`lax.scan` (as in training), timed alternately; plus the compiled temporary memory of each.

    python benchmarks/layer_backward.py [--steps 10] [--rounds 5] [--out FILE]

Prints per layer the median ms per forward+backward (min and max over rounds in the JSON), the
ratio manual / autodiff (goal: <= 1) and the temp memory (attention's goal: no more than jax.grad's).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn_lab.bench import write_json

CASES = {  # name -> (layer, one example's input shape, batch, integer inputs below this vocabulary)
    "Embedding(65, 128)": (nn.Embedding(65, 128), (64,), 12, 65),
    "MultiHeadAttention(4, causal), d 128": (nn.MultiHeadAttention(4, causal=True), (64, 128), 12, None),
    "PositionalEmbedding(64), d 128": (nn.PositionalEmbedding(64), (64, 128), 12, None),
    "transformer block, d 128": (nn.models.transformer_block(128, 4), (64, 128), 12, None),
    "Conv1D(64, 5)": (nn.Conv1D(64, 5), (128, 64), 32, None),
    "ConvTranspose2D(32, 2, stride 2)": (nn.ConvTranspose2D(32, 2, 2), (7, 7, 64), 128, None),
    "GlobalAvgPool": (nn.GlobalAvgPool(), (7, 7, 64), 128, None),
    "GroupNorm(8)": (nn.GroupNorm(8), (14, 14, 64), 128, None),
}


def scanned(layer, mode, steps, x_dtype):
    """steps forward+backward passes on different inputs in one lax.scan; returns a scalar sum of
    every gradient (so that none is optimised away)."""

    differentiable_x = jnp.issubdtype(jnp.result_type(x_dtype), jnp.floating)

    def grads(params, x, dy):  # the gradients of the params and (float inputs) of x
        if mode == "manual":
            _, residuals = layer.forward(params, x)
            dparams, dx = layer.backward(residuals, dy)
            return (dparams, dx) if differentiable_x else dparams
        argnums = (0, 1) if differentiable_x else 0
        return jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) * dy), argnums=argnums)(params, x)

    def run(params, xs, dys):
        def body(total, batch):
            g = grads(params, *batch)
            return total + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(g)), None

        return jax.lax.scan(body, 0.0, (xs, dys))[0]

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "layers": {}}
    for name, (layer, shape, batch, vocab) in CASES.items():
        out_shape, params = layer.init(jax.random.PRNGKey(0), shape)
        full = (args.steps, batch) + shape
        if vocab:
            xs = jax.random.randint(jax.random.PRNGKey(1), full, 0, vocab)
        else:
            xs = jax.random.normal(jax.random.PRNGKey(1), full)
        dys = jax.random.normal(jax.random.PRNGKey(2), (args.steps, batch) + tuple(out_shape))
        fns, memory = {}, {}
        for mode in ("manual", "autodiff"):
            f = scanned(layer, mode, args.steps, xs.dtype)
            memory[mode] = f.lower(params, xs, dys).compile().memory_analysis().temp_size_in_bytes
            jax.block_until_ready(f(params, xs, dys))
            fns[mode] = f
        times = {mode: [] for mode in fns}
        for _ in range(args.rounds):
            for mode, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(params, xs, dys))
                times[mode].append(1e3 * (time.perf_counter() - t0) / args.steps)
        ms = {mode: float(np.median(t)) for mode, t in times.items()}
        row = {
            "ms": ms,
            "ms_min_max": {m: [min(t), max(t)] for m, t in times.items()},
            "ratio_manual_over_autodiff": ms["manual"] / ms["autodiff"],
            "temp_bytes": memory,
        }
        result["layers"][name] = row
        mb = {mode: n / 1e6 for mode, n in memory.items()}
        ratio = row["ratio_manual_over_autodiff"]
        times_text = f"manual {ms['manual']:8.3f} ms  autodiff {ms['autodiff']:8.3f} ms  ratio {ratio:.2f}"
        print(f"{name:40s} {times_text}  temp MB {mb['manual']:.2f} vs {mb['autodiff']:.2f}", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
