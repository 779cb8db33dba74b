"""Shared by the benchmark scripts: write a result as JSON, creating the folder."""

import json
import os


def write_json(path, result):
    """Write result to path (if a path is given); the folder is created."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
