"""Shared by the benchmark scripts: write a result as JSON, creating the folder."""

import json

from jaxnn.files import write_text


def write_json(path, result):
    """Write result to path (if a path is given); the folder is created."""
    if not path:
        return
    write_text(path, json.dumps(result, indent=2))  # atomic; the folder is created
