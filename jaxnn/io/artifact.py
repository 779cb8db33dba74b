"""A trained model as a `jax.export` artifact: the inference function serialised with its weights,
which a process with jax (and flatbuffers, which `jax.export` reads artifacts with) loads and runs,
for any batch size.

    export(model, params, state, (28, 28, 1), "model.jaxexport")

    # anywhere, with jax and flatbuffers (pip install jax flatbuffers), no jaxnn:
    import jax, numpy as np
    run = jax.export.deserialize(bytearray(open("model.jaxexport", "rb").read()))
    logits = run.call(np.zeros((5, 28, 28, 1), np.float32))

Compatibility (JAX's promise for serialised artifacts): a newer JAX loads and runs an artifact for
six months after the JAX version that wrote it (JAX refuses older artifacts); an older JAX loads
only artifacts a few weeks newer than itself. For archives, keep the training run's checkpoint or
safetensors file as well, and export again with the JAX of the day.
"""

import json
from typing import Any

import jax
import jax.numpy as jnp

from ..core import Layer, model_input_shape
from ..errors import CheckpointError, InputError
from ..files import atomic_write, write_text
from ..types import DTypeLike, Params, Shape, State

__all__ = ["export", "load_exported"]


def export(
    model: Layer,
    params: Params,
    state: State,
    input_shape: Shape | None,
    path: str,
    dtype: DTypeLike = jnp.float32,
) -> str:
    """Serialise the model's inference function, weights included, with `jax.export`.

    **Arguments:**

    - `model`: the Layer.
    - `params`, `state`: its trained parameters and state (`()` or None for a model without state).
      A model with state (BatchNorm) must be given its trained state: None raises an InputError,
      since its initial running statistics would give an artifact that computes something else.
    - `input_shape`: the shape of one example (default `model.input_shape`); the batch dimension is
      symbolic, so the artifact runs for any batch size.
    - `path`: the file to write, atomically; `path + ".json"` gets what the artifact expects (input
      shape and dtype, the model's name, the JAX version that wrote it).
    - `dtype`: the input's dtype (int32 for token ids).

    **Returns:** path. The function is the model in evaluation mode (`train=False`: BatchNorm's
    running statistics, no Dropout), its weights embedded as constants, for the platform this JAX
    runs on.
    """
    shape = model_input_shape(model, input_shape, "export")
    state = _checked_state(model, state, shape)

    def infer(x):
        return model.apply(params, x, state=state, train=False)[0]

    batch = jax.export.symbolic_shape("batch")[0]
    spec = jax.ShapeDtypeStruct((batch,) + shape, dtype)
    try:
        exported = jax.export.export(jax.jit(infer))(spec)
    except Exception as e:  # shape polymorphism refused by an op of the model
        raise InputError(
            f"export: {model.name} cannot be exported with a symbolic batch ({type(e).__name__}: {e})"
        ) from e
    data = exported.serialize()
    atomic_write(path, lambda f: f.write(bytes(data)))
    about = {
        "model": model.name,
        "input_shape": ["batch", *shape],
        "input_dtype": str(jnp.dtype(dtype)),
        "output_shape": [str(d) for d in exported.out_avals[0].shape],
        "jax": jax.__version__,
        "platforms": list(exported.platforms),
    }
    write_text(path + ".json", json.dumps(about, indent=2))
    return path


def _checked_state(model: Layer, state: State, shape: Shape) -> State:
    """The state to embed: the model's initial state for a model without one; for a model with
    state, the given state, checked against the model's own structure and shapes."""
    initial = model.init_state(shape)
    if not jax.tree_util.tree_leaves(initial):
        return initial
    if state is None or not jax.tree_util.tree_leaves(state):
        raise InputError(
            f"export: {model.name} has state (running statistics) and none was given: pass the "
            "trained state (train.fit's state.model_state); its initial statistics would export "
            "another function"
        )
    want, got = jax.tree_util.tree_structure(initial), jax.tree_util.tree_structure(state)
    if want != got or any(
        jnp.shape(a) != jnp.shape(b)
        for a, b in zip(jax.tree_util.tree_leaves(initial), jax.tree_util.tree_leaves(state))
    ):
        raise InputError(f"export: the state given is not {model.name}'s (its structure or shapes differ)")
    return state


def load_exported(path: str) -> Any:
    """Load an artifact written by `export` (what `jax.export.deserialize` gives).

    **Arguments:** `path` the file.

    **Returns:** a `jax.export.Exported`; `.call(x)` runs it. An empty, cut or foreign file raises a
    CheckpointError naming it.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return jax.export.deserialize(bytearray(data))
    except Exception as e:  # flatbuffers raises struct.error, IndexError, ... on bytes it cannot parse
        raise CheckpointError(
            f"{path} is not a jax.export artifact ({len(data)} bytes; {type(e).__name__}: {e})"
        ) from None
