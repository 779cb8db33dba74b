"""Lecture: simple data -> a linear classifier; complex data -> linear classifier + activations.

    python experiments/simple_vs_complex.py [--out DIR]

Trains the linear classifier and an MLP on separable blobs, moons and spirals (all drawn from a
PRNG key) and draws their decision boundaries side by side (boundaries.png).
"""

import argparse
import os

import jax
import jax.numpy as jnp

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import add_compile_cache_flag, cli, out_dir, write_metrics

DATASETS = {"blobs": dict(classes=2), "moons": {}, "spirals": dict(classes=3)}


def fit(model, ds, epochs, lr, seed):
    opt = train.optimizer("adam", lr, "cosine", epochs * (len(ds.x_train) // 32))
    state, history = train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=epochs,
        batch_size=32,
        opt=opt,
        key=jax.random.PRNGKey(seed),
        input_shape=(2,),
        reporting=train.Reporting(progress=False, eval_every_epoch=False),
    )
    return state.params, history


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compile_cache_flag(p)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    folder = out_dir(args.out, "simple_vs_complex")
    results, panels = {}, []
    for name, options in DATASETS.items():
        ds = data.load(name, key=jax.random.PRNGKey(args.seed), n=1500, **options)
        models = {"linear": nn.Dense(ds.classes), "mlp": nn.mlp([2, 64, 64, ds.classes], activation="tanh")}
        for kind, model in models.items():
            params, history = fit(model, ds, args.epochs, 1e-2, args.seed)
            acc = history["epochs"][-1]["test_accuracy"]
            results[f"{name}/{kind}"] = {"test_accuracy": acc, "train_seconds": history["train_seconds"]}
            print(f"{name:8s} {kind:7s} test accuracy {acc:.4f}")
            predict = jax.jit(lambda x, p=params, m=model: jnp.argmax(m.apply(p, x), 1))
            panels.append((f"{name}, {kind}: {100 * acc:.1f}%", predict, ds.x_test, ds.y_test))
    order = [panels[i] for i in (0, 2, 4, 1, 3, 5)]  # linear row first, then the MLP row
    plots.decision_boundaries(order[:3], os.path.join(folder, "boundaries_linear.png"))
    plots.decision_boundaries(order[3:], os.path.join(folder, "boundaries_mlp.png"))
    write_metrics(
        folder,
        {"results": results, "config": vars(args), "test_accuracy": results["spirals/mlp"]["test_accuracy"]},
    )
    print(f"-> {folder}")


if __name__ == "__main__":
    cli(main)
