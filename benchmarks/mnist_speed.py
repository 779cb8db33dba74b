"""Time-to-accuracy on MNIST: jaxnn's default recipe vs the plain JAX + optax reference, one run.

    python benchmarks/mnist_speed.py --data-dir ../shared/data/mnist [--out results/mnist_speed.json]

Reference (written here in plain JAX, no jaxnn): MLP 784-512-512-10 ReLU, Adam 1e-3, batch 128,
10 epochs, one lax.scan per epoch, data on device as uint8. jaxnn: experiments/train.py's defaults.
Both times are training wall time with compilation, excluding data loading and evaluation.
The target: jaxnn reaches >= 98.0% in at most half the reference's time (ratio <= 0.5).
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnn as nn
from bench_io import write_json
from jaxnn import data, train

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
from common import MODELS, build_model  # noqa: E402


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


def jaxnn_default(ds, seed=0):
    recipe = MODELS["mlp"]
    args = argparse.Namespace(width=recipe["width"], activation="relu")
    model, input_shape = build_model("mlp", 10, (28, 28, 1), args)
    steps = recipe["epochs"] * (len(ds.x_train) // recipe["batch_size"])
    opt = train.optimizer(recipe["optimizer"], recipe["lr"], recipe["schedule"], steps)
    _, history = train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        opt=opt,
        key=jax.random.PRNGKey(seed),
        input_shape=input_shape,
        progress=False,
        eval_every_epoch=False,
    )
    return {
        "test_accuracy": history["epochs"][-1]["test_accuracy"],
        "train_seconds": history["train_seconds"],
        "recipe": recipe,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__}
    result["reference"] = reference(ds, args.seed)
    result["jaxnn"] = jaxnn_default(ds, args.seed)
    result["time_ratio_jaxnn_over_reference"] = (
        result["jaxnn"]["train_seconds"] / result["reference"]["train_seconds"]
    )
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
