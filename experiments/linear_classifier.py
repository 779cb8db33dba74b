"""Lecture: the linear classifier F(W, x, b) = Wx + b on MNIST, and what its ten rows of W look like.

    python experiments/linear_classifier.py --data-dir ../shared/data/mnist [--epochs 10] [--out DIR]

Trained by plain gradient descent (the lecture's W <- W - lr dL/dW) with a little weight decay, so
that the pixels no digit ever inks keep no weight: each row of W then looks like a template of its
class. (Adam would scale the rare gradients of nearly-never-inked pixels up to full-size steps, and
those border weights would dominate the picture.) Writes metrics.json, curves.png and weights.png:
each class's mean training image above its template, red where ink raises the class's score, blue
where it lowers it.
"""

import os

import numpy as np

import jaxnn as nn
from jaxnn import data
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics
from jaxnn_lab.zoo import fit_mnist, run_summary


def main():
    p = parser(__doc__, epochs=10)
    p.add_argument("--lr", type=float, default=0.5, help="gradient descent's learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay")
    args = p.parse_args()
    folder = out_dir(args.out, "linear_classifier")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    model = nn.Dense(10)
    state, history = fit_mnist(
        ds,
        model,
        args,
        schedule=("sgd", args.lr, "cosine"),
        weight_decay=args.weight_decay,
        input_shape=(784,),
    )
    w = np.asarray(state.params["w"]).T.reshape(10, 28, 28)
    images = ds.x_train.reshape(-1, 28, 28).astype(np.float32) / 255
    means = np.stack([images[ds.y_train == c].mean(0) for c in range(10)])
    plots.templates(
        means,
        w,
        os.path.join(folder, "weights.png"),
        titles=[f"class {i}" for i in range(10)],
        title="Linear classifier: each class's mean digit and its row of W",
    )
    plots.training_curves(history, os.path.join(folder, "curves.png"), "linear classifier Wx + b")
    last = history["epochs"][-1]
    summary = run_summary(history)
    write_metrics(
        folder, {**summary, "epochs": args.epochs, "config": vars(args), "history": history["epochs"]}
    )
    print(
        f"linear classifier: test accuracy {last['test_accuracy']:.4f} "
        f"in {history['train_seconds']:.2f} s -> {folder}"
    )


if __name__ == "__main__":
    cli(main)
