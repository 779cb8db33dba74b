"""Lecture: the linear classifier F(W, x, b) = Wx + b on MNIST, and what its ten rows of W look like.

    python experiments/linear_classifier.py --data-dir ../shared/data/mnist [--epochs 10] [--out DIR]

Writes metrics.json, curves.png and weights.png (each class's 784 weights shown as a 28x28 image:
red where ink raises that class's score, blue where it lowers it).
"""

import os

import jax
import numpy as np

import jaxnn as nn
from common import cli, out_dir, parser, write_metrics
from jaxnn import data, plots, train


def main():
    p = parser(__doc__, epochs=10)
    args = p.parse_args()
    folder = out_dir(args.out, "linear_classifier")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    model = nn.Dense(10)
    opt = train.optimizer("adam", 3e-3, "onecycle", args.epochs * (60000 // 128))
    state, history = train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=args.epochs,
        batch_size=128,
        opt=opt,
        key=jax.random.PRNGKey(args.seed),
        input_shape=(784,),
    )
    w = np.asarray(state.params["w"]).T.reshape(10, 28, 28)
    plots.image_grid(
        w,
        os.path.join(folder, "weights.png"),
        titles=[f"class {i}" for i in range(10)],
        cmap="bwr",
        symmetric=True,
        title="Linear classifier: the rows of W as images",
    )
    plots.training_curves(history, os.path.join(folder, "curves.png"), "linear classifier Wx + b")
    last = history["epochs"][-1]
    write_metrics(
        folder,
        {
            "test_accuracy": last["test_accuracy"],
            "train_seconds": history["train_seconds"],
            "epochs": args.epochs,
            "config": vars(args),
            "history": history["epochs"],
        },
    )
    print(
        f"linear classifier: test accuracy {last['test_accuracy']:.4f} "
        f"in {history['train_seconds']:.2f} s -> {folder}"
    )


if __name__ == "__main__":
    cli(main)
