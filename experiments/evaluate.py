"""Evaluate a finished experiments/train.py run from its folder: the test accuracy from one view
(as train.py reports it) and, with --flip, with test-time flip averaging: the mean of the softmax of
each test image and of its left-right mirror (only where a mirror keeps the label: fashion_mnist).

    python experiments/evaluate.py RUN_FOLDER [--data-dir DIR] [--flip]

Reads RUN_FOLDER/metrics.json (the run's config) and RUN_FOLDER/checkpoint.npz; writes
RUN_FOLDER/evaluation.json. --data-dir defaults to the one the run was trained from.
"""

import argparse
import json
import os

import jax

import jaxnn as nn
from jaxnn import data, train
from jaxnn_lab.cli import add_compile_cache_flag, cli, write_text
from jaxnn_lab.zoo import FLIP_KEEPS_LABEL, build_model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a folder experiments/train.py wrote (metrics.json, checkpoint.npz)")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: the run's)")
    p.add_argument("--flip", action="store_true", help="also evaluate with test-time flip averaging")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_compile_cache_flag(p)
    args = p.parse_args()
    paths = {name: os.path.join(args.run, name) for name in ("metrics.json", "checkpoint.npz")}
    for path in paths.values():
        if not os.path.isfile(path):
            raise nn.InputError(f"{path} does not exist: pass a folder experiments/train.py wrote")
    with open(paths["metrics.json"]) as f:
        try:
            config = argparse.Namespace(**json.load(f)["config"])
        except (ValueError, KeyError, TypeError) as e:
            message = f"{paths['metrics.json']} is not a metrics.json train.py wrote ({e!r})"
            raise nn.InputError(message) from None
    if args.flip and config.dataset not in FLIP_KEEPS_LABEL:
        raise nn.InputError(f"--flip: a mirror image changes the label on {config.dataset}")
    ds = data.load(config.dataset, data_dir=args.data_dir or config.data_dir, dtype="uint8")
    model = build_model(config.model, ds.classes, ds.x_train.shape[1:], config)
    model = nn.mixed_precision(model, config.precision)
    # the optimizer only gives the checkpoint's shape here (its schedule's length does not matter)
    opt = train.optimizer(config.optimizer, config.lr, config.schedule, 1, weight_decay=config.weight_decay)
    like = train.init_state(model, opt, jax.random.PRNGKey(0))
    state, _ = train.load_checkpoint(paths["checkpoint.npz"], like)

    result = {"run": args.run, "dataset": config.dataset, "test_examples": len(ds.x_test)}
    for suffix, flip in [("", False), ("_flip_averaged", True)][: 1 + args.flip]:
        evaluate = train.make_evaluate(model, nn.losses.softmax_cross_entropy, flip=flip)
        loss, accuracy = evaluate(state.params, ds.x_test, ds.y_test, state.model_state)
        result["test_loss" + suffix], result["test_accuracy" + suffix] = float(loss), float(accuracy)
        print(f"test_accuracy{suffix}: {accuracy:.4f} (test_loss{suffix} {loss:.4f})")
    write_text(os.path.join(args.run, "evaluation.json"), json.dumps(result, indent=2))


if __name__ == "__main__":
    cli(main)
