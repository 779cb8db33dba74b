"""Lecture: gradient descent, W <- W - lr * dL/dW. Loss curves for several learning rates, one of
them too large (its loss becomes NaN at once), and a learning-rate range test whose rate grows
by 1.1% a step: it trains well at first, then its loss becomes NaN/inf (seed 0: at step 269, lr
about 1.9); the run stops with a clear message and the last good checkpoint is kept (the range
test checkpoints every eighth of an epoch, so that one exists whichever step blows up).

    python experiments/gradient_descent.py --data-dir ../shared/data/mnist [--out DIR]
"""

import os

import jax
import optax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics


def main():
    p = parser(__doc__, epochs=3)
    p.add_argument("--lrs", type=float, nargs="+", default=[0.001, 0.01, 0.1, 0.5, 5000.0])
    args = p.parse_args()
    folder = out_dir(args.out, "gradient_descent")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    arrays = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    curves, results = {}, {}
    runs = {f"{lr:g}": lr for lr in args.lrs}
    runs["0.1 x 1.011^step"] = optax.exponential_decay(0.1, transition_steps=1, decay_rate=1.011)
    for label, lr in runs.items():
        model = nn.mlp([784, 256, 256, 10])
        ckpt = os.path.join(folder, f"checkpoint_lr{len(results)}.npz")
        if os.path.exists(ckpt):
            os.remove(ckpt)
        try:
            _, history = train.fit(
                model,
                nn.losses.softmax_cross_entropy,
                arrays,
                epochs=args.epochs,
                batch_size=128,
                opt=train.optimizer("sgd", lr),
                key=jax.random.PRNGKey(args.seed),
                checkpointing=train.Checkpointing(
                    ckpt, every=0 if callable(lr) else None
                ),  # range test: every chunk
                reporting=train.Reporting(progress=False),
            )
            last = history["epochs"][-1]
            results[label] = {"status": "ok", "test_accuracy": last["test_accuracy"]}
            print(f"lr {label:<6s} test accuracy {last['test_accuracy']:.4f}")
        except nn.TrainingDiverged as e:
            history = e.history
            results[label] = {
                "status": "diverged",
                "message": str(e),
                "checkpoint_kept": os.path.exists(ckpt),
                "epochs_completed": len(history["epochs"]),
                "checkpoint": ckpt,
            }
            print(f"lr {label:<6s} DIVERGED: {e}")
        curves[f"lr = {label}"] = history["step_losses"]
    plots.curves(
        curves,
        os.path.join(folder, "loss_curves.png"),
        title="plain gradient descent on MNIST (MLP)",
        diverged_above=10.0,  # four times the loss of a uniform guess (log 10 = 2.3)
    )
    write_metrics(folder, {"results": results, "config": vars(args)})
    print(f"-> {folder}")


if __name__ == "__main__":
    cli(main)
