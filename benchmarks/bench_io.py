"""Shared by the benchmark scripts: write a result as JSON, creating the folder; a median with its spread."""

import json

import numpy as np

from jaxnn.files import write_text


def write_json(path, result):
    """Write result to path (if a path is given); the folder is created."""
    if not path:
        return
    write_text(path, json.dumps(result, indent=2))  # atomic; the folder is created


def spread(values):
    """{"median", "min", "max"} of repeated measurements, as the README reports them."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}
