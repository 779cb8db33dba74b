"""Atomic save/restore of a training state (any pytree of arrays) plus JSON metadata.

    # a temporary file, synced, then renamed: never half-written
    save(path, state, meta={"epoch": 3})
    # `like` gives the tree structure to fill
    state, meta = restore(path, like=state)

The arrays go into one .npz, keyed by their tree paths; a reader checks that the stored paths,
shapes and dtypes match the template, so a checkpoint of another model is refused clearly. Every
leaf comes back bit for bit in its own dtype: bfloat16 (which .npz cannot name) is stored as its
16-bit pattern, and a typed PRNG key (`jax.random.key`) as its key data and implementation. A file
that cannot be read as a checkpoint (truncated, empty, foreign) raises CheckpointError; `set_aside`
renames it so that nothing overwrites it and nothing loads it by mistake.
"""

import json
import os
import time
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import CheckpointError
from .files import atomic_write

__all__ = ["save", "restore", "read", "fill", "set_aside", "dtype_name", "checked_tree"]


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
    stored = [_storable(leaf) for leaf in leaves]
    arrays: dict[str, Any] = {f"a{i}": array for i, (array, _) in enumerate(stored)}
    arrays["__names__"] = np.asarray(json.dumps(names))
    arrays["__dtypes__"] = np.asarray(json.dumps([dtype for _, dtype in stored]))
    arrays["__meta__"] = np.asarray(json.dumps(meta or {}))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def dtype_name(leaf: Any) -> str:
    """A leaf's dtype as a string, for arrays and typed PRNG keys alike.

    **Arguments:** `leaf` an array, a typed key array or a `jax.ShapeDtypeStruct`.

    **Returns:** "float32", "bfloat16", "key<fry>", ...
    """
    return str(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)


def _storable(leaf: Any) -> tuple[np.ndarray, str]:
    """(an array .npz can hold, how to read it back): a typed key as its key data ("key:<impl>"),
    bfloat16 as its uint16 bit pattern ("bfloat16"), anything else as it is ("")."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf)), f"key:{jax.random.key_impl(leaf)}"
    array = np.asarray(leaf)
    if array.dtype == jnp.bfloat16:
        return array.view(np.uint16), "bfloat16"
    return array, ""


def _restored(array: np.ndarray, how: str) -> Any:
    """The leaf `_storable` stored as (array, how)."""
    if how.startswith("key:"):
        return jax.random.wrap_key_data(jnp.asarray(array), impl=how[len("key:") :])
    if how == "bfloat16":
        return array.view(jnp.bfloat16)
    return array


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
            how = json.loads(str(f["__dtypes__"])) if "__dtypes__" in f.files else [""] * len(names)
            arrays = [_restored(f[f"a{i}"], how[i]) for i in range(len(names))]
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
    names = _flat(like)[0]
    stored, arrays, meta = contents
    if stored != names:
        missing = [n for n in names if n not in stored][:3]
        extra = [n for n in stored if n not in names][:3]
        raise CheckpointError(
            f"checkpoint {path} holds another model or state ({len(stored)} arrays, expected {len(names)}; "
            f"missing {missing}, unexpected {extra})"
        )

    def mismatch(name, got, want):
        return CheckpointError(
            f"checkpoint {path}: {name} is {dtype_name(got)}{got.shape}, expected "
            f"{dtype_name(want)}{np.shape(want)} (a checkpoint of another model?)"
        )

    return checked_tree(like, dict(zip(names, arrays)), names, mismatch), meta


def checked_tree(like: Any, stored: dict, names: list, mismatch: Callable[..., Exception]) -> Any:
    """A pytree with `like`'s structure whose leaves are read from a file's arrays by name, each
    checked to have its template leaf's shape and dtype: how a checkpoint and a safetensors file
    fill their template.

    **Arguments:**

    - `like`: the template pytree (arrays or `jax.ShapeDtypeStruct`s).
    - `stored`: name -> array, as the file holds them (every name of `names` present).
    - `names`: the file's name of each leaf of `like`, in `jax.tree_util.tree_leaves` order.
    - `mismatch(name, got, want)`: the error to raise for a leaf of another shape or dtype.

    **Returns:** the filled pytree of device arrays.
    """
    values = []
    for name, want in zip(names, jax.tree_util.tree_leaves(like)):
        got = stored[name]
        if np.shape(got) != np.shape(want) or dtype_name(got) != dtype_name(want):
            raise mismatch(name, got, want)
        values.append(jnp.asarray(got))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), values)


def set_aside(path: str) -> str:
    """Rename an unusable checkpoint to PATH.corrupt-<time>, kept for inspection, loaded by nothing.

    **Arguments:**

    - `path`: the file.

    **Returns:** its new name.
    """
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    return aside
