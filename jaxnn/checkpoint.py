"""Atomic save/restore of a training state (any pytree of arrays) plus JSON metadata.

    save(path, state, meta={"epoch": 3})        # writes path.tmp-*, then renames: never half-written
    state, meta = restore(path, like=state)     # `like` gives the tree structure to fill

The arrays go into one .npz, keyed by their tree paths; a reader checks that the stored paths,
shapes and dtypes match the template, so a checkpoint of another model is refused clearly.
"""

import json
import os
import tempfile

import jax
import numpy as np


def _flat(tree):
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in with_paths], [leaf for _, leaf in with_paths], treedef


def save(path, tree, meta=None):
    """Write tree (and meta, JSON-serialisable) to `path` atomically."""
    names, leaves, _ = _flat(tree)
    arrays = {f"a{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["__names__"] = np.asarray(json.dumps(names))
    arrays["__meta__"] = np.asarray(json.dumps(meta or {}))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def restore(path, like):
    """Read a checkpoint into the structure of `like`; returns (tree, meta)."""
    names, leaves, treedef = _flat(like)
    with np.load(path) as f:
        stored = json.loads(str(f["__names__"]))
        if stored != names:
            raise ValueError(
                f"checkpoint {path} holds a different tree: {stored[:4]}... vs expected {names[:4]}..."
            )
        arrays = [f[f"a{i}"] for i in range(len(names))]
        meta = json.loads(str(f["__meta__"]))
    for name, got, want in zip(names, arrays, leaves):
        if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype:
            raise ValueError(
                f"checkpoint {path}: {name} is {got.dtype}{got.shape}, expected "
                f"{np.asarray(want).dtype}{np.shape(want)}"
            )
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in arrays]), meta
