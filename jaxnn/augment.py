"""Data augmentation on the device, inside the jitted training step: random translations and
horizontal flips of a batch of images (batch, H, W, C), each example drawing its own.

    augment = augmentation(shift=2, flip=True)      # a function (key, images) -> images
    x = augment(key, x)

Flip only where a mirror image keeps the label (clothes: yes; digits: no, a mirrored 2 is no 2).
"""

import jax
import jax.numpy as jnp

from .errors import InputError


def random_shift(key, x, pixels):
    """Translate each image by its own (dy, dx), each uniform in [-pixels, pixels]; the pixels shifted
    in are zeros (black, the background of MNIST-like images)."""
    n, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)))
    starts = jax.random.randint(key, (n, 2), 0, 2 * pixels + 1)

    def crop(image, start):
        return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (h, w, x.shape[3]))

    return jax.vmap(crop)(padded, starts)


def random_flip(key, x):
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)


def augmentation(shift=2, flip=False):
    """(key, images) -> images: random translation by up to `shift` pixels, then (flip=True) a
    random left-right mirror."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise InputError(f"augmentation: shift must be an int >= 0 pixels, got {shift!r}")

    def augment(key, x):
        if jnp.ndim(x) != 4:
            raise InputError(f"augmentation: expected images (batch, H, W, C), got shape {jnp.shape(x)}")
        shift_key, flip_key = jax.random.split(key)
        if shift:
            x = random_shift(shift_key, x, shift)
        if flip:
            x = random_flip(flip_key, x)
        return x

    augment.description = f"shift {shift}" + (", flip" if flip else "")
    return augment
