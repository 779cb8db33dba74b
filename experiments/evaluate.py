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
import jax.numpy as jnp
import numpy as np

import jaxnn as nn
from common import FLIP_KEEPS_LABEL, add_compile_cache_flag, build_model, cli, write_text
from jaxnn import data, train


def predict_probabilities(model, state, images, input_shape, flip=False, batch_size=1000):
    """Softmax outputs (n, classes) in evaluation mode; flip=True averages them with those of the
    left-right mirrored images."""

    @jax.jit
    def probabilities(x):
        x = train.to_inputs(x, input_shape)
        views = [x, x[:, :, ::-1]] if flip else [x]
        outs = [model.apply(state.params, v, state=state.model_state, train=False) for v in views]
        outs = [out if state.model_state is None else out[0] for out in outs]
        return sum(jax.nn.softmax(out.astype(jnp.float32)) for out in outs) / len(outs)

    return np.concatenate(
        [probabilities(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


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
        config = argparse.Namespace(**json.load(f)["config"])
    if args.flip and config.dataset not in FLIP_KEEPS_LABEL:
        raise nn.InputError(f"--flip: a mirror image changes the label on {config.dataset}")
    ds = data.load(config.dataset, data_dir=args.data_dir or config.data_dir, dtype="uint8")
    model, input_shape = build_model(config.model, ds.classes, ds.x_train.shape[1:], config)
    if args.flip and len(input_shape) != 3:
        raise nn.InputError(f"--flip needs a model that reads images (cnn, resnet), not {config.model}")
    model = nn.mixed_precision(model, config.precision)
    # the optimizer only gives the checkpoint's shape here (its schedule's length does not matter)
    opt = train.optimizer(config.optimizer, config.lr, config.schedule, 1, weight_decay=config.weight_decay)
    like = train.init_state(model, opt, jax.random.PRNGKey(0), input_shape)
    state, _ = train.load_checkpoint(paths["checkpoint.npz"], like)

    result = {"run": args.run, "dataset": config.dataset, "test_examples": len(ds.x_test)}
    for name, flip in [("test_accuracy", False), ("test_accuracy_flip_averaged", True)][: 1 + args.flip]:
        probabilities = predict_probabilities(model, state, ds.x_test, input_shape, flip)
        result[name] = float(np.mean(np.argmax(probabilities, 1) == ds.y_test))
        print(f"{name}: {result[name]:.4f}")
    write_text(os.path.join(args.run, "evaluation.json"), json.dumps(result, indent=2))


if __name__ == "__main__":
    cli(main)
