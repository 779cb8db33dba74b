"""Manual vs autodiff: the same seed trained with the hand-derived gradients and with jax.grad.
The curves agree to float32 rounding; the times are printed side by side.

    python experiments/manual_vs_autodiff.py --data-dir ../shared/data/mnist [--epochs 4] [--out DIR]
"""

import os

import jax
import numpy as np

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics
from jaxnn_lab.zoo import fit_mnist


def main():
    p = parser(__doc__, epochs=4)
    args = p.parse_args()
    folder = out_dir(args.out, "manual_vs_autodiff")
    ds = data.load("mnist", data_dir=args.data_dir, dtype="uint8")
    runs = {}
    for grad in ("manual", "autodiff", "manual", "autodiff"):  # twice each, alternating: timing noise
        model = nn.mlp([784, 256, 256, 10])
        state, history = fit_mnist(
            ds, model, args, options=train.TrainOptions(mode=grad), reporting=train.Reporting(progress=False)
        )
        runs.setdefault(grad, []).append((state, history))
    m_state, m_hist = runs["manual"][0]
    a_state, a_hist = runs["autodiff"][0]
    m_loss, a_loss = np.asarray(m_hist["step_losses"]), np.asarray(a_hist["step_losses"])
    first_epoch = slice(0, len(m_loss) // args.epochs)
    result = {
        "manual": {
            "test_accuracy": m_hist["epochs"][-1]["test_accuracy"],
            "train_seconds": [h["train_seconds"] for _, h in runs["manual"]],
        },
        "autodiff": {
            "test_accuracy": a_hist["epochs"][-1]["test_accuracy"],
            "train_seconds": [h["train_seconds"] for _, h in runs["autodiff"]],
        },
        "max_rel_diff_step_loss_first_epoch": float(
            np.max(np.abs(m_loss[first_epoch] - a_loss[first_epoch]) / np.abs(a_loss[first_epoch]))
        ),
        "max_rel_diff_step_loss_all": float(np.max(np.abs(m_loss - a_loss) / np.abs(a_loss))),
        "rel_diff_epoch_mean_train_loss": [
            abs(m["train_loss"] - a["train_loss"]) / a["train_loss"]
            for m, a in zip(m_hist["epochs"], a_hist["epochs"])
        ],
        "max_abs_diff_params": float(
            max(
                np.max(np.abs(np.asarray(u) - np.asarray(v)))
                for u, v in zip(
                    jax.tree_util.tree_leaves(m_state.params), jax.tree_util.tree_leaves(a_state.params)
                )
            )
        ),
        "config": vars(args),
    }
    result["time_ratio_manual_over_autodiff"] = min(result["manual"]["train_seconds"]) / min(
        result["autodiff"]["train_seconds"]
    )
    plots.agreement(
        m_loss,
        a_loss,
        os.path.join(folder, "curves.png"),
        ("manual (hand rules)", "autodiff (jax.grad)"),
        title="same seed, two ways to the gradient (float32)",
    )
    write_metrics(folder, result)
    for k, v in result.items():
        print(f"{k}: {v}")
    print(f"-> {folder}")


if __name__ == "__main__":
    cli(main)
