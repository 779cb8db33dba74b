"""A convolutional autoencoder on MNIST (or Fashion-MNIST): stride-2 convolutions down to a 7x7x4
code (196 numbers for 784 pixels), transposed convolutions (ConvTranspose2D, hand backward) back
up, trained on the mean squared error of the reconstruction.

    python experiments/autoencoder.py --data-dir ../shared/data/mnist [--dataset mnist] [--epochs 3]

Writes metrics.json (test mean squared error per image, per pixel; training seconds) and
reconstructions.png (test inputs in the top row, their reconstructions below) into --out.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnn as nn
from jaxnn import data
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
    _, params = model.init(jax.random.PRNGKey(args.seed), shape)
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, args.epochs * (len(ds.x_train) // args.batch_size)))
    grad = nn.value_and_grad(model, loss, "manual")

    def step(carry, batch):
        params, opt_state = carry
        value, grads = grad(params, batch, batch)  # the target is the input itself
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def epoch(params, opt_state, key, images):
        steps = images.shape[0] // args.batch_size
        order = jax.random.permutation(key, images.shape[0])[: steps * args.batch_size]
        batches = images[order].reshape((steps, args.batch_size) + images.shape[1:])
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, losses

    images, opt_state, seconds = jax.device_put(ds.x_train), opt.init(params), 0.0
    for e in range(args.epochs):
        t0 = time.perf_counter()
        params, opt_state, losses = epoch(params, opt_state, jax.random.PRNGKey(100 + e), images)
        losses = np.asarray(losses)
        seconds += time.perf_counter() - t0
        if not np.all(np.isfinite(losses)):
            raise nn.TrainingDiverged(f"loss became non-finite in epoch {e + 1}")
        print(f"epoch {e + 1}: training loss {losses.mean():.4f} per image  ({seconds:.1f} s)", flush=True)
    test = jax.jit(model.apply)(params, jnp.asarray(ds.x_test))
    per_image = float(loss(test, jnp.asarray(ds.x_test)))
    pixels = int(np.prod(shape))
    shown = np.concatenate([ds.x_test[:8, ..., 0], np.asarray(test[:8, ..., 0])])
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
