"""Time-to-accuracy on MNIST: jaxnn's default recipe vs the plain JAX + optax reference.

    python benchmarks/mnist_speed.py --data-dir ../shared/data/mnist [--seeds 0 1 2] [--repeats 3]
                                     [--model mlp] [--precision float32] [--out results/mnist_speed.json]

Reference (written here in plain JAX, no jaxnn): MLP 784-512-512-10 ReLU, Adam 1e-3, batch 128,
10 epochs, one lax.scan per epoch, data on device as uint8, run --repeats times. jaxnn:
experiments/train.py's default recipe of --model, once per seed. Runs alternate (reference, jaxnn
seed, reference, ...) so that drifts of the machine's speed hit both, and each run is a fresh
Python process of its own, as a user's run is: nothing compiled by one run is in memory for the
next (cold: no persistent cache; --warm: both sides load their programs from JAX's persistent
cache, filled by one untimed run of each first, as a second run of a script finds it). Times are
training wall time with compilation, excluding data loading and evaluation; the ratio is jaxnn's
median over the reference's median, with each side's min-max spread.
Targets (issue 10): the MLP reaches >= 98.0% on every seed at >= 8x the reference's speed
(ratio <= 0.125); the CNN >= 99.3% in at most 2.5x the reference's time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.bench import fit_quietly, spread, write_json
from jaxnn_lab.cli import use_compile_cache
from jaxnn_lab.recipes import RECIPES
from jaxnn_lab.zoo import augmentation, build_model, training_loss


def reference(ds, seed=0, epochs=10, batch=128):
    """Plain JAX + optax, as a researcher would write it."""
    sizes = [784, 512, 512, 10]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes))
    params = [
        {"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]
    opt = optax.adam(1e-3)

    def predict(params, x):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()

    @jax.jit
    def epoch(params, opt_state, key, images, labels):
        steps = images.shape[0] // batch
        order = jax.random.permutation(key, images.shape[0])[: steps * batch].reshape(steps, batch)

        def body(carry, idx):
            params, opt_state = carry
            x = images[idx].reshape(batch, 784).astype(jnp.float32) / 255.0
            loss, grads = jax.value_and_grad(loss_fn)(params, x, labels[idx])
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), order)
        return params, opt_state, losses

    images, labels = jax.device_put(ds.x_train), jax.device_put(ds.y_train)
    opt_state = opt.init(params)
    key = keys[-1]
    start = time.perf_counter()
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        params, opt_state, losses = epoch(params, opt_state, sub, images, labels)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    x_test = jnp.asarray(ds.x_test.reshape(-1, 784), jnp.float32) / 255.0
    accuracy = float(jnp.mean(jnp.argmax(predict(params, x_test), 1) == ds.y_test))
    return {"test_accuracy": accuracy, "train_seconds": seconds}


def jaxnn_default(ds, seed=0, name="mlp", precision="float32"):
    recipe = RECIPES[name, "mnist"].settings
    args = argparse.Namespace(activation="relu", **recipe)
    model = build_model(name, 10, (28, 28, 1), args)
    model = nn.mixed_precision(model, precision)
    steps = recipe["epochs"] * (len(ds.x_train) // recipe["batch_size"])
    opt = train.optimizer(recipe["optimizer"], recipe["lr"], recipe["schedule"], steps)
    loss, augment = training_loss(args), augmentation(args, "mnist")
    history = fit_quietly(model, ds, recipe["epochs"], recipe["batch_size"], opt, seed, loss, augment)
    return {
        "seed": seed,
        "test_accuracy": history["epochs"][-1]["test_accuracy"],
        "train_seconds": history["train_seconds"],
        "compile_seconds": history["compile_seconds"],
    }


def one_run(args):
    """A single run (`--one reference|jaxnn`), in this process; prints its result as one JSON line."""
    if args.cache_dir:
        use_compile_cache(args.cache_dir)
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    if args.one == "reference":
        result = reference(ds, seed=args.seed)
    else:
        result = jaxnn_default(ds, args.seed, args.model, args.precision)
    print(RESULT + json.dumps(result), flush=True)


RESULT = "result: "


def in_fresh_process(args, side, seed, cache_dir):
    """Run one side once in a Python process of its own; its result dict."""
    command = [sys.executable, __file__, "--one", side, "--seed", str(seed), "--model", args.model]
    command += ["--precision", args.precision] + (["--data-dir", args.data_dir] if args.data_dir else [])
    command += ["--cache-dir", cache_dir] if cache_dir else []
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        sys.exit(f"error: the {side} run (seed {seed}) failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=3, help="runs of the reference")
    p.add_argument("--model", default="mlp", choices=sorted({m for m, _ in RECIPES}))
    p.add_argument(
        "--precision", default="float32", choices=[*nn.precision.PRECISIONS, *nn.precision.ALIASES]
    )
    p.add_argument(
        "--warm",
        action="store_true",
        help="both sides warm: JAX's persistent compile cache on (a fresh folder), filled by one "
        "untimed run of each side first, as a second run of an experiment script finds it",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--one", choices=["reference", "jaxnn"], help=argparse.SUPPRESS)  # a child run
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one_run(args)
    cache_dir = tempfile.mkdtemp(prefix="jaxnn-xla-") if args.warm else None
    if args.warm:
        in_fresh_process(args, "reference", 0, cache_dir)
        in_fresh_process(args, "jaxnn", args.seeds[0], cache_dir)
    references, runs = [], []
    for i in range(max(args.repeats, len(args.seeds))):
        if i < args.repeats:
            references.append(in_fresh_process(args, "reference", i, cache_dir))
            print("reference", references[-1], flush=True)
        if i < len(args.seeds):
            runs.append(in_fresh_process(args, "jaxnn", args.seeds[i], cache_dir))
            print("jaxnn", runs[-1], flush=True)
    ref_time = spread([r["train_seconds"] for r in references])
    jaxnn_time = spread([r["train_seconds"] for r in runs])
    result = {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "model": args.model,
        "precision": args.precision,
        "recipe": RECIPES[args.model, "mnist"].settings,
        "compile_cache": "warm, both sides" if args.warm else "cold (no persistent cache)",
        "processes": "each run in a fresh process",
        "reference": {"runs": references, "train_seconds": ref_time},
        "jaxnn": {
            "runs": runs,
            "train_seconds": jaxnn_time,
            "min_test_accuracy": min(r["test_accuracy"] for r in runs),
        },
        "time_ratio_jaxnn_over_reference": jaxnn_time["median"] / ref_time["median"],
        "speedup_over_reference": ref_time["median"] / jaxnn_time["median"],
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("reference", "jaxnn")}, indent=2))
    lowest = result["jaxnn"]["min_test_accuracy"]
    print(f"jaxnn {jaxnn_time}, reference {ref_time}, lowest accuracy {lowest:.4f}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
