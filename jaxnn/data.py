"""Datasets as numpy arrays: MNIST-style IDX files (local folder or verified download), tfds, and
synthetic 2-D sets drawn from a PRNG key.

    # or no data_dir: download once, md5-checked
    ds = load("mnist", data_dir="path/to/mnist")
    ds.x_train  # (60000, 28, 28, 1) float32 in [0, 1]  (uint8 with dtype="uint8")
    ds.y_train  # (60000,) int32

The cache folder is $JAXNN_DATA, else ~/.cache/jaxnn. A download goes to a temporary file that is
checked and then renamed, so a cut or corrupt download never becomes the cached file.
"""

import gzip
import hashlib
import os
import threading
import time
import urllib.request
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .errors import DataError, DownloadError
from .files import atomic_write
from .types import PRNGKey

__all__ = [
    "Dataset",
    "TextData",
    "known_datasets",
    "load",
    "load_tfds",
    "load_text",
    "synthetic",
    "read_idx",
    "parse_idx",
    "download",
    "cache_dir",
    "md5sum",
    "DOWNLOAD_DEADLINE",
]

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

# md5 of the files as their publishers distribute them (checked on download only: a local folder
# may hold re-compressed copies, e.g. Debian's, whose decompressed bytes are the originals).
IDX_DATASETS = {
    "mnist": {
        "classes": 10,
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "classes": 10,
        "mirrors": ["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}
SYNTHETIC = ("blobs", "moons", "circles", "spirals")


class Dataset(NamedTuple):
    """A classification set as NumPy arrays: images NHWC (or points), integer labels.

    **Fields:** `x_train`, `y_train`, `x_test`, `y_test` (labels int32), `classes` (the number of
    classes), `name`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    name: str


def known_datasets() -> tuple[str, ...]:
    """**Returns:** the names `load` accepts ("tfds:NAME" stands for any prepared tfds dataset)."""
    return tuple(IDX_DATASETS) + SYNTHETIC + ("tfds:NAME",)


# --- IDX ------------------------------------------------------------------------------------------

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an IDX file: magic 0x0000 <type> <ndim>, ndim big-endian uint32 sizes, the data.

    **Arguments:**

    - `raw`: the (decompressed) bytes.
    - `what`: what to call them in an error (a file name).

    **Returns:** the array, of the dtype and shape the header gives. A DataError names what is wrong.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{what}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{what}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{what}: {problem}: {len(raw)} bytes for shape {shape}, expected {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not.

    **Arguments:**

    - `path`: the file.

    **Returns:** its array (see `parse_idx`); a DataError for a corrupt or truncated file.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # a cut or damaged gzip stream
        raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from e
    return parse_idx(raw, str(path))


# --- download ------------------------------------------------------------------------------------------


def cache_dir() -> str:
    """**Returns:** where downloads are kept: $JAXNN_DATA, else ~/.cache/jaxnn."""
    return os.environ.get("JAXNN_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "jaxnn")


def md5sum(path: str) -> str:
    """**Returns:** the md5 hex digest of the file at `path`."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DOWNLOAD_DEADLINE = 900.0
"""Seconds a whole download may take before the next mirror is tried (data.load's downloads)."""


def download(
    url: str, dest: str, md5: str, timeout: float = 30, deadline: float = 900, progress: bool = True
) -> str:
    """Fetch a file atomically: into memory, md5-checked, then written beside dest and renamed.

    **Arguments:**

    - `url`: where from.
    - `dest`: the file to create.
    - `md5`: the expected md5 hex digest.
    - `timeout`: seconds for each network read.
    - `deadline`: seconds for the whole download, headers included: a server that trickles a byte a
      second (its headers or its body) fails after `deadline` seconds, not hours.
    - `progress`: a tqdm bar of the bytes.

    **Returns:** dest. Any failure raises DataError (with what went wrong) and leaves no file behind.
    The transfer runs in a worker thread that is abandoned at the deadline: a per-read timeout alone
    never fires while every byte arrives in time.
    """
    result: dict[str, Any] = {"size": 0}
    give_up = time.monotonic() + deadline

    def fetch():
        try:
            result["data"] = _fetch_bytes(url, dest, timeout, give_up, progress, result)
        except BaseException as e:  # reported by the caller's thread
            result["error"] = e

    worker = threading.Thread(target=fetch, daemon=True, name=f"download {os.path.basename(dest)}")
    worker.start()
    worker.join(deadline)
    error = result.get("error")
    if worker.is_alive() or isinstance(error, _DeadlinePassed):
        raise DataError(
            f"download of {url} passed its deadline: the whole download took over {deadline:g} s "
            f"({result['size']} bytes so far)"
        )
    if isinstance(error, TimeoutError):  # a read that waited `timeout` seconds for a byte
        raise DataError(
            f"download of {url}: the server sent nothing for {timeout:g} s (the per-read timeout; "
            f"{result['size']} bytes so far)"
        )
    if isinstance(error, DataError):
        raise error
    if error is not None:  # URLError, timeouts, cut bodies, ...
        raise DataError(f"download of {url} failed: {type(error).__name__}: {error}") from error
    data = result["data"]
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise DataError(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
    return atomic_write(dest, lambda f: f.write(data))


class _DeadlinePassed(Exception):
    """The whole download's deadline passed (as against one read's timeout: a TimeoutError)."""


def _fetch_bytes(url, dest, timeout, give_up, progress, result):
    """The body of url, read in the calling (worker) thread; stops at the give-up time."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        total = int(expected) if expected and expected.isdigit() else None
        chunks = []
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=os.path.basename(dest),
            disable=not progress,
            leave=False,
        ) as bar:
            for block in iter(lambda: response.read1(1 << 16), b""):  # what has arrived
                chunks.append(block)
                result["size"] += len(block)
                bar.update(len(block))
                if time.monotonic() > give_up:
                    raise _DeadlinePassed()
    data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise DataError(f"download of {url} was cut: {len(data)} of {total} bytes")
    return data


def _fetch(name, filename, folder):
    spec = IDX_DATASETS[name]
    return _fetch_from(spec["mirrors"], spec["md5"][filename], name, filename, folder)


def _fetch_from(mirrors, md5, name, filename, folder):
    """folder/filename, downloaded from the first mirror that delivers it with this md5 if missing."""
    dest = os.path.join(folder, filename)
    if os.path.exists(dest):
        return dest
    errors = []
    for mirror in mirrors:
        try:
            download(mirror + filename, dest, md5, deadline=DOWNLOAD_DEADLINE)
            return dest
        except (OSError, DataError) as e:  # every failure of one mirror: try the next
            errors.append(f"{mirror}: {e}")
    raise DownloadError(
        f"could not download {filename} for {name}:\n  "
        + "\n  ".join(errors)
        + f"\nDownload it by hand into {folder}, or pass data_dir= a folder that holds it."
    )


# --- load -------------------------------------------------------------------------------------------------


def load(
    name: str = "mnist",
    data_dir: str | None = None,
    dtype: str = "float32",
    key: PRNGKey | None = None,
    **options: Any,
) -> Dataset:
    """Load a dataset by name.

    **Arguments:**

    - `name`: "mnist", "fashion_mnist", a synthetic set ("blobs", "moons", "circles", "spirals")
      or "tfds:NAME" (needs the `tfds` extra and a prepared dataset).
    - `data_dir`: a folder holding the four IDX files (gzipped or not); without it they are
      downloaded once into `cache_dir()`, md5-checked.
    - `dtype`: "float32" (images in [0, 1]) or "uint8" (as stored; `fit` scales them on the device).
    - `key`: the PRNG key of a synthetic set.
    - `**options`: passed to `synthetic` (n, noise, test_fraction, classes).

    **Returns:** a Dataset, images NHWC `(n, 28, 28, 1)` for the IDX sets.
    """
    if name in IDX_DATASETS:
        return _load_idx(name, data_dir, dtype)
    if name in SYNTHETIC:
        return synthetic(name, jax.random.PRNGKey(0) if key is None else key, **options)
    if isinstance(name, str) and name.startswith("tfds:"):
        return load_tfds(name[5:], data_dir=data_dir, dtype=dtype)
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(known_datasets())}")


def _load_idx(name, data_dir, dtype):
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise DataError(
                f"data folder {data_dir!r} does not exist; "
                f"it should hold the IDX files {sorted(FILES.values())}"
            )
        paths = {}
        for part, filename in FILES.items():
            candidates = [os.path.join(data_dir, filename), os.path.join(data_dir, filename[:-3])]
            found = [p for p in candidates if os.path.exists(p)]
            if not found:
                raise DataError(
                    f"{name}: {filename} is missing from {data_dir}; "
                    f"get it from {IDX_DATASETS[name]['mirrors'][0]}"
                    f"{filename} or call load({name!r}) without data_dir to download it"
                )
            paths[part] = found[0]
    else:
        folder = os.path.join(cache_dir(), name)
        paths = {part: _fetch(name, filename, folder) for part, filename in FILES.items()}
    arrays = {part: read_idx(path) for part, path in paths.items()}
    classes = IDX_DATASETS[name]["classes"]
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name}: {split} images {x.shape} and labels {y.shape} do not match")
        if len(y) == 0:
            raise DataError(f"{name}: the {split} set is empty")
        if y.min() < 0 or y.max() >= classes:
            raise DataError(
                f"{name}: {split} labels must lie in [0, {classes}), got values from {y.min()} to {y.max()}"
            )
    return Dataset(
        _images(arrays["x_train"], dtype),
        arrays["y_train"].astype(np.int32),
        _images(arrays["x_test"], dtype),
        arrays["y_test"].astype(np.int32),
        classes,
        name,
    )


def _images(x, dtype):
    x = x[..., None]  # NHWC with one channel
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(x)
    return x.astype(dtype) / np.asarray(255, dtype)


def load_tfds(
    name: str,
    data_dir: str | None = None,
    dtype: str = "float32",
    image_key: str = "image",
    label_key: str = "label",
) -> Dataset:
    """Read a prepared tensorflow-datasets dataset with `tfds.data_source` (no TensorFlow needed).

    **Arguments:**

    - `name`: the tfds name (e.g. "mnist").
    - `data_dir`: tfds's data folder (default: tfds's own).
    - `dtype`: "float32" (integer images scaled to [0, 1]) or "uint8".
    - `image_key`, `label_key`: the record's fields.

    **Returns:** a Dataset of its train and test splits.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError("tfds datasets need the extra: pip install 'jaxnn[tfds]'") from e
    splits = {}
    for split in ("train", "test"):
        source: Any = tfds.data_source(name, split=split, data_dir=data_dir)
        records: list[Any] = [source[i] for i in range(len(source))]
        x = np.stack([np.asarray(r[image_key]) for r in records])
        y = np.asarray([r[label_key] for r in records], np.int32)
        splits[split] = (x, y)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    classes = int(max(y_train.max(), y_test.max())) + 1
    if np.issubdtype(x_train.dtype, np.integer) and np.dtype(dtype) != np.uint8:
        x_train, x_test = x_train.astype(dtype) / 255, x_test.astype(dtype) / 255
    return Dataset(x_train, y_train, x_test, y_test, classes, f"tfds:{name}")


# --- text ------------------------------------------------------------------------------------------------

TEXTS = {
    "tinyshakespeare": {
        "file": "input.txt",
        "md5": "6fb458f1232090904fb40fe944165e91",
        "mirrors": ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"],
    }
}


class TextData(NamedTuple):
    """A character-level text as token ids.

    **Fields:** `train` and `val` (int32 ids), `vocab` (the characters, in id order), `name`;
    `decode(ids) -> str` and `encode(text) -> ids`.
    """

    train: np.ndarray  # int32 token ids of the first `split` of the text
    val: np.ndarray  # int32 token ids of the rest
    vocab: str  # the characters, in token-id order
    name: str

    def decode(self, ids: Any) -> str:
        """The text of token ids."""
        return "".join(self.vocab[int(i)] for i in ids)

    def encode(self, text: str) -> np.ndarray:
        """The token ids of a text (a DataError for characters outside the vocabulary)."""
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise DataError(f"characters {missing} are not in the vocabulary of {self.name}")
        return np.asarray([index[c] for c in text], np.int32)


def load_text(data_dir: str | None = None, name: str = "tinyshakespeare", split: float = 0.9) -> TextData:
    """A character-level text set.

    **Arguments:**

    - `data_dir`: the folder holding the text (for Tiny Shakespeare, its `input.txt`); without it the
      text is read from `cache_dir()/name`, downloaded there once (md5-checked) if missing.
    - `name`: which text ("tinyshakespeare").
    - `split`: the fraction that is training text (0.9, the customary split); the rest is validation.

    **Returns:** TextData; the file is md5-checked and its characters sorted into the vocabulary.
    """
    if name not in TEXTS:
        raise DataError(f"unknown text {name!r}; known: {', '.join(TEXTS)}")
    spec = TEXTS[name]
    if data_dir is None:
        path = _fetch_from(spec["mirrors"], spec["md5"], name, spec["file"], os.path.join(cache_dir(), name))
    else:
        path = os.path.join(data_dir, spec["file"])
    if not os.path.isfile(path):
        raise DataError(f"{name}: {path} is missing")
    got = md5sum(path)
    if got != TEXTS[name]["md5"]:
        raise DataError(
            f"{name}: {path} has md5 {got}, expected {TEXTS[name]['md5']} (damaged or another file)"
        )
    with open(path, encoding="utf-8") as f:
        text = f.read()
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    alphabet = np.unique(codes)
    tokens = np.searchsorted(alphabet, codes).astype(np.int32)
    cut = int(len(tokens) * split)
    return TextData(tokens[:cut], tokens[cut:], "".join(chr(c) for c in alphabet), name)


# --- synthetic 2-D sets ------------------------------------------------------------------------------------


def synthetic(
    name: str,
    key: PRNGKey,
    n: int = 1000,
    noise: float | None = None,
    test_fraction: float = 0.2,
    classes: int | None = None,
) -> Dataset:
    """The lecture's "simple" and "complex" data: points in the plane, labels int32.

    **Arguments:**

    - `name`: "blobs" (linearly separable Gaussian blobs), "moons" (two interleaved half circles),
      "circles" (two concentric rings) or "spirals" (interleaved spirals).
    - `key`: the PRNG key.
    - `n`: points in all.
    - `noise`: the Gaussian noise's standard deviation (default: the set's own).
    - `test_fraction`: the share of points held out for testing.
    - `classes`: for blobs (default 2) and spirals (default 3).

    **Returns:** a Dataset of points `(n, 2)`.
    """
    if name not in SYNTHETIC:
        raise DataError(f"unknown synthetic dataset {name!r}; known: {', '.join(SYNTHETIC)}")
    k_data, k_noise, k_split = jax.random.split(key, 3)
    if name == "blobs":
        c = classes or 2
        angles = 2 * jnp.pi * jnp.arange(c) / c
        centers = 3.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
        y = jax.random.randint(k_data, (n,), 0, c)
        x = centers[y]
        noise = 0.5 if noise is None else noise
    elif name == "moons":
        c = 2
        y = jax.random.randint(k_data, (n,), 0, 2)
        t = jax.random.uniform(jax.random.fold_in(k_data, 1), (n,)) * jnp.pi
        x = jnp.where(
            (y == 0)[:, None],
            jnp.stack([jnp.cos(t), jnp.sin(t)], 1),
            jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], 1),
        )
        noise = 0.1 if noise is None else noise
    elif name == "circles":
        c = 2
        y = jax.random.randint(k_data, (n,), 0, 2)
        t = jax.random.uniform(jax.random.fold_in(k_data, 1), (n,)) * 2 * jnp.pi
        radius = jnp.where(y == 0, 1.0, 0.5)
        x = radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], 1)
        noise = 0.05 if noise is None else noise
    else:  # spirals
        c = classes or 3
        y = jax.random.randint(k_data, (n,), 0, c)
        # radius from 0.1: at r = 0 all arms meet in one point, where no classifier can separate them
        r = 0.1 + 0.9 * jax.random.uniform(jax.random.fold_in(k_data, 1), (n,))
        theta = 4.0 * r + 2 * jnp.pi * y / c
        x = r[:, None] * jnp.stack([jnp.sin(theta), jnp.cos(theta)], 1)
        noise = 0.02 if noise is None else noise
    x = x + noise * jax.random.normal(k_noise, x.shape)
    order = jax.random.permutation(k_split, n)
    x, y = np.asarray(x[order], np.float32), np.asarray(y[order], np.int32)
    n_test = int(n * test_fraction)
    return Dataset(x[n_test:], y[n_test:], x[:n_test], y[:n_test], int(c), name)
