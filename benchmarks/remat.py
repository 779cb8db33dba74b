"""Recomputation on a stack of transformer blocks at long contexts: memory and time of one
forward plus backward, with and without `nn.remat`.

    python benchmarks/remat.py [--times 1024,4096] [--layers 4] [--rounds 5] [--out FILE]

The stack is --layers causal pre-norm blocks (d 128, 4 heads, MLP 4d, batch 1, float32), its
attention dense or blockwise (block 512). Each variant computes the gradients of the parameters and
the input for a random dy:

- "hand rules": the blocks' forward and hand backward, every residual kept;
- "hand rules, nn.remat": each block wrapped in nn.remat (its input kept, its forward rerun);
- "jax.grad": jax.vjp of the same stack;
- "jax.grad, jax.checkpoint": jax.vjp with each block under jax.checkpoint.

Memory is XLA's compiled temporary memory (read without running); times are the median of --rounds
runs with [min, max], the variants taking turns.
"""

import argparse

import jax

import jaxnn as nn
from jaxnn_lab.bench import machine, spread, time_in_turns, write_json

D, HEADS, BATCH, BLOCK = 128, 4, 1, 512


def stack(layers, block_size, remat):
    blocks = [nn.models.transformer_block(D, HEADS, block_size=block_size) for _ in range(layers)]
    return nn.serial(*(nn.remat(b) if remat else b for b in blocks))


def variants(layers, block_size):
    def by_hand(model):
        def grads(params, x, dy):
            _, residuals = model.forward(params, x)
            return model.backward(residuals, dy)

        return grads

    def by_autodiff(model, checkpoint):
        def apply(params, x):
            for block, p in zip(model.layers, params):
                f = jax.checkpoint(block.apply) if checkpoint else block.apply
                x = f(p, x)
            return x

        def grads(params, x, dy):
            return jax.vjp(apply, params, x)[1](dy)

        return grads

    plain = stack(layers, block_size, remat=False)
    return {
        "hand rules": by_hand(plain),
        "hand rules, nn.remat": by_hand(stack(layers, block_size, remat=True)),
        "jax.grad": by_autodiff(plain, checkpoint=False),
        "jax.grad, jax.checkpoint": by_autodiff(plain, checkpoint=True),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--times", default="1024,4096")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {
        "machine": machine(),
        "config": {"d": D, "heads": HEADS, "batch": BATCH, "layers": args.layers, "block": BLOCK},
        "rows": [],
    }
    for time_ in (int(t) for t in args.times.split(",")):
        for attention, block_size in (("dense", None), ("blockwise", BLOCK)):
            model = stack(args.layers, block_size, remat=False)
            _, params = model.init(jax.random.PRNGKey(0), (time_, D))
            x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, time_, D))
            dy = jax.random.normal(jax.random.PRNGKey(2), (BATCH, time_, D))
            compiled, rows = {}, {}
            for name, fn in variants(args.layers, block_size).items():
                c = jax.jit(fn).lower(params, x, dy).compile()
                rows[name] = {
                    "variant": name,
                    "attention": attention,
                    "time": time_,
                    "temp_bytes": c.memory_analysis().temp_size_in_bytes,
                }
                jax.block_until_ready(c(params, x, dy))
                compiled[name] = c
            seconds = time_in_turns(compiled, (params, x, dy), args.rounds)
            base = rows["hand rules"]
            base["seconds"] = spread(seconds["hand rules"])
            for name, row in rows.items():
                row["seconds"] = spread(seconds[name])
                row["temp_over_hand_rules"] = row["temp_bytes"] / base["temp_bytes"]
                row["time_over_hand_rules"] = row["seconds"]["median"] / base["seconds"]["median"]
                print(
                    f"T {time_:5d} {attention:9s} {name:26s} temp {row['temp_bytes'] / 2**20:8.1f} MiB "
                    f"({row['temp_over_hand_rules']:.2f}x)  {1e3 * row['seconds']['median']:8.1f} ms "
                    f"({row['time_over_hand_rules']:.2f}x)",
                    flush=True,
                )
                result["rows"].append(row)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
