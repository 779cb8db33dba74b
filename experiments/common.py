"""Shared by the experiment scripts: output folders, metrics.json, the model zoo of train.py."""
import argparse
import json
import math
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
    n = math.prod(image_shape)
    return nn.Dense(classes), (n,)


def _mlp(classes, image_shape, args):
    n = math.prod(image_shape)
    return nn.mlp([n, args.width, args.width, classes], activation=args.activation), (n,)


def _cnn(classes, image_shape, args):
    """Two conv blocks (32, 64 channels, 3x3, ReLU, 2x2 max pool), then Dense 128 -> classes,
    with Dropout before each Dense when args.dropout > 0."""
    rate = getattr(args, "dropout", 0.0) or 0.0
    drop = [nn.Dropout(rate)] if rate > 0 else []
    model = nn.serial(
        nn.Conv2D(32, (3, 3)), nn.activation("relu"), nn.MaxPool(),
        nn.Conv2D(64, (3, 3)), nn.activation("relu"), nn.MaxPool(),
        nn.Flatten(), *drop, nn.Dense(128), nn.activation("relu"), *drop, nn.Dense(classes),
    )
    return model, tuple(image_shape)


def _recurrent(cell):
    def build(classes, image_shape, args):
        """Reads the image row by row: 28 steps of 28 pixels, then Dense on the last hidden state."""
        rows, cols = image_shape[0], image_shape[1] * image_shape[2]
        return nn.serial(cell(args.width), nn.LastStep(), nn.Dense(classes)), (rows, cols)

    return build


MODELS = {
    "linear": (_linear, dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle")),
    "mlp": (_mlp, dict(epochs=4, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", width=256)),
    "cnn": (_cnn, dict(epochs=10, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle", dropout=0.3)),
    "lstm": (_recurrent(nn.LSTM), dict(epochs=8, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle",
                                       width=128)),
    "gru": (_recurrent(nn.GRU), dict(epochs=8, batch_size=128, optimizer="adam", lr=3e-3, schedule="onecycle",
                                     width=128)),
    "rnn": (_recurrent(nn.RNN), dict(epochs=8, batch_size=128, optimizer="adam", lr=1e-3, schedule="onecycle",
                                     width=128)),
}
