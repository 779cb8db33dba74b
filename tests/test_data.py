"""Data module: IDX parsing, the real MNIST files, the downloader (loopback HTTP server), errors."""

import gzip
import hashlib
import http.server
import os
import threading

import jax
import numpy as np
import pytest

from jaxnn import data


def _idx(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_roundtrip():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(_idx(a)), a)


def test_bad_magic_truncated_and_trailing():
    a = np.zeros((2, 3), np.uint8)
    with pytest.raises(data.DataError, match="magic"):
        data.parse_idx(b"\x01\x02" + _idx(a)[2:])
    with pytest.raises(data.DataError, match="truncated"):
        data.parse_idx(_idx(a)[:-1])
    with pytest.raises(data.DataError, match="trailing"):
        data.parse_idx(_idx(a) + b"\x00")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx(np.zeros((5, 5), np.uint8)))[:-10])
    with pytest.raises(data.DataError, match="corrupt or truncated"):
        data.read_idx(str(path))


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("mnist", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz is missing"):
        data.load("mnist", data_dir=str(tmp_path))


def test_unknown_dataset_lists_known():
    with pytest.raises(data.DataError, match="mnist.*fashion_mnist.*spirals"):
        data.load("cifar11")


def _data_dir(request, name):
    root = request.config.getoption("--data-dir")
    path = os.path.join(root, name) if root else None
    if not path or not os.path.isdir(path):
        pytest.skip(f"pass --data-dir with a {name}/ folder (e.g. ../shared/data)")
    return path


def test_real_mnist_known_facts(request):
    ds = data.load("mnist", data_dir=_data_dir(request, "mnist"))
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(
        np.bincount(ds.y_train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert abs(ds.x_train.mean() - 0.1307) < 1e-4
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_real_fashion_mnist_balanced(request):
    ds = data.load("fashion_mnist", data_dir=_data_dir(request, "fashion_mnist"), dtype="uint8")
    assert ds.x_train.dtype == np.uint8
    assert set(np.bincount(ds.y_train)) == {6000} and set(np.bincount(ds.y_test)) == {1000}


# --- the downloader, against a server on loopback -------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}

    def do_GET(self):
        body, cut = self.files.get(self.path, (None, False))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.files
    httpd.shutdown()
    httpd.server_close()


def test_download_good_file(server, tmp_path):
    url, files = server
    body = gzip.compress(_idx(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    files["/good.gz"] = (body, False)
    dest = tmp_path / "cache" / "good.gz"
    data.download(url + "/good.gz", str(dest), hashlib.md5(body).hexdigest())
    np.testing.assert_array_equal(data.read_idx(str(dest)), np.arange(6).reshape(2, 3))


def test_download_wrong_checksum_leaves_nothing(server, tmp_path):
    url, files = server
    files["/bad.gz"] = (b"not what you asked for", False)
    dest = tmp_path / "bad.gz"
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.download(url + "/bad.gz", str(dest), "0" * 32)
    assert os.listdir(tmp_path) == []


def test_download_cut_connection_leaves_nothing(server, tmp_path):
    url, files = server
    body = b"x" * 10000
    files["/cut.gz"] = (body, True)
    dest = tmp_path / "cut.gz"
    with pytest.raises((data.DataError, OSError)):
        data.download(url + "/cut.gz", str(dest), hashlib.md5(body).hexdigest())
    assert os.listdir(tmp_path) == []


def test_load_downloads_into_the_cache_once(server, tmp_path, monkeypatch):
    url, files = server
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (8, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(4),
    }
    md5 = {}
    for name, array in parts.items():
        body = gzip.compress(_idx(np.asarray(array)))
        files["/m/" + name] = (body, False)
        md5[name] = hashlib.md5(body).hexdigest()
    monkeypatch.setitem(data.IDX_DATASETS, "mnist", {"classes": 10, "mirrors": [url + "/m/"], "md5": md5})
    monkeypatch.setenv("JAXNN_DATA", str(tmp_path))
    ds = data.load("mnist", dtype="uint8")
    assert ds.x_train.shape == (8, 28, 28, 1) and ds.y_test.tolist() == [0, 1, 2, 3]
    files.clear()  # a second load must not touch the network
    ds2 = data.load("mnist", dtype="uint8")
    np.testing.assert_array_equal(ds.x_train, ds2.x_train)


@pytest.mark.parametrize("name", data.SYNTHETIC)
def test_synthetic_sets(name):
    ds = data.load(name, key=jax.random.PRNGKey(3), n=500)
    assert ds.x_train.shape == (400, 2) and ds.x_test.shape == (100, 2)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(ds.classes))
    again = data.load(name, key=jax.random.PRNGKey(3), n=500)
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def test_tfds_adapter_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("tfds:mnist")
    assert ds.name == "tfds:mnist" and ds.x_train.shape == (12, 28, 28, 1) and len(ds.y_test) == 12
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.y_train.dtype == np.int32
