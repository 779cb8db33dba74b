"""A convolutional autoencoder on MNIST (or Fashion-MNIST): stride-2 convolutions down to a 7x7x4
code (196 numbers for 784 pixels), transposed convolutions (ConvTranspose2D, hand backward) back
up, trained on the mean squared error of the reconstruction.

    python experiments/autoencoder.py --data-dir ../shared/data/mnist [--dataset mnist] [--epochs 3]

Writes metrics.json (test mean squared error per image, per pixel; training seconds) and
reconstructions.png (test inputs in the top row, their reconstructions below) into --out.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics


def main():
    p = parser(__doc__, epochs=3)
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    folder = out_dir(args.out, f"autoencoder-{args.dataset}")
    ds = data.load(args.dataset, data_dir=args.data_dir, dtype="float32")
    model = nn.models.conv_autoencoder(ds.x_train.shape[1:])
    shape = model.input_shape
    print(nn.summary(model))
    loss = nn.losses.mean_squared_error
    steps = args.epochs * (len(ds.x_train) // args.batch_size)
    state, history = train.fit(
        model,
        loss,
        (ds.x_train, ds.x_train, ds.x_test, ds.x_test),  # the target is the input itself
        opt=train.optimizer("adam", 3e-3, "cosine", total_steps=steps),
        key=jax.random.PRNGKey(args.seed),
        epochs=args.epochs,
        batch_size=args.batch_size,
        options=train.TrainOptions(mode="manual"),
    )
    for row in history["epochs"]:
        print(f"epoch {row['epoch']}: training loss {row['train_loss']:.4f} per image", flush=True)
    per_image, seconds = history["epochs"][-1]["test_loss"], history["train_seconds"]  # fit evaluated it
    pixels = int(np.prod(shape))
    reconstructed = model.apply(state.params, jnp.asarray(ds.x_test[:8]))
    shown = np.concatenate([ds.x_test[:8, ..., 0], np.asarray(reconstructed[..., 0])])
    plots.image_grid(
        shown,
        os.path.join(folder, "reconstructions.png"),
        cols=8,
        title=f"{args.dataset}: test inputs (top), reconstructions (bottom)",
    )
    write_metrics(
        folder,
        {
            "test_mse_per_image": per_image,
            "test_mse_per_pixel": per_image / pixels,
            "train_seconds": seconds,
            "epochs": args.epochs,
            "config": vars(args),
            "model": model.name,
        },
    )
    print(
        f"test mean squared error {per_image:.3f} per image ({per_image / pixels:.5f} per pixel) -> {folder}"
    )


if __name__ == "__main__":
    cli(main)
