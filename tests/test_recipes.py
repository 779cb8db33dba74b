"""The recipe table (jaxnn_lab/recipes.py): every row's settings are those of the committed run it
cites (whose accuracy and time the table reads), and experiments/train.py fills every flag left out
from the row of the (model, dataset) asked for."""

import os

import pytest

from jaxnn_lab import flags, recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("row", sorted(recipes.RECIPES), ids=lambda r: "-".join(r))
def test_each_row_cites_the_run_that_measured_it(row):
    recipe = recipes.RECIPES[row]
    accuracy, seconds, config = recipes.measured(recipe)
    assert 0 < accuracy <= 1 and seconds > 0
    for name, value in recipe.settings.items():
        got = config.get(name)
        assert (list(got) if isinstance(got, (list, tuple)) else got) == (
            list(value) if isinstance(value, tuple) else value
        ), (name, got, value)
    if "dataset" in config:
        assert (config["model"], config["dataset"]) == row


def test_the_main_job_takes_the_row_of_the_dataset_asked_for():
    fashion = flags.parse_args(["--model", "cnn", "--dataset", "fashion_mnist"])
    assert (fashion.channels, fashion.epochs, fashion.dropout) == ((32, 64), 10, 0.3)
    assert fashion.recipe_dataset == "fashion_mnist"
    mnist = flags.parse_args(["--model", "cnn"])
    assert (mnist.channels, mnist.epochs, mnist.augment) == ((16, 32), 3, True)
    given = flags.parse_args(["--model", "cnn", "--dataset", "fashion_mnist", "--epochs", "2"])
    assert given.epochs == 2 and given.channels == (32, 64)  # a given flag wins over the row
    other = flags.parse_args(["--model", "lstm", "--dataset", "fashion_mnist"])
    assert other.recipe_dataset == "mnist"  # no row of its own: the model's MNIST recipe


def test_help_lists_the_recipes(capsys):
    with pytest.raises(SystemExit):
        flags.parse_args(["--help"])
    assert "fashion_mnist" in capsys.readouterr().out and "%" in recipes.describe()
