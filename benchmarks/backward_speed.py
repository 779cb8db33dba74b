"""Hand-derived backward vs jax.grad for the CNN and the LSTM at batch 128, timed alternately in
one process; the training-relevant number is inside a `lax.scan` of steps (as in an epoch).

    python benchmarks/backward_speed.py [--batch 128] [--steps 10] [--rounds 5] [--out FILE]

Prints, per model, the median ms per value_and_grad (with min and max over rounds), the ratio
manual / autodiff, and the compiled temporary memory of each. For the CNNs (with and without
BatchNorm) the hand rule is timed with each Conv2D backward formulation ("auto", the default:
on the CPU dw from taps and dx from a convolution; "taps"; "conv").
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn_lab.bench import write_json


def cnn(backward):
    return nn.models.cnn(10, (28, 28, 1), conv_backward=backward)


def cnn_bn(backward):
    return nn.models.cnn(10, (28, 28, 1), conv_backward=backward, batchnorm=True)


def lstm(_):
    return nn.models.recurrent_reader("lstm", 10, (28, 28, 1))


def scanned(f, steps, model_state):
    """steps gradient evaluations on different batches inside one lax.scan (training mode, the
    model's state threaded through); returns the summed loss."""

    def run(params, xs, ys):
        def body(carry, batch):
            total, state = carry
            (value, state), grads = f(params, *batch, state=state, train=True)
            return (
                total + value + sum(jnp.sum(g) for g in jax.tree_util.tree_leaves(grads)) * 0,
                state,
            ), None

        return jax.lax.scan(body, (0.0, model_state), (xs, ys))[0][0]

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "batch": args.batch,
        "models": {},
    }
    variants = {
        "cnn": [
            ("manual/auto", cnn, "auto", "manual"),
            ("manual/taps", cnn, "taps", "manual"),
            ("manual/conv", cnn, "conv", "manual"),
            ("autodiff", cnn, "conv", "autodiff"),
        ],
        "cnn_batchnorm": [
            ("manual/auto", cnn_bn, "auto", "manual"),
            ("manual/taps", cnn_bn, "taps", "manual"),
            ("manual/conv", cnn_bn, "conv", "manual"),
            ("autodiff", cnn_bn, "conv", "autodiff"),
        ],
        "lstm": [("manual", lstm, None, "manual"), ("autodiff", lstm, None, "autodiff")],
    }
    for name, runs in variants.items():
        fns, memory = {}, {}
        for label, build, backward, mode in runs:
            model = build(backward)
            shape = model.input_shape
            _, params = model.init(jax.random.PRNGKey(0), shape)
            xs = jax.random.uniform(jax.random.PRNGKey(1), (args.steps, args.batch) + shape)
            ys = jax.random.randint(jax.random.PRNGKey(2), (args.steps, args.batch), 0, 10)
            f = scanned(
                nn.value_and_grad(model, nn.losses.softmax_cross_entropy, mode),
                args.steps,
                model.init_state(shape),
            )
            jax.block_until_ready(f(params, xs, ys))
            fns[label] = (f, (params, xs, ys))
            memory[label] = f.lower(params, xs, ys).compile().memory_analysis().temp_size_in_bytes
        times = {label: [] for label in fns}
        for _ in range(args.rounds):
            for label, (f, inputs) in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(*inputs))
                times[label].append((time.perf_counter() - t0) / args.steps)
        ms = {label: 1e3 * float(np.median(t)) for label, t in times.items()}
        ratios = {f"{label} / autodiff": ms[label] / ms["autodiff"] for label in ms if label != "autodiff"}
        spread = {label: [1e3 * float(np.min(t)), 1e3 * float(np.max(t))] for label, t in times.items()}
        result["models"][name] = {
            "ms_per_value_and_grad": ms,
            "ms_min_max": spread,
            "ratios": ratios,
            "temp_bytes": memory,
        }
        print(name, json.dumps(ms), json.dumps(ratios), "temp bytes", json.dumps(memory), flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
