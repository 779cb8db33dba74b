"""The CNN with BatchNorm after each convolution against the same CNN without it, on MNIST and
Fashion-MNIST, with the same recipe (the CNN's earlier 10-epoch default: 32-64 channels, batch 128,
Adam one-cycle 3e-3, Dropout 0.3).

    python experiments/batchnorm.py --data-dir ../shared/data [--epochs 10] [--datasets mnist fashion_mnist]

--data-dir is the folder holding mnist/ and fashion_mnist/. Writes metrics.json (per run: test
accuracy, training seconds, per-epoch history), results.md and curves.png (test accuracy per epoch
and training loss per step, side by side) into --out (default results/batchnorm/).
"""

import os

import jax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab import plots
from jaxnn_lab.cli import cli, out_dir, parser, write_metrics, write_text
from jaxnn_lab.zoo import CNN_10_EPOCHS, run_summary


def run(ds, batchnorm, epochs, seed):
    recipe = CNN_10_EPOCHS
    model = nn.models.cnn(ds.classes, ds.x_train.shape[1:], dropout=recipe["dropout"], batchnorm=batchnorm)
    steps = epochs * (len(ds.x_train) // recipe["batch_size"])
    opt = train.optimizer(recipe["optimizer"], recipe["lr"], recipe["schedule"], steps)
    _, history = train.fit(
        model,
        nn.losses.softmax_cross_entropy,
        (ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        epochs=epochs,
        batch_size=recipe["batch_size"],
        opt=opt,
        key=jax.random.PRNGKey(seed),
        reporting=train.Reporting(progress=False),
    )
    return model, history


def main():
    p = parser(__doc__, epochs=CNN_10_EPOCHS["epochs"])
    p.add_argument(
        "--datasets", nargs="+", default=["mnist", "fashion_mnist"], choices=["mnist", "fashion_mnist"]
    )
    p.add_argument("--train-size", type=int, default=None, help="train on the first N examples (smoke tests)")
    args = p.parse_args()
    folder = out_dir(args.out, "batchnorm")
    results, panels = {}, {}
    for name in args.datasets:
        ds = data.load(
            name, data_dir=os.path.join(args.data_dir, name) if args.data_dir else None, dtype="uint8"
        )
        if args.train_size:
            ds = ds._replace(x_train=ds.x_train[: args.train_size], y_train=ds.y_train[: args.train_size])
        panels[name] = {}
        for batchnorm in (False, True):
            label = "CNN + BatchNorm" if batchnorm else "CNN"
            model, history = run(ds, batchnorm, args.epochs, args.seed)
            last = history["epochs"][-1]
            results[f"{name}/{label}"] = {
                **run_summary(history, "compile_seconds"),
                "model": model.name,
                "history": history["epochs"],
            }
            panels[name][label] = history
            print(
                f"{name:14s} {label:16s} test accuracy {last['test_accuracy']:.4f}  "
                f"{history['train_seconds']:.1f} s",
                flush=True,
            )
    plots.compare_runs(
        panels,
        os.path.join(folder, "curves.png"),
        title=f"CNN with and without BatchNorm ({args.epochs} epochs, same recipe)",
    )
    lines = ["| dataset | model | test accuracy | train s |", "| --- | --- | --- | --- |"]
    for key, r in results.items():
        dataset, label = key.split("/")
        lines.append(f"| {dataset} | {label} | {100 * r['test_accuracy']:.2f}% | {r['train_seconds']:.1f} |")
    write_text(os.path.join(folder, "results.md"), "\n".join(lines) + "\n")
    write_metrics(
        folder, {"results": results, "config": vars(args), "epochs": args.epochs, "recipe": CNN_10_EPOCHS}
    )
    print("\n".join(lines) + f"\n-> {folder}")


if __name__ == "__main__":
    cli(main)
