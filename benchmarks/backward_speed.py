"""Hand-derived backward vs jax.grad for the CNN and the LSTM at batch 128, timed alternately in
one process; the training-relevant number is inside a `lax.scan` of steps (as in an epoch).

    python benchmarks/backward_speed.py [--batch 128] [--steps 10] [--rounds 5] [--out FILE]

Prints, per model, ms per value_and_grad and the ratio manual / autodiff (<= 1.2 is the target).
For the CNN the hand rule is timed with both Conv2D backward formulations ("taps", "conv").
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from bench_io import write_json


def cnn(backward):
    return nn.serial(
        nn.Conv2D(32, (3, 3), backward=backward), nn.activation("relu"), nn.MaxPool(),
        nn.Conv2D(64, (3, 3), backward=backward), nn.activation("relu"), nn.MaxPool(),
        nn.Flatten(), nn.Dense(128), nn.activation("relu"), nn.Dense(10),
    ), (28, 28, 1)


def lstm(_):
    return nn.serial(nn.LSTM(128), nn.LastStep(), nn.Dense(10)), (28, 28)


def scanned(f, steps):
    """steps gradient evaluations on different batches inside one lax.scan; returns the summed loss."""

    def run(params, xs, ys):
        def body(total, batch):
            value, grads = f(params, *batch)
            return total + value + sum(jnp.sum(g) for g in jax.tree_util.tree_leaves(grads)) * 0, None

        return jax.lax.scan(body, 0.0, (xs, ys))[0]

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "batch": args.batch, "models": {}}
    variants = {"cnn": [("manual/taps", cnn, "taps", "manual"), ("manual/conv", cnn, "conv", "manual"),
                        ("autodiff", cnn, "conv", "autodiff")],
                "lstm": [("manual", lstm, None, "manual"), ("autodiff", lstm, None, "autodiff")]}
    for name, runs in variants.items():
        fns = {}
        for label, build, backward, mode in runs:
            model, shape = build(backward)
            _, params = model.init(jax.random.PRNGKey(0), shape)
            xs = jax.random.uniform(jax.random.PRNGKey(1), (args.steps, args.batch) + shape)
            ys = jax.random.randint(jax.random.PRNGKey(2), (args.steps, args.batch), 0, 10)
            f = scanned(nn.value_and_grad(model, nn.losses.softmax_cross_entropy, mode), args.steps)
            jax.block_until_ready(f(params, xs, ys))
            fns[label] = (f, (params, xs, ys))
        times = {label: [] for label in fns}
        for _ in range(args.rounds):
            for label, (f, inputs) in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(*inputs))
                times[label].append((time.perf_counter() - t0) / args.steps)
        ms = {label: 1e3 * float(np.median(t)) for label, t in times.items()}
        ratios = {f"{label} / autodiff": ms[label] / ms["autodiff"] for label in ms if label != "autodiff"}
        result["models"][name] = {"ms_per_value_and_grad": ms, "ratios": ratios}
        print(name, json.dumps(ms), json.dumps(ratios), flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
