"""On-device augmentation: what each transform does to an image, and that fit applies it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import train
from jaxnn.augment import augmentation, random_flip, random_shift

KEY = jax.random.PRNGKey(0)


def _images(n=64, h=5, w=6):
    return jnp.arange(n * h * w, dtype=jnp.float32).reshape(n, h, w, 1) + 1.0  # no zero pixels


def _shifted(image, dy, dx):
    """image translated by (dy, dx), zeros shifted in: the definition, written out with numpy."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_random_shift_translates_each_image_by_its_own_offset_within_range():
    x = np.asarray(_images())
    y = np.asarray(random_shift(KEY, jnp.asarray(x), 2))
    offsets = set()
    for image, moved in zip(x, y):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(_shifted(image, dy, dx), moved)
        ]
        assert len(found) == 1, "each output is exactly one translation of its input"
        offsets.add(found[0])
    assert len(offsets) > 10  # 64 draws from 25 offsets: each example draws its own


def test_random_flip_mirrors_about_half_the_images():
    x = _images()
    y = random_flip(KEY, x)
    same = [bool(jnp.array_equal(a, b)) for a, b in zip(x, y)]
    mirrored = [bool(jnp.array_equal(a[:, ::-1], b)) for a, b in zip(x, y)]
    assert all(s != m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_augmentation_is_a_function_of_the_key():
    augment = augmentation(shift=1, flip=True)
    x = _images()
    assert jnp.array_equal(augment(KEY, x), augment(KEY, x))
    assert not jnp.array_equal(augment(KEY, x), augment(jax.random.PRNGKey(1), x))
    assert jnp.array_equal(augmentation(shift=0)(KEY, x), x)


@pytest.mark.parametrize("shift", [-1, 1.5, True])
def test_augmentation_rejects_a_bad_shift(shift):
    with pytest.raises(nn.InputError, match="shift must be an int"):
        augmentation(shift=shift)


def test_augmentation_needs_images():
    with pytest.raises(nn.InputError, match=r"expected images \(batch, H, W, C\)"):
        augmentation()(KEY, jnp.zeros((4, 784)))


def test_fit_applies_the_augmentation_to_the_training_batches():
    """With augmentation the same seed trains to other parameters: the batches were transformed."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 6, 6, 1), dtype=np.uint8)
    y = (x.reshape(64, -1).mean(1) > 127).astype(np.int32)
    model = nn.serial(nn.Conv2D(2, (3, 3)), nn.activation("relu"), nn.Flatten(), nn.Dense(2))
    runs = {}
    for name, augment in [("plain", None), ("augmented", augmentation(shift=1, flip=True))]:
        state, history = train.fit(
            model,
            nn.losses.softmax_cross_entropy,
            (x, y, x, y),
            epochs=1,
            batch_size=16,
            opt=train.optimizer("sgd", 0.1),
            key=KEY,
            input_shape=(6, 6, 1),
            progress=False,
            augment=augment,
        )
        runs[name] = state.params
    leaves = zip(jax.tree_util.tree_leaves(runs["plain"]), jax.tree_util.tree_leaves(runs["augmented"]))
    assert any(not jnp.allclose(a, b) for a, b in leaves)
