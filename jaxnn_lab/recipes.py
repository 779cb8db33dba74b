"""The training recipe of each (model, dataset): one table, each row with what it measured and where.

`experiments/train.py --model M --dataset D` fills every flag left out from the row (M, D), or from
(M, "mnist") for a dataset without a row of its own. Each row's accuracy and training time come
from the committed metrics file it names (a run of `experiments/train.py` with the row's settings on
this project's 2-core CPU, unless the file says otherwise): the table holds the settings and the
file's name and reads the numbers from the file, so `--help` says what a default gives.
"""

import json
import os
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Recipe(NamedTuple):
    """A row: the settings, and the committed run that measured them."""

    settings: dict  # flag name (underscores) -> value
    source: str  # the committed metrics file of a run with these settings


# every recipe trains with Adam (the ResNet with Nesterov) under a one-cycle schedule
_ONECYCLE = dict(batch_size=128, optimizer="adam", schedule="onecycle")
_LINEAR = {**_ONECYCLE, "epochs": 10, "lr": 3e-3}
# the MLP main job: label smoothing 0.1, width 160 (chosen for MNIST's time to 98%)
_MLP = {**_ONECYCLE, "epochs": 3, "batch_size": 256, "lr": 8e-3, "width": 160, "label_smoothing": 0.1}
# the small CNN: 16-32 channels, random 1-pixel shifts, label smoothing (MNIST's time to 99.3%)
_CNN_FAST = {
    **_ONECYCLE,
    **dict(epochs=3, lr=6e-3, dropout=0.0, channels=(16, 32), augment=True, shift=1, label_smoothing=0.1),
}
# the wider CNN with Dropout and 10 epochs: what reaches 92% on Fashion-MNIST
_CNN_WIDE = {
    **_ONECYCLE,
    **dict(epochs=10, lr=3e-3, dropout=0.3, channels=(32, 64), augment=False, label_smoothing=0.0),
}
_RESNET = {
    **_ONECYCLE,
    **dict(epochs=15, optimizer="nesterov", lr=0.1, weight_decay=5e-4, augment=True),
}
_RECURRENT = {**_ONECYCLE, "epochs": 8, "lr": 3e-3, "width": 128}

RECIPES: dict[tuple[str, str], Recipe] = {
    ("linear", "mnist"): Recipe(_LINEAR, "docs/results/recipes/linear-mnist/metrics.json"),
    ("linear", "fashion_mnist"): Recipe(_LINEAR, "docs/results/recipes/linear-fashion_mnist/metrics.json"),
    ("mlp", "mnist"): Recipe(_MLP, "docs/results/recipes/mlp-mnist/metrics.json"),
    ("mlp", "fashion_mnist"): Recipe(
        {**_MLP, "epochs": 10}, "docs/results/recipes/mlp-fashion_mnist/metrics.json"
    ),
    ("cnn", "mnist"): Recipe(_CNN_FAST, "benchmarks/results/cpu/mnist_speed_cnn.json"),
    ("cnn", "fashion_mnist"): Recipe(_CNN_WIDE, "docs/results/recipes/cnn-fashion_mnist/metrics.json"),
    ("resnet", "mnist"): Recipe(_RESNET, "docs/results/resnet/mnist/metrics.json"),
    ("resnet", "fashion_mnist"): Recipe(
        {**_RESNET, "epochs": 30, "weight_decay": 1e-4, "blocks": 2},
        "docs/results/resnet/fashion_mnist_30_epochs_wd1e-4_blocks2/metrics.json",
    ),
    ("lstm", "mnist"): Recipe(_RECURRENT, "docs/results/recipes/lstm-mnist/metrics.json"),
    ("gru", "mnist"): Recipe(_RECURRENT, "docs/results/recipes/gru-mnist/metrics.json"),
    ("rnn", "mnist"): Recipe({**_RECURRENT, "lr": 1e-3}, "docs/results/recipes/rnn-mnist/metrics.json"),
}

MODELS = sorted({model for model, _ in RECIPES})


def measured(recipe: Recipe) -> tuple[float, float, dict]:
    """(test accuracy, training seconds, config) of the run a row cites: a metrics.json of
    experiments/train.py, or a benchmarks/mnist_speed.py result (its seed-0 run)."""
    with open(os.path.join(ROOT, recipe.source)) as f:
        result = json.load(f)
    if "test_accuracy" in result:
        return result["test_accuracy"], result["train_seconds"], result["config"]
    run = next(r for r in result["jaxnn"]["runs"] if r["seed"] == 0)
    return run["test_accuracy"], run["train_seconds"], result["recipe"]


def lookup(model: str, dataset: str) -> tuple[Recipe, str]:
    """(the row for (model, dataset), the dataset it was measured on): the model's MNIST row when the
    dataset has none of its own."""
    if (model, dataset) in RECIPES:
        return RECIPES[model, dataset], dataset
    return RECIPES[model, "mnist"], "mnist"


def describe() -> str:
    """The table as text, for --help."""
    lines = ["default recipes (model, dataset: measured test accuracy, training time; from the file named):"]
    for (model, dataset), row in RECIPES.items():
        accuracy, seconds, _ = measured(row)
        lines.append(f"  {model:7s} {dataset:14s} {100 * accuracy:.2f}% in {seconds:,.0f} s  ({row.source})")
    lines.append("  a dataset without a row gets the model's mnist recipe")
    return "\n".join(lines)
