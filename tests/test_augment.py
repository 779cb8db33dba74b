"""On-device augmentation: what each transform does to an image, and that fit applies it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import train
from jaxnn.augment import augmentation, random_erase, random_flip, random_shift

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


def test_random_erase_fills_one_rectangle_per_erased_image_with_noise_in_range():
    n, h, w = 400, 12, 10
    x = jnp.full((n, h, w, 1), -1.0)  # outside [0, 1], so every filled pixel shows
    y = np.asarray(random_erase(KEY, x, 0.5, area=(0.1, 0.3), aspect=(0.5, 2.0)))[..., 0]
    erased = y != -1.0
    hit = erased.any(axis=(1, 2))
    assert 150 < hit.sum() < 250  # probability 1/2 per image
    for mask, image in zip(erased[hit], y[hit]):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = np.zeros_like(mask)
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert np.array_equal(mask, box), "the erased pixels form one rectangle"
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
        fraction = mask.sum() / (h * w)
        assert 0.05 <= fraction <= 0.4  # area 0.1-0.3, give or take the rounding of the sides
        assert ((image[mask] >= 0) & (image[mask] < 1)).all()
    assert len({float(m.sum()) for m in erased[hit]}) > 5  # each image draws its own rectangle


def test_random_erase_with_probability_0_or_1():
    x = _images()
    assert jnp.array_equal(random_erase(KEY, x, 0.0), x)
    changed = np.asarray(random_erase(KEY, x, 1.0) != x).any(axis=(1, 2, 3))
    assert changed.all()


def test_erasing_leaves_the_shift_and_flip_draws_as_they_were():
    """Adding erase=0 must not change an augmentation's draws, so earlier runs replay exactly."""
    x = _images()
    assert jnp.array_equal(augmentation(shift=2, flip=True)(KEY, x), augmentation(2, True, 0.0)(KEY, x))
    shifted = augmentation(shift=2, flip=True)(KEY, x)
    erased = augmentation(shift=2, flip=True, erase=1.0)(KEY, x)
    same = np.asarray(shifted == erased)
    assert 0.3 < same.mean() < 1.0  # only the rectangles differ


@pytest.mark.parametrize("erase", [-0.1, 1.5, True, "0.5"])
def test_augmentation_rejects_a_bad_erase_probability(erase):
    with pytest.raises(nn.InputError, match=r"erase must be a probability in \[0, 1\]"):
        augmentation(erase=erase)


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


def _fit_tiny(model, loss, **options):
    """One SGD epoch of `model` on 64 random 6x6 images (label: brighter than half), the training
    set doubling as the test set: (state, history, (x, y))."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 6, 6, 1), dtype=np.uint8)
    y = (x.reshape(64, -1).mean(1) > 127).astype(np.int32)
    state, history = train.fit(
        model,
        loss,
        (x, y, x, y),
        epochs=1,
        batch_size=16,
        opt=train.optimizer("sgd", 0.1),
        key=KEY,
        input_shape=(6, 6, 1),
        options=train.TrainOptions(**options),
        reporting=train.Reporting(progress=False),
    )
    return state, history, (x, y)


def test_fit_applies_the_augmentation_to_the_training_batches():
    """With augmentation the same seed trains to other parameters: the batches were transformed."""
    model = nn.serial(nn.Conv2D(2, (3, 3)), nn.activation("relu"), nn.Flatten(), nn.Dense(2))
    runs = {}
    for name, augment in [("plain", None), ("augmented", augmentation(shift=1, flip=True))]:
        runs[name] = _fit_tiny(model, nn.losses.softmax_cross_entropy, augment=augment)[0].params
    leaves = zip(jax.tree_util.tree_leaves(runs["plain"]), jax.tree_util.tree_leaves(runs["augmented"]))
    assert any(not jnp.allclose(a, b) for a, b in leaves)


def test_fit_reports_the_test_loss_it_is_given():
    """Trained with label smoothing, fit reports the plain cross-entropy on the test set when asked:
    the test loss in the history is make_evaluate's with that loss on the final parameters."""
    model = nn.serial(nn.Flatten(), nn.Dense(2))
    plain, smoothed = nn.losses.softmax_cross_entropy, nn.losses.smoothed_cross_entropy(0.2)
    state, history, (x, y) = _fit_tiny(model, smoothed, test_loss=plain)
    reported = history["epochs"][-1]["test_loss"]
    value, _ = train.make_evaluate(model, plain, (6, 6, 1))(state.params, x, y)
    other, _ = train.make_evaluate(model, smoothed, (6, 6, 1))(state.params, x, y)
    assert abs(reported - float(value)) < 1e-6 and abs(reported - float(other)) > 1e-3
