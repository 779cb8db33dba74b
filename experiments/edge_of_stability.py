"""The edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021): full-batch gradient
descent on a small MNIST subset, with the Hessian's largest eigenvalue (the sharpness) tracked by
Lanczos on the hand Hessian-vector products (`jaxnn.curvature.sharpness`).

On the quadratic (lambda / 2) w^2, gradient descent w <- w - eta lambda w multiplies w by
(1 - eta lambda) each step: it converges while lambda < 2 / eta and diverges beyond. The paper's
finding: training a network, the sharpness rises until it reaches 2 / eta, then hovers there while
the loss keeps falling, non-monotonically.

    python experiments/edge_of_stability.py --data-dir ../shared/data/mnist [--examples 1000]
        [--etas 0.02 0.04 0.08] [--steps 1500] [--every 25] [--out DIR]

An MLP 784-200-200-10 with tanh, mean squared error against one-hot targets (as in the paper's
fully-connected runs). Writes metrics.json (each eta's losses and sharpness) and sharpness.png.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jaxnn as nn
from jaxnn import curvature, data
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, positive, write_metrics


def run(eta, x, targets, args):
    """Gradient descent at learning rate eta: (every step's loss, [(step, sharpness), ...])."""
    model, loss = nn.mlp([784, 200, 200, 10], activation="tanh"), nn.losses.mean_squared_error
    _, params = model.init(jax.random.PRNGKey(args.seed), (784,))
    value_and_grad = nn.value_and_grad(model, loss)

    @jax.jit
    def step(params):
        value, grads = value_and_grad(params, x, targets)
        return jax.tree_util.tree_map(lambda p, g: p - eta * g, params, grads), value

    sharpness = jax.jit(curvature.sharpness(model, loss, steps=args.lanczos))
    losses, sharp = [], []
    for t in tqdm(range(args.steps + 1), desc=f"eta {eta:g}", disable=args.no_progress, leave=False):
        if t % args.every == 0:
            value, _ = sharpness(params, x, targets, jax.random.PRNGKey(t))
            sharp.append((t, float(value)))
        if t == args.steps:
            break
        params, value = step(params)
        losses.append(float(value))
        if not np.isfinite(losses[-1]):
            break
    return losses, sharp


def main():
    p = parser(__doc__)
    p.add_argument("--examples", type=positive(int), default=1000, help="the first N training images")
    p.add_argument("--etas", type=positive(float), nargs="+", default=[0.02, 0.04, 0.08])
    p.add_argument("--steps", type=positive(int), default=1500)
    p.add_argument("--every", type=positive(int), default=25, help="steps between sharpness measurements")
    p.add_argument("--lanczos", type=positive(int), default=20, help="Lanczos steps per measurement")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    folder = out_dir(args.out, "edge_of_stability")
    ds = data.load("mnist", data_dir=args.data_dir)
    x = jnp.asarray(ds.x_train[: args.examples].reshape(args.examples, -1), jnp.float32)
    targets = jax.nn.one_hot(ds.y_train[: args.examples], 10)
    results, t0 = {}, time.perf_counter()
    for eta in args.etas:
        losses, sharp = run(eta, x, targets, args)
        values = [s for _, s in sharp]
        last_fifth = values[-max(1, len(values) // 5) :]
        summary = {
            "two_over_eta": 2 / eta,
            "sharpness_start": values[0],
            "sharpness_peak": max(values),
            "sharpness_last_fifth_mean": float(np.mean(last_fifth)),
            "loss_start": losses[0],
            "loss_end": losses[-1],
            "loss_rises": int(np.sum(np.diff(losses) > 0)),  # steps whose loss exceeds the step before's
        }
        if len(losses) < args.steps or not np.isfinite(losses[-1]):  # stopped: the loss left the numbers
            summary["diverged_at_step"] = len(losses)
        results[f"{eta:g}"] = {"eta": eta, **summary, "losses": losses, "sharpness": sharp}
        print(f"eta {eta:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()), flush=True)
    seconds = time.perf_counter() - t0
    draw(results, os.path.join(folder, "sharpness.png"), args.examples)
    write_metrics(folder, {"results": results, "seconds": seconds, "config": vars(args)})
    print(f"{seconds:.0f} s -> {folder}")


def draw(results, path, examples):
    """Loss (left) and sharpness with each 2 / eta dashed (right), one colour per eta."""
    plt = plots._plt()
    fig, (loss_ax, sharp_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for r, colour in zip(results.values(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        label = f"eta = {r['eta']:g}"
        loss_ax.plot(r["losses"], color=colour, lw=1, label=label)
        steps, values = zip(*r["sharpness"])
        sharp_ax.plot(steps, values, color=colour, lw=1.5, label=label)
        sharp_ax.axhline(2 / r["eta"], color=colour, ls="--", lw=1)
        sharp_ax.annotate(f"2 / {r['eta']:g}", (0, 2 / r["eta"]), xytext=(3, 3), textcoords="offset points",
                          color=colour, fontsize=8)  # fmt: skip
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("step (full batch)")
    loss_ax.set_ylabel("training loss (mean squared error)")
    sharp_ax.set_xlabel("step (full batch)")
    sharp_ax.set_ylabel("sharpness: the Hessian's largest eigenvalue")
    for ax in (loss_ax, sharp_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"gradient descent on {examples} MNIST images, MLP 784-200-200-10 (tanh)", fontsize=10)
    return plots._save(fig, path)


if __name__ == "__main__":
    cli(main)
