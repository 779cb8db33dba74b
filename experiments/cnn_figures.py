"""What a CNN learns: the first layer's 3x3 filters and its feature maps for one test digit.

    python experiments/cnn_figures.py --data-dir ../shared/data/mnist [--epochs 2] [--out DIR]

Trains the CNN of experiments/train.py (its earlier 32-64-channel recipe) for --epochs, then
writes filters.png, feature_maps.png (the ReLU outputs of the first conv layer) and metrics.json.
"""

import argparse
import os

import numpy as np

import jaxnn as nn
from jaxnn import data
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics
from jaxnn_lab.zoo import CNN_10_EPOCHS, build_model, fit_mnist, run_summary


def main():
    p = parser(__doc__, epochs=2)
    p.add_argument("--index", type=int, default=0, help="which test image to show")
    args = p.parse_args()
    folder = out_dir(args.out, "cnn_figures")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    recipe = CNN_10_EPOCHS  # 32-64 channels
    model = build_model("cnn", 10, (28, 28, 1), argparse.Namespace(dropout=recipe["dropout"]))
    state, history = fit_mnist(ds, model, args, schedule=("adam", recipe["lr"], recipe["schedule"]))
    filters = np.moveaxis(np.asarray(state.params[0]["w"])[:, :, 0, :], -1, 0)  # (32, 3, 3)
    plots.image_grid(
        filters,
        os.path.join(folder, "filters.png"),
        cols=8,
        cmap="bwr",
        symmetric=True,
        title="first conv layer: 32 learned 3x3 filters (red +, blue -)",
    )
    digit = ds.x_test[args.index : args.index + 1].astype(np.float32) / 255
    first = nn.serial(nn.Conv2D(32, (3, 3)), nn.activation("relu"))
    maps = np.asarray(first.apply(state.params[:2], digit))[0]  # (28, 28, 32)
    plots.image_grid(
        np.concatenate([digit[0, None, :, :, 0], np.moveaxis(maps, -1, 0)]),
        os.path.join(folder, "feature_maps.png"),
        cols=11,
        cmap="viridis",
        titles=[f"digit ({ds.y_test[args.index]})"] + [f"map {i}" for i in range(32)],
        title="first conv layer + ReLU: feature maps of one test digit",
    )
    last = history["epochs"][-1]
    write_metrics(folder, {**run_summary(history), "epochs": args.epochs, "config": vars(args)})
    print(f"CNN after {args.epochs} epochs: {last['test_accuracy']:.4f} -> {folder}")


if __name__ == "__main__":
    cli(main)
