"""Data augmentation on the device, inside the jitted training step: random translations,
horizontal flips and random erasing of a batch of images (batch, H, W, C), each example drawing its
own.

    # a function (key, images) -> images
    augment = augmentation(shift=2, flip=True, erase=0.5)
    x = augment(key, x)

Flip only where a mirror image keeps the label (clothes: yes; digits: no, a mirrored 2 is no 2).
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .errors import InputError
from .types import PRNGKey

__all__ = ["augmentation", "random_shift", "random_flip", "random_erase", "DEFAULT_SHIFT"]

DEFAULT_SHIFT = 2
"""`augmentation`'s largest random translation, in pixels, unless told otherwise."""


def random_shift(key: PRNGKey, x: Any, pixels: int) -> Any:
    """Translate each image by its own (dy, dx), each uniform in [-pixels, pixels].

    **Arguments:**

    - `key`: the PRNG key.
    - `x`: images `(batch, H, W, C)`.
    - `pixels`: the largest shift.

    **Returns:** the shifted images, same shape; the pixels shifted in are zeros (black, the
    background of MNIST-like images).
    """
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
    starts = jax.random.randint(key, (n, 2), 0, 2 * pixels + 1)

    def crop(image, start):
        return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (h, w, x.shape[3]))

    return jax.vmap(crop)(padded, starts)


def random_flip(key: PRNGKey, x: Any) -> Any:
    """Mirror each image left-right with probability 1/2.

    **Arguments:** `key` the PRNG key; `x` images `(batch, H, W, C)`.

    **Returns:** the images, some mirrored.
    """
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)


def random_erase(
    key: PRNGKey,
    x: Any,
    p: float,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> Any:
    """Random erasing (Zhong et al., 2020): with probability p, fill one rectangle of each image (all
    its channels) with uniform noise in [0, 1].

    **Arguments:**

    - `key`: the PRNG key.
    - `x`: images `(batch, H, W, C)`.
    - `p`: the probability that an image is erased.
    - `area`: the rectangle covers a fraction of the image drawn uniformly from this range.
    - `aspect`: its height/width ratio is drawn log-uniformly from this range.

    **Returns:** the images, same shape. The rectangle's place is drawn uniformly among those that
    fit; a side longer than the image is cut to the image (the paper draws again instead).
    """
    n, h, w, _ = x.shape
    keys = jax.random.split(key, 6)
    erase = jax.random.bernoulli(keys[0], p, (n,))
    pixels = jax.random.uniform(keys[1], (n,), minval=area[0], maxval=area[1]) * (h * w)
    ratio = jnp.exp(jax.random.uniform(keys[2], (n,), minval=math.log(aspect[0]), maxval=math.log(aspect[1])))
    height = jnp.clip(jnp.round(jnp.sqrt(pixels * ratio)), 1, h).astype(jnp.int32)
    width = jnp.clip(jnp.round(jnp.sqrt(pixels / ratio)), 1, w).astype(jnp.int32)
    top = jax.random.randint(keys[3], (n,), 0, h - height + 1)  # randint's maxval is exclusive
    left = jax.random.randint(keys[4], (n,), 0, w - width + 1)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + height)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + width)[:, None, None])
    )
    mask = (inside & erase[:, None, None])[..., None]  # (n, h, w, 1)
    noise = jax.random.uniform(keys[5], x.shape, x.dtype)
    return jnp.where(mask, noise, x)


def augmentation(
    shift: int = DEFAULT_SHIFT, flip: bool = False, erase: float = 0.0
) -> Callable[[PRNGKey, Any], Any]:
    """An augmentation to run inside the jitted training step (`TrainOptions(augment=...)`).

    **Arguments:**

    - `shift`: random translation by up to this many pixels (0: none).
    - `flip`: a random left-right mirror (only where a mirror keeps the label).
    - `erase`: the probability of random erasing of a rectangle (0: none).

    **Returns:** `augment(key, images) -> images`, with a `description` attribute for logs.
    """
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise InputError(f"augmentation: shift must be an int >= 0 pixels, got {shift!r}")
    if isinstance(erase, bool) or not isinstance(erase, (int, float)) or not 0 <= erase <= 1:
        raise InputError(f"augmentation: erase must be a probability in [0, 1], got {erase!r}")

    def augment(key, x):
        if jnp.ndim(x) != 4:
            raise InputError(f"augmentation: expected images (batch, H, W, C), got shape {jnp.shape(x)}")
        # erasing draws from fold_in(key, 2): shift and flip draw alike with or without it
        shift_key, flip_key = jax.random.split(key)
        if shift:
            x = random_shift(shift_key, x, shift)
        if flip:
            x = random_flip(flip_key, x)
        if erase:
            x = random_erase(jax.random.fold_in(key, 2), x, erase)
        return x

    augment.description = (  # type: ignore[attr-defined]
        f"shift {shift}" + (", flip" if flip else "") + (f", erase {erase}" if erase else "")
    )
    return augment
