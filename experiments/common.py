"""Shared by the experiment scripts: output folders, metrics.json, the model zoo of train.py."""

import argparse
import json
import os
import platform
import time

import jax

import jaxnn as nn


def parser(doc, epochs=None):
    """The options every experiment shares: --data-dir, --seed, --out (and --epochs with a default)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: download and cache)")
    if epochs is not None:
        p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default results/<experiment>)")
    return p


def out_dir(path, default_name):
    path = path or os.path.join("results", default_name)
    os.makedirs(path, exist_ok=True)
    return path


def write_metrics(folder, metrics):
    """metrics.json with the machine named, so numbers are never read without their context."""
    metrics = dict(metrics)
    metrics.setdefault(
        "machine",
        {
            "device": str(jax.devices()[0].device_kind),
            "devices": jax.device_count(),
            "jax": jax.__version__,
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    return path


# the default recipe of each model of the zoo (jaxnn.models), chosen by measurement (README)
MODELS = {
    "linear": dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle"),
    "mlp": dict(epochs=4, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", width=256),
    "cnn": dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", dropout=0.3),
    "lstm": dict(epochs=8, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", width=128),
    "gru": dict(epochs=8, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", width=128),
    "rnn": dict(epochs=8, batch_size=128, optimizer="adam", lr=1e-3, schedule="onecycle", width=128),
}

# which command-line options each model of the zoo takes
MODEL_OPTIONS = {
    "linear": (),
    "mlp": ("width", "activation"),
    "cnn": ("dropout", "batchnorm"),
    "lstm": ("width",),
    "gru": ("width",),
    "rnn": ("width",),
}


def build_model(name, classes, image_shape, args):
    """(model, input_shape) from jaxnn.models for `name`, with the options args holds for it."""
    options = {k: getattr(args, k) for k in MODEL_OPTIONS[name] if getattr(args, k, None) is not None}
    return nn.models.build(name, classes, image_shape, **options)
