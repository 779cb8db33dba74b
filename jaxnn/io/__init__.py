"""Interop: a model's weights in and out of jaxnn, and artifacts that run without it.

    params, state = io.from_torch(model, torch_module, (28, 28, 1))        # PyTorch weights in
    state_dict = io.to_torch(model, params, state, torch_module, (28, 28, 1))  # and out
    io.save_safetensors("weights.safetensors", params, state)       # a file any framework reads
    params, state = io.load_safetensors("weights.safetensors", params, state)
    io.export(model, params, state, (28, 28, 1), "model.jaxexport")  # runs with jax + flatbuffers, no jaxnn

PyTorch, safetensors and TensorBoard are optional: `pip install -e '.[interop]'`.
"""

from .artifact import export, load_exported
from .pytorch import from_torch, layer_leaves, to_torch
from .weights import load_safetensors, save_safetensors, tree_names

__all__ = [
    "from_torch",
    "to_torch",
    "layer_leaves",
    "save_safetensors",
    "load_safetensors",
    "tree_names",
    "export",
    "load_exported",
]
