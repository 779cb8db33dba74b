"""What a CNN learns: the first layer's 3x3 filters and its feature maps for one test digit.

    python experiments/cnn_figures.py --data-dir ../shared/data/mnist [--epochs 2] [--out DIR]

Trains the CNN tutorial's model (16 and 32 channels) for --epochs on all of MNIST, then writes
filters.png (numbered, one colour scale), feature_maps.png (the ReLU outputs of the first conv
layer for one test digit, one colour scale) and metrics.json.
"""

import os

import numpy as np

import jaxnn as nn
from jaxnn import data
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics
from jaxnn_lab.zoo import fit_mnist, run_summary


def main():
    p = parser(__doc__, epochs=2)
    p.add_argument("--index", type=int, default=0, help="which test image to show")
    args = p.parse_args()
    folder = out_dir(args.out, "cnn_figures")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    model = nn.models.cnn(10, (28, 28, 1), channels=(16, 32))  # the CNN tutorial's model
    state, history = fit_mnist(ds, model, args, schedule=("adam", 3e-3, "onecycle"))
    filters = np.moveaxis(np.asarray(state.params[0]["w"])[:, :, 0, :], -1, 0)  # (16, 3, 3)
    plots.image_grid(
        filters,
        os.path.join(folder, "filters.png"),
        titles=[str(i + 1) for i in range(len(filters))],
        cols=8,
        cmap="bwr",
        symmetric=True,
        title=f"the first layer's {len(filters)} learned 3x3 filters",
        colorbar="weight (red +, blue -)",
    )
    digit = ds.x_test[args.index : args.index + 1].astype(np.float32) / 255
    first = nn.serial(nn.Conv2D(len(filters), (3, 3)), nn.activation("relu"))
    maps = np.moveaxis(np.asarray(first.apply(state.params[:2], digit))[0], -1, 0)  # (16, 28, 28)
    plots.image_grid(
        maps,
        os.path.join(folder, "feature_maps.png"),
        titles=[f"map {i + 1}" for i in range(len(maps))],
        cols=8,
        cmap="viridis",
        title=f"the first layer's feature maps (after ReLU) of a test {ds.y_test[args.index]}",
        colorbar="activation",
    )
    last = history["epochs"][-1]
    write_metrics(folder, {**run_summary(history), "epochs": args.epochs, "config": vars(args)})
    print(f"CNN after {args.epochs} epochs: {last['test_accuracy']:.4f} -> {folder}")


if __name__ == "__main__":
    cli(main)
