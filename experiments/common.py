"""Shared by the experiment scripts: output folders, metrics.json, the model zoo of train.py."""
import json
import os
import platform
import time

import jax

import jaxnn as nn


def out_dir(path, default_name):
    path = path or os.path.join("results", default_name)
    os.makedirs(path, exist_ok=True)
    return path


def write_metrics(folder, metrics):
    """metrics.json with the machine named, so numbers are never read without their context."""
    metrics = dict(metrics)
    metrics.setdefault("machine", {
        "device": str(jax.devices()[0].device_kind), "devices": jax.device_count(),
        "jax": jax.__version__, "python": platform.python_version(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    return path


# name -> (builder(classes, image_shape, args) -> (model, input_shape), default recipe)
def _linear(classes, image_shape, args):
    n = 1
    for d in image_shape:
        n *= d
    return nn.Dense(classes), (n,)


def _mlp(classes, image_shape, args):
    n = 1
    for d in image_shape:
        n *= d
    return nn.mlp([n, args.width, args.width, classes], activation=args.activation), (n,)


MODELS = {
    "linear": (_linear, dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle")),
    "mlp": (_mlp, dict(epochs=4, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", width=256)),
}
