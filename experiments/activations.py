"""Lecture: the activation functions. A figure of f and f' for every row of the table (f' from
the hand-derived backward pass), then the same MLP trained on MNIST with each activation.

    python experiments/activations.py --data-dir ../shared/data/mnist [--epochs 4] [--out DIR]
    python experiments/activations.py --figure-only --out docs/figures   # the figure alone

Writes activations.png, metrics.json and results.md (test accuracy and time per activation).
Binary step has derivative 0 everywhere, so no gradient reaches the hidden layers: only the last
Dense layer learns, on random binary features. The table shows it honestly.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics, write_text
from jaxnn_lab.zoo import fit_mnist, run_summary


def derivative_table():
    x = jnp.linspace(-4, 4, 401)[None]
    rows = []
    for name in nn.activations.NAMES:
        if name == "softmax":  # not element-wise
            continue
        layer = nn.activation(name)
        _, params = layer.init(jax.random.PRNGKey(0), x.shape[1:])
        y, residuals = layer.forward(params, x)
        _, dy = layer.backward(residuals, jnp.ones_like(y))
        rows.append((name, np.asarray(y[0]), np.asarray(dy[0])))
    return rows


def main():
    p = parser(__doc__, epochs=4)
    p.add_argument("--figure-only", action="store_true", help="draw activations.png and stop")
    args = p.parse_args()
    folder = out_dir(args.out, "activations")
    zoom = {"leaky_relu": ((-4, 0.5), (-0.05, 0.02))}  # its slope of 0.01 below 0
    plots.function_table(derivative_table(), os.path.join(folder, "activations.png"), zoom=zoom)
    if args.figure_only:
        return print(f"-> {folder}/activations.png")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    results = {}
    for name in [n for n in nn.activations.NAMES if n != "softmax"]:
        model = nn.mlp([784, 256, 256, 10], activation=name)
        _, history = fit_mnist(
            ds, model, args, reporting=train.Reporting(progress=False, eval_every_epoch=False)
        )
        last = history["epochs"][-1]
        results[name] = {**run_summary(history), "final_train_loss": last["train_loss"]}
        print(f"{name:12s} test accuracy {last['test_accuracy']:.4f}  {history['train_seconds']:.2f} s")
    lines = ["| activation | test accuracy | train seconds |", "| --- | --- | --- |"]
    lines += [
        f"| {k} | {100 * v['test_accuracy']:.2f}% | {v['train_seconds']:.2f} |" for k, v in results.items()
    ]
    write_text(os.path.join(folder, "results.md"), "\n".join(lines) + "\n")
    write_metrics(folder, {"results": results, "config": vars(args), "epochs": args.epochs})
    print("\n".join(lines) + f"\n-> {folder}")


if __name__ == "__main__":
    cli(main)
