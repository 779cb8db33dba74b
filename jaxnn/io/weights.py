"""Parameters (and state) in a safetensors file: a flat file of named tensors that PyTorch, JAX,
NumPy and the Hugging Face tools read, with no code execution on load.

    # names: "3.w", "5.mean", ...
    save_safetensors("model.safetensors", params, state)
    params, state = load_safetensors("model.safetensors", params, state)

A tensor's name is its readable path in the pytree, the keys joined by dots (`"3.w"` is
`params[3]["w"]`). Parameters and state share one namespace, as in a PyTorch state_dict; the file's
metadata says which names are state. Files are written atomically, like every file jaxnn writes.
"""

import json
import struct
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..checkpoint import checked_tree
from ..errors import CheckpointError, InputError
from ..files import atomic_write
from ..types import Params, State

__all__ = ["save_safetensors", "load_safetensors", "tree_names"]

FORMAT = "jaxnn"


def _safetensors():
    try:
        import safetensors.numpy  # noqa: PLC0415
    except ImportError as e:
        raise InputError("safetensors files need the package: pip install -e '.[interop]'") from e
    return safetensors


def tree_names(tree: Any) -> list[str]:
    """The readable names of a pytree's leaves: their keys joined by dots.

    **Arguments:** `tree` a pytree of arrays (tuples, lists, dicts, NamedTuples).

    **Returns:** one name per leaf, in `jax.tree_util.tree_leaves` order ("3.w" for `tree[3]["w"]`).
    """
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for k in path:
            parts.append(str(getattr(k, "idx", getattr(k, "key", getattr(k, "name", k)))))
        names.append(".".join(parts))
    return names


def _named(tree: Any, what: str) -> dict[str, np.ndarray]:
    names, leaves = tree_names(tree), jax.tree_util.tree_leaves(tree)
    out = {}
    for name, leaf in zip(names, leaves):
        array = np.ascontiguousarray(np.asarray(leaf))
        if array.dtype.kind not in "biuf" and array.dtype != jnp.bfloat16:
            raise InputError(f"{what} {name!r} has dtype {array.dtype}: safetensors holds numbers only")
        out[name] = array
    return out


def save_safetensors(path: str, params: Params, state: State = None) -> str:
    """Write parameters (and the model's state) to a safetensors file, atomically.

    **Arguments:**

    - `path`: the file to write (a kill or a full disk leaves the previous file as it was).
    - `params`: the model's parameters.
    - `state`: its state (BatchNorm's running statistics), or None.

    **Returns:** path. Tensor names are the leaves' dotted paths ("3.w", "5.mean"); a state name that
    equals a parameter name is refused (InputError). Every dtype is kept as it is, bfloat16 as
    safetensors' BF16.
    """
    safetensors = _safetensors()
    tensors = _named(params, "parameter")
    state_tensors = _named(state, "state") if state else {}
    clash = sorted(set(tensors) & set(state_tensors))
    if clash:
        raise InputError(f"save_safetensors: state and parameters share the names {clash[:3]}")
    tensors.update(state_tensors)
    metadata = {"format": FORMAT, "state": json.dumps(sorted(state_tensors))}
    data = safetensors.numpy.save(tensors, metadata=metadata)
    return atomic_write(path, lambda f: f.write(data))


def load_safetensors(path: str, like: Params, state_like: State = None) -> Any:
    """Read parameters (and state) from a safetensors file into the structure of a template.

    **Arguments:**

    - `path`: the file.
    - `like`: parameters of the same model (e.g. from `model.init`), giving the structure, shapes and
      dtypes expected.
    - `state_like`: the model's state, likewise (`model.init_state(...)`), or None.

    **Returns:** the parameters, or `(params, state)` when `state_like` is given. The file must hold
    exactly the template's tensors: a file that is not a safetensors file, that lacks a tensor, holds
    one the template does not have (a deeper model's, or state when no `state_like` is given), or
    whose shapes or dtypes differ, raises a CheckpointError naming the first difference.
    """
    _safetensors()  # the same install hint as for saving
    with open(path, "rb") as f:
        data = f.read()
    tensors, metadata = read_safetensors(path, data)
    params = _fill(path, tensors, like, "parameter")
    expected = set(tree_names(like))
    if state_like is not None:
        expected |= set(tree_names(state_like))
    extra = sorted(set(tensors) - expected)
    if extra:
        stored_state = set(json.loads(metadata.get("state", "[]")))
        hint = (
            "; the file also holds the model's state: pass state_like=model.init_state(input_shape)"
            if state_like is None and set(extra) <= stored_state
            else " (the file holds another, larger model?)"
        )
        raise CheckpointError(
            f"{path} holds {len(extra)} tensors the model does not have, e.g. {extra[:3]}{hint}"
        )
    if state_like is None:
        return params
    return params, _fill(path, tensors, state_like, "state")


# safetensors' dtype names -> NumPy's (BF16 as JAX's bfloat16)
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def read_safetensors(path: str, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file's bytes (its format: an 8-byte little-endian
    header length, a JSON header of names, dtypes, shapes and byte ranges, then the raw data).

    **Arguments:** `path` the file's name, for messages; `data` its bytes.

    **Returns:** `({name: array}, metadata)`. A file that is not a safetensors file raises
    CheckpointError. (Read here rather than by `safetensors.numpy`, which has no bfloat16.)
    """
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        metadata = header.pop("__metadata__", {}) or {}
        body = memoryview(data)[8 + size :]
        tensors = {}
        for name, info in header.items():
            start, end = info["data_offsets"]
            dtype = np.dtype(DTYPES[info["dtype"]])
            if not 0 <= start <= end <= len(body):
                raise ValueError(f"tensor {name!r} lies outside the file")
            tensors[name] = np.frombuffer(body[start:end], dtype).reshape(info["shape"]).copy()
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({len(data)} bytes; {type(e).__name__}: {e})"
        ) from None
    return tensors, metadata


def _fill(path: str, tensors: dict, like: Any, what: str) -> Any:
    names = tree_names(like)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CheckpointError(f"{path} has no {what} {missing[0]!r} ({len(missing)} of {len(names)} missing)")

    def mismatch(name, got, want):
        return CheckpointError(
            f"{path}: {what} {name!r} is {got.dtype}{got.shape}, the model needs {want.dtype}{np.shape(want)}"
        )

    return checked_tree(like, tensors, names, mismatch)
