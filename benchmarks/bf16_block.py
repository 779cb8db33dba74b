"""bfloat16 against float32 for attention: the pre-norm transformer block's hand-derived forward and
backward pass (d 128, 4 causal heads, batch 12 x 64 tokens: the character GPT's block), 10 passes
on different inputs in one jitted lax.scan, per precision (issue 10, item 4).

    python benchmarks/bf16_block.py [--repeats 15] [--out benchmarks/results/cpu/bf16_block.json]

"bfloat16" is `nn.mixed_precision(block, "bfloat16")`: parameters in float32, the block computed
in bfloat16. The precisions take turns, call by call, after one warm-up call each. Reported: ms
per forward+backward, median [min, max], and float32's median over bfloat16's (> 1: bfloat16 is
faster).
"""

import argparse
import time

import jax
import jax.numpy as jnp

import jaxnn as nn
from jaxnn_lab.bench import spread, write_json

PRECISIONS = ("float32", "bfloat16")
BATCH, TIME, D, HEADS, PASSES = 12, 64, 128, 4, 10


def scanned(block):
    """PASSES forward+backward passes in one lax.scan; a scalar sum of every gradient (so that none
    is optimised away)."""

    def run(params, xs, dys):
        def body(total, batch):
            x, dy = batch
            _, residuals = block.forward(params, x)
            grads = block.backward(residuals, dy)
            leaves = jax.tree_util.tree_leaves(grads)
            return total + sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves), None

        return jax.lax.scan(body, 0.0, (xs, dys))[0]

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed calls per precision")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    block = nn.models.transformer_block(D, HEADS)
    _, params = block.init(jax.random.PRNGKey(0), (TIME, D))
    xs = jax.random.normal(jax.random.PRNGKey(1), (PASSES, BATCH, TIME, D))
    dys = jax.random.normal(jax.random.PRNGKey(2), (PASSES, BATCH, TIME, D))
    runs = {"float32": scanned(block), "bfloat16": scanned(nn.mixed_precision(block, "bfloat16"))}
    ms = {precision: [] for precision in PRECISIONS}
    for i in range(args.repeats + 1):
        for precision in PRECISIONS:
            t = time.perf_counter()
            runs[precision](params, xs, dys).block_until_ready()
            if i:  # the first call compiles and warms up
                ms[precision].append((time.perf_counter() - t) / PASSES * 1e3)
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "repeats": args.repeats}
    result["ms_per_pass"] = {precision: spread(ms[precision]) for precision in PRECISIONS}
    result["float32_over_bfloat16"] = (
        result["ms_per_pass"]["float32"]["median"] / result["ms_per_pass"]["bfloat16"]["median"]
    )
    for precision, s in result["ms_per_pass"].items():
        print(f"{precision:9s} {s['median']:.2f} ms [{s['min']:.2f}, {s['max']:.2f}]")
    print(f"float32 / bfloat16 = {result['float32_over_bfloat16']:.2f}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
