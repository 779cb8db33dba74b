"""Windows over images: the shape checks and strided views that convolution and pooling share.

Images are NHWC: (batch, H, W, C). A window offset (i, j) of a kernel or pooling window, taken
every `stride` pixels, reads the strided view x[:, i::s, j::s]: a convolution or a pool is a sum
or a max over these views, one per offset, which is how the CPU backward rules are written.
"""

from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp

from .errors import InputError


def pair(v: Any, what: str) -> tuple[int, int]:
    """(v, v) for an int, v as a tuple for a pair; an InputError naming `what` for anything else."""
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) and i > 0 for i in v):
        raise InputError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return v


def check_image_shape(name: str, input_shape: tuple[int, ...]) -> None:
    """At init: raise unless input_shape is one image example (H, W, C)."""
    if len(input_shape) != 3:
        raise InputError(
            f"{name}: expected one example of shape (H, W, C), got input_shape {tuple(input_shape)}"
        )


def check_image(name: str, x: Any, channels: int | None = None) -> None:
    """Raise unless x is a batch of images (batch, H, W, C), with `channels` channels if given."""
    if jnp.ndim(x) != 4:
        raise InputError(f"{name}: expected images of shape (batch, H, W, C), got {jnp.shape(x)}")
    if channels is not None and x.shape[-1] != channels:
        raise InputError(
            f"{name}: expected {channels} input channels, got {x.shape[-1]} (shape {jnp.shape(x)})"
        )


def taps(x: Any, window: tuple[int, int], stride: tuple[int, int], out_size: tuple[int, int]) -> Iterator:
    """For each window offset (i, j): ((i, j), index, x[index]) with x[index] the strided view
    x[:, i::s, j::s] cut to the output size out_size = (P, Q)."""
    for i in range(window[0]):
        for j in range(window[1]):
            index = (
                slice(None),
                slice(i, i + stride[0] * (out_size[0] - 1) + 1, stride[0]),
                slice(j, j + stride[1] * (out_size[1] - 1) + 1, stride[1]),
            )
            yield (i, j), index, x[index]


def windows(x: Any, window: tuple[int, int], stride: tuple[int, int]) -> Iterator:
    """Pooling windows as taps: (index, view) per window offset (VALID: the output size follows)."""
    out_size = ((x.shape[1] - window[0]) // stride[0] + 1, (x.shape[2] - window[1]) // stride[1] + 1)
    for _, index, view in taps(x, window, stride, out_size):
        yield index, view
