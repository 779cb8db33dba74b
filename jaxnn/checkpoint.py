"""Atomic save/restore of a training state (any pytree of arrays) plus JSON metadata.

    save(path, state, meta={"epoch": 3})        # a temporary file, synced, then renamed: never half-written
    state, meta = restore(path, like=state)     # `like` gives the tree structure to fill

The arrays go into one .npz, keyed by their tree paths; a reader checks that the stored paths,
shapes and dtypes match the template, so a checkpoint of another model is refused clearly. A file
that cannot be read as a checkpoint (truncated, empty, foreign) raises CheckpointError; `set_aside`
renames it so that nothing overwrites it and nothing loads it by mistake.
"""

import json
import os
import time
import zipfile
from typing import Any

import jax
import numpy as np

from .errors import CheckpointError
from .files import atomic_write

__all__ = ["save", "restore", "read", "fill", "set_aside"]


def _flat(tree):
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in with_paths], [leaf for _, leaf in with_paths], treedef


def save(path: str, tree: Any, meta: dict | None = None) -> str:
    """Write a pytree of arrays, and JSON metadata, to one file atomically.

    **Arguments:**

    - `path`: the file (an .npz); a kill or a full disk mid-write leaves the previous file as it was.
    - `tree`: any pytree of arrays (a TrainState, params, ...).
    - `meta`: a JSON-serialisable dict kept beside the arrays.

    **Returns:** path. The file's permissions follow the umask.
    """
    names, leaves, _ = _flat(tree)
    arrays: dict[str, Any] = {f"a{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["__names__"] = np.asarray(json.dumps(names))
    arrays["__meta__"] = np.asarray(json.dumps(meta or {}))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read(path: str) -> tuple[list[str], list[np.ndarray], dict]:
    """A checkpoint's contents, without a template.

    **Arguments:**

    - `path`: the file.

    **Returns:** `(names, arrays, meta)`: the arrays' tree paths, the arrays, the metadata. A file that
    is not a readable checkpoint raises CheckpointError.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one array, no names, no metadata
            raise CheckpointError(
                f"{path} holds a single NumPy array {loaded.dtype}{loaded.shape}, not a jaxnn checkpoint "
                "(an .npz archive written by jaxnn.checkpoint.save or train.fit)"
            )
        with loaded as f:
            names = json.loads(str(f["__names__"]))
            meta = json.loads(str(f["__meta__"]))
            arrays = [f[f"a{i}"] for i in range(len(names))]
    except (FileNotFoundError, CheckpointError):
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise CheckpointError(
            f"{path} is not a readable jaxnn checkpoint ({size} bytes; {type(e).__name__}: {e})"
        ) from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object")
    return names, arrays, meta


def restore(path: str, like: Any) -> tuple[Any, dict]:
    """Read a checkpoint into the structure of a template.

    **Arguments:**

    - `path`: the file.
    - `like`: a pytree of the same structure, shapes and dtypes (e.g. a freshly initialised state).

    **Returns:** `(tree, meta)`. Another structure, shape or dtype raises CheckpointError naming it.
    """
    return fill(path, read(path), like)


def fill(path: str, contents: tuple, like: Any) -> tuple[Any, dict]:
    """`restore` from contents already read.

    **Arguments:**

    - `path`: the file they came from (for messages).
    - `contents`: what `read(path)` returned.
    - `like`: the template pytree.

    **Returns:** `(tree, meta)`, checked against `like` as `restore` checks.
    """
    names, leaves, treedef = _flat(like)
    stored, arrays, meta = contents
    if stored != names:
        missing = [n for n in names if n not in stored][:3]
        extra = [n for n in stored if n not in names][:3]
        raise CheckpointError(
            f"checkpoint {path} holds another model or state ({len(stored)} arrays, expected {len(names)}; "
            f"missing {missing}, unexpected {extra})"
        )
    for name, got, want in zip(names, arrays, leaves):
        if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype:
            raise CheckpointError(
                f"checkpoint {path}: {name} is {got.dtype}{got.shape}, expected "
                f"{np.asarray(want).dtype}{np.shape(want)} (a checkpoint of another model?)"
            )
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays]), meta


def set_aside(path: str) -> str:
    """Rename an unusable checkpoint to PATH.corrupt-<time>, kept for inspection, loaded by nothing.

    **Arguments:**

    - `path`: the file.

    **Returns:** its new name.
    """
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    return aside
