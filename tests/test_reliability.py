"""The catalogue of bad inputs and faults (issue: reliability). Each row: what a user (or the world)
does wrong, the error class jaxnn must raise, and words its message must contain. Then the files
(corrupt checkpoints, damaged data), downloads from a misbehaving server on 127.0.0.1, the command
line (one `error:` line, no traceback), atomic writes, a full disk and kill -9 at random moments."""

import contextlib
import gzip
import hashlib
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnn as nn
from jaxnn import checkpoint, data, files, train
from jaxnn_lab import cli, flags, launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "experiments", "train.py")
KEY = jax.random.PRNGKey(0)
LOSS = nn.losses.softmax_cross_entropy


def _arrays(n=64, n_test=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)  # 3 classes
    xt = rng.normal(size=(n_test, 2)).astype(np.float32)
    return [x, y, xt, (xt[:, 0] > 0).astype(np.int32)]


def _fit(arrays=None, model=None, checkpoint_path=None, resume=False, checkpoint_every=None, **overrides):
    options = dict(
        epochs=1,
        batch_size=16,
        opt=train.optimizer("sgd", 0.1),
        key=KEY,
        input_shape=(2,),
        checkpointing=train.Checkpointing(checkpoint_path, resume, checkpoint_every),
        reporting=train.Reporting(progress=False),
    )
    options.update(overrides)
    return train.fit(model or nn.mlp([2, 8, 3]), LOSS, arrays or _arrays(), **options)


def _with(index, transform):
    arrays = _arrays()
    arrays[index] = transform(arrays[index])
    return arrays


def _nan_image(x):
    x = x.copy()
    x[3, 1] = np.nan
    return x


def _label(value, index=1):
    def change(y):
        y = y.copy()
        y[5] = value
        return y

    return lambda: _fit(_with(index, change))


def _small_dense_params():
    _, params = nn.mlp([2, 4, 3]).init(KEY, (2,))
    return params


# name -> (what to run, error class, words the message must contain)
API = {
    "NaN in training images": (lambda: _fit(_with(0, _nan_image)), nn.DataError, ["NaN"]),
    "NaN in test images": (lambda: _fit(_with(2, _nan_image)), nn.DataError, ["test images", "NaN"]),
    "images and labels of different lengths": (
        lambda: _fit(_with(1, lambda y: y[:-3])),
        nn.DataError,
        ["differ in length", "64 images", "61 labels"],
    ),
    "test label out of range": (_label(7, index=3), nn.DataError, ["test labels", "[0, 3)"]),
    "a label of 255": (_label(255), nn.DataError, ["training labels", "255"]),
    "a negative label": (_label(-1), nn.DataError, ["training labels", "-1"]),
    "float labels": (lambda: _fit(_with(1, lambda y: y.astype(np.float32))), nn.DataError, ["integers"]),
    "empty test set": (
        lambda: _fit(_with(2, lambda x: x[:0])[:3] + [np.zeros(0, np.int32)]),
        nn.DataError,
        ["test set is empty"],
    ),
    "empty training set": (
        lambda: _fit([np.zeros((0, 2), np.float32), np.zeros(0, np.int32)] + _arrays()[2:]),
        nn.DataError,
        ["training set is empty"],
    ),
    "images of another size": (
        lambda: _fit(_with(0, lambda x: np.hstack([x, x]))),
        nn.DataError,
        ["do not fit", "(4,)"],
    ),
    "boolean images": (lambda: _fit(_with(0, lambda x: x > 0)), nn.DataError, ["numbers"]),
    "batch size 0": (lambda: _fit(batch_size=0), nn.InputError, ["batch_size", "positive integer", "0"]),
    "negative batch size": (lambda: _fit(batch_size=-4), nn.InputError, ["batch_size", "-4"]),
    "batch size larger than the data": (lambda: _fit(batch_size=65), nn.InputError, ["larger than", "64"]),
    "zero epochs": (lambda: _fit(epochs=0), nn.InputError, ["epochs", "positive integer"]),
    "fractional epochs": (lambda: _fit(epochs=1.5), nn.InputError, ["epochs", "1.5"]),
    "negative checkpoint interval": (
        lambda: _fit(checkpoint_every=-1),
        nn.InputError,
        ["checkpointing.every"],
    ),
    "data as three arrays": (
        lambda: _fit(_arrays()[:3]),
        nn.InputError,
        ["x_train, y_train, x_test, y_test"],
    ),
    "another model's params applied": (
        lambda: nn.mlp([2, 8, 3]).apply(_small_dense_params(), jnp.ones((1, 2))),
        nn.InputError,
        ["Dense(8)", "(2, 4)"],
    ),
    "params checked against the model": (
        lambda: nn.check_params(nn.mlp([2, 8, 3]), _small_dense_params(), (2,)),
        nn.InputError,
        ["params[0]['b']", "(8,)"],
    ),
    "unknown activation": (lambda: nn.activation("relu6"), nn.InputError, ["relu6", "valid names"]),
    "dropout rate out of range": (lambda: nn.Dropout(1.5), nn.InputError, ["[0, 1)", "1.5"]),
    "stateful model without state": (
        lambda: nn.serial(nn.Dense(2), nn.BatchNorm()).apply(
            nn.serial(nn.Dense(2), nn.BatchNorm()).init(KEY, (2,))[1], jnp.ones((2, 2))
        ),
        nn.InputError,
        ["init_state(input_shape)"],
    ),
    "train=True Dropout without a key": (
        lambda: nn.Dropout(0.5).apply((), jnp.ones((2, 2)), train=True),
        nn.InputError,
        ["needs key"],
    ),
    "evaluate on an empty set": (
        lambda: train.make_evaluate(nn.Dense(3), LOSS, (2,))(
            _small_dense_params()[2], np.zeros((0, 2)), np.zeros(0, np.int32)
        ),
        nn.DataError,
        ["evaluation set is empty"],
    ),
    "evaluate with labels out of range": (
        lambda: train.make_evaluate(nn.Dense(3), LOSS, (4,))(
            nn.Dense(3).init(KEY, (4,))[1], np.zeros((2, 4)), np.array([0, 3])
        ),
        nn.DataError,
        ["[0, 3)", "3"],
    ),
    "unknown optimizer": (lambda: train.optimizer("adagrad"), nn.InputError, ["adagrad", "sgd"]),
    "one-cycle schedule with no steps": (
        lambda: train.optimizer("adam", 1e-3, "onecycle", 0),
        nn.InputError,
        ["total_steps"],
    ),
    "BatchNorm training on one value per channel": (
        lambda: nn.BatchNorm().apply(
            nn.BatchNorm().init(KEY, (3,))[1],
            jnp.ones((1, 3)),
            state=nn.BatchNorm().init_state((3,)),
            train=True,
        ),
        nn.InputError,
        ["more than one value per channel"],
    ),
    "GroupNorm groups that do not divide the channels": (
        lambda: nn.GroupNorm(4).init(KEY, (3, 3, 6)),
        nn.InputError,
        ["6 channels", "4 groups"],
    ),
}


@pytest.mark.parametrize("name", sorted(API))
def test_api_catalogue(name):
    run, error, words = API[name]
    with pytest.raises(error) as caught:
        run()
    assert isinstance(caught.value, nn.Error)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in: {caught.value}"


def test_training_stops_on_nan_parameters_with_a_finite_loss(tmp_path):
    """Binary step maps a NaN pre-activation to 0, so a NaN weight can hide behind a finite loss."""

    def poisoned_dense():
        base = nn.Dense(8)

        def backward(residuals, dy):
            grads, dx = base.backward(residuals, dy)
            return {"w": grads["w"] * jnp.nan, "b": grads["b"]}, dx  # a broken gradient for w

        return base._replace(backward=backward)

    model = nn.serial(poisoned_dense(), nn.activation("binary_step"), nn.Dense(3))
    with pytest.raises(nn.TrainingDiverged, match="parameters became NaN"):
        _fit(model=model)


# --- files ------------------------------------------------------------------------------------------------


def _checkpoint(tmp_path, epochs=1, name="ckpt.npz", **overrides):
    return _fit(epochs=epochs, checkpoint_path=str(tmp_path / name), **overrides)


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign", "zeros"])
def test_unreadable_checkpoints_are_reported_and_set_aside(tmp_path, damage):
    state, _ = _checkpoint(tmp_path)
    path = tmp_path / "ckpt.npz"
    raw = path.read_bytes()
    path.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "empty": b"",
            "foreign": b"epoch,loss\n1,0.5\n",
            "zeros": bytes(len(raw)),
        }[damage]
    )
    with pytest.raises(nn.CheckpointError, match="not a readable jaxnn checkpoint"):
        checkpoint.restore(str(path), like=state)
    before = path.read_bytes()
    with pytest.raises(nn.CheckpointError, match="moved it aside"):
        _checkpoint(tmp_path, epochs=2, resume=True)
    assert not path.exists()  # nothing will load it or overwrite it by mistake
    (aside,) = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside.read_bytes() == before


def test_resume_from_a_checkpoint_without_training_metadata(tmp_path):
    state, _ = _checkpoint(tmp_path)
    path = str(tmp_path / "ckpt.npz")
    checkpoint.save(path, (state, np.zeros((4, 16), np.int32)), meta={})
    with pytest.raises(nn.CheckpointError, match="no training metadata"):
        _checkpoint(tmp_path, epochs=2, resume=True)


def test_resume_with_another_models_checkpoint(tmp_path):
    _checkpoint(tmp_path)
    with pytest.raises(nn.CheckpointError, match="same model"):
        _checkpoint(tmp_path, epochs=2, resume=True, model=nn.mlp([2, 5, 3]))


def _gz(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = gzip.compress(header + array.astype(np.uint8).tobytes())
    path.write_bytes(raw)
    return raw


def _idx_folder(folder, labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, filename in data.FILES.items():
        n = 20 if "train" in part else 10
        if part.startswith("x"):
            _gz(folder / filename, rng.integers(0, 256, (n, 28, 28)))
        else:
            _gz(folder / filename, rng.integers(0, 10, n) if labels is None else np.full(n, labels))
    return folder


def test_damaged_gzip_stream_in_the_middle(tmp_path):
    folder = _idx_folder(tmp_path / "mnist")
    path = folder / data.FILES["x_train"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 40] = bytes(40)  # zlib.error, not EOFError
    path.write_bytes(bytes(raw))
    with pytest.raises(nn.DataError, match="corrupt"):
        data.load("mnist", data_dir=str(folder))


def test_labels_out_of_range_in_a_data_folder(tmp_path):
    with pytest.raises(nn.DataError, match=r"labels must lie in \[0, 10\)"):
        data.load("mnist", data_dir=str(_idx_folder(tmp_path / "mnist", labels=255)))


def test_atomic_write_keeps_the_old_file_and_respects_the_umask(tmp_path):
    path = tmp_path / "metrics.json"
    files.write_text(path, '{"old": 1}')

    def failing(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.atomic_write(path, failing)
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left
    old = os.umask(0o027)
    try:
        files.write_text(path, "{}")
        checkpoint.save(str(tmp_path / "c.npz"), {"a": np.ones(2)})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640 and ((tmp_path / "c.npz").stat().st_mode & 0o777) == 0o640


def test_stale_temporary_files_of_killed_writes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".ckpt.npz{files.TMP_MARK}{int(dead.stdout)}-abc.npz"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f".other{files.TMP_MARK}{os.getpid()}-xyz"
    mine.write_bytes(b"being written")
    checkpoint.save(str(tmp_path / "ckpt.npz"), {"a": np.ones(2)})
    assert not stale.exists() and mine.exists()


# --- downloads from a misbehaving server on 127.0.0.1 ------------------------------------------------------


@pytest.fixture
def server():
    """A loopback HTTP server: /good/F serves F, /cut/F half of it with the full Content-Length,
    /trickle/F one byte every 0.2 s, /slowheaders/F its status line one byte every 0.2 s (for
    minutes), /wrong/F other bytes, anything else 404."""
    payloads = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            _, mode, name = self.path.split("/", 2)
            body = payloads.get(name)
            if mode == "slowheaders":  # no per-read timeout fires: every byte arrives in time
                with contextlib.suppress(OSError):
                    for byte in b"HTTP/1.1 200 OK\r\n" * 40:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                return
            if mode == "silent":  # accepts the connection, then never answers
                time.sleep(3)
                return
            if body is None or mode not in ("good", "cut", "trickle", "wrong"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                if mode == "good":
                    self.wfile.write(body)
                elif mode == "wrong":
                    self.wfile.write(bytes(len(body)))
                elif mode == "cut":
                    self.wfile.write(body[: len(body) // 2])
                else:
                    for i in range(min(len(body), 50)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", payloads
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tiny_dataset(tmp_path, monkeypatch, server):
    """A dataset 'tiny' whose mirrors are the loopback server; the cache is tmp_path."""
    url, payloads = server
    src = _idx_folder(tmp_path / "src")
    md5 = {}
    for filename in data.FILES.values():
        payloads[filename] = (src / filename).read_bytes()
        md5[filename] = hashlib.md5(payloads[filename]).hexdigest()
    monkeypatch.setitem(data.IDX_DATASETS, "tiny", {"classes": 10, "mirrors": [], "md5": md5})
    monkeypatch.setenv("JAXNN_DATA", str(tmp_path / "cache"))
    return url, tmp_path / "cache" / "tiny"


@pytest.mark.parametrize("first", ["cut", "wrong", "missing", "refused"])
def test_a_failing_mirror_falls_through_to_the_next(tiny_dataset, monkeypatch, first):
    url, cache = tiny_dataset
    bad = {
        "cut": f"{url}/cut/",
        "wrong": f"{url}/wrong/",
        "missing": f"{url}/nothing/",
        "refused": "http://127.0.0.1:9/",
    }[first]
    monkeypatch.setitem(data.IDX_DATASETS["tiny"], "mirrors", [bad, f"{url}/good/"])
    ds = data.load("tiny", dtype="uint8")
    assert ds.x_train.shape == (20, 28, 28, 1)
    assert sorted(os.listdir(cache)) == sorted(data.FILES.values())  # no partial files


def test_every_mirror_failing_lists_each_failure(tiny_dataset, monkeypatch):
    url, cache = tiny_dataset
    monkeypatch.setitem(data.IDX_DATASETS["tiny"], "mirrors", [f"{url}/cut/", f"{url}/wrong/"])
    with pytest.raises(nn.DownloadError) as caught:
        data.load("tiny")
    message = str(caught.value)
    assert "was cut" in message and "checksum mismatch" in message and "by hand" in message
    assert not cache.exists() or os.listdir(cache) == []


def test_a_trickling_server_hits_the_deadline(tiny_dataset, tmp_path):
    url, _ = tiny_dataset
    filename = data.FILES["y_test"]
    started = time.monotonic()
    with pytest.raises(nn.DataError, match="took over 1 s"):
        data.download(
            f"{url}/trickle/{filename}", str(tmp_path / "f.gz"), "0" * 32, deadline=1, progress=False
        )
    assert time.monotonic() - started < 5
    assert not (tmp_path / "f.gz").exists()


def test_a_server_that_never_answers_names_the_per_read_timeout(tiny_dataset, tmp_path):
    """Not the whole download's deadline: the message says which limit was hit."""
    url, _ = tiny_dataset
    started = time.monotonic()
    with pytest.raises(nn.DataError, match=r"the server sent nothing for 0.5 s \(the per-read timeout"):
        data.download(f"{url}/silent/x.gz", str(tmp_path / "f.gz"), "0" * 32, timeout=0.5, progress=False)
    assert time.monotonic() - started < 3
    assert not (tmp_path / "f.gz").exists()


def test_trickled_headers_hit_the_deadline_then_the_next_mirror_serves(tiny_dataset, monkeypatch):
    """urlopen waits for the headers; each byte resets the per-read timeout, so only a deadline on the
    whole download ends it: a DataError within the deadline, then the next mirror."""
    url, cache = tiny_dataset
    monkeypatch.setattr(data, "DOWNLOAD_DEADLINE", 0.5)
    monkeypatch.setitem(data.IDX_DATASETS["tiny"], "mirrors", [f"{url}/slowheaders/"])
    started = time.monotonic()
    with pytest.raises(nn.DownloadError, match="took over 0.5 s"):
        data.load("tiny")
    assert time.monotonic() - started < 3  # the first file's deadline ends the load
    monkeypatch.setitem(data.IDX_DATASETS["tiny"], "mirrors", [f"{url}/slowheaders/", f"{url}/good/"])
    started = time.monotonic()
    assert data.load("tiny", dtype="uint8").x_train.shape == (20, 28, 28, 1)
    assert time.monotonic() - started < 4 * 2 + 4  # one deadline per file, then the good mirror
    assert sorted(os.listdir(cache)) == sorted(data.FILES.values())


# --- the command line -----------------------------------------------------------------------------------


def _cli(*args, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, TRAIN_PY, "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def _mnist(request):
    root = request.config.getoption("--data-dir")
    if not root or not os.path.isdir(os.path.join(root, "mnist")):
        pytest.skip("needs --data-dir with mnist/")
    return os.path.join(root, "mnist")


CLI = {
    "zero epochs": (["--epochs", "0"], "--epochs: must be > 0"),
    "negative batch size": (["--batch-size", "-5"], "--batch-size: must be > 0"),
    "negative learning rate": (["--lr", "-0.1"], "--lr: must be > 0"),
    "learning rate not a number": (["--lr", "fast"], "expected a float"),
    "zero devices": (["--devices", "0"], "--devices: must be > 0"),
    "more devices than there are": (["--devices", "64"], "64 but"),
    "unknown activation": (["--activation", "relu6"], "unknown --activation 'relu6'"),
    "dropout out of range": (["--model", "cnn", "--dropout", "1.5"], "--dropout must lie in [0, 1)"),
    "batchnorm on the MLP": (["--batchnorm"], "--batchnorm applies to --model cnn"),
    "negative checkpoint interval": (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    "resume and overwrite": (["--resume", "--overwrite"], "exclude each other"),
    "unknown model": (["--model", "transformer"], "invalid choice"),
    "augmentation of flat images": (["--model", "mlp", "--augment"], "--augment applies to the image models"),
    "erase probability out of range": (["--model", "resnet", "--erase", "1.5"], "--erase is a probability"),
    "erasing without augmentation": (
        ["--model", "resnet", "--no-augment", "--erase", "0.5"],
        "--erase needs",
    ),
    "negative shift": (["--model", "cnn", "--shift", "-1"], "--shift must be >= 0 pixels"),
    "shift without augmentation": (
        ["--model", "cnn", "--no-augment", "--shift", "1"],
        "--shift needs --augment",
    ),
    "label smoothing out of range": (["--label-smoothing", "1"], "--label-smoothing must lie in [0, 1)"),
    "blocks on the CNN": (["--model", "cnn", "--blocks", "2"], "--blocks applies to --model resnet"),
    "negative weight decay": (["--weight-decay=-1e-4"], "--weight-decay must be >= 0"),
    "many processes without a coordinator": (["--num-processes", "2"], "needs --coordinator"),
    "process id out of range": (
        ["--num-processes", "2", "--coordinator", "h:1", "--process-id", "2"],
        "--process-id must lie in [0, 2)",
    ),
    "devices not split over the processes": (["--devices", "3", "--local-processes", "2"], "does not split"),
}


@pytest.mark.parametrize("name", sorted(CLI))
def test_command_line_arguments_are_checked_up_front(name, capsys):
    """In-process (fast): argparse's exit with `error: ...` before any data is read."""
    args, words = CLI[name]
    with pytest.raises(SystemExit) as caught:
        flags.parse_args(args)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "error:" in err and words in err, err


def test_a_bad_command_line_prints_one_error_line_and_no_traceback():
    """The same, end to end in a process of its own."""
    out = _cli("--epochs", "0")
    assert out.returncode == 2 and "error: argument --epochs: must be > 0" in out.stderr
    assert "Traceback" not in out.stderr


def _cli_error(out, *words):
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr
    for word in words:
        assert word in last, last


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_cli_coordinator_that_never_answers():
    """A process other than 0 whose coordinator is not running ends with one error line after
    --join-timeout, instead of JAX aborting it with a C++ stack trace after 5 minutes."""
    port = _free_port()
    out = _cli(
        "--coordinator",
        f"localhost:{port}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--join-timeout",
        "1",
    )
    _cli_error(out, "could not reach the coordinator", f"localhost:{port}", "within 1 s")


@pytest.mark.slow  # a long end-to-end run (or a wait for a timeout): the slow pass
def test_cli_process_0_whose_peers_never_come():
    """Process 0 waits --join-timeout for the others, then ends with one error line, instead of JAX
    aborting it with a C++ stack trace."""
    port = _free_port()
    out = _cli("--coordinator", f"localhost:{port}", "--num-processes", "3", "--join-timeout", "1")
    _cli_error(out, "only 0 of the 2 other processes reached the coordinator", "within 1 s")


def test_cli_coordinator_port_taken():
    """Process 0 cannot serve on a port another program holds: one error line."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = _cli("--coordinator", f"localhost:{port}", "--num-processes", "2", "--join-timeout", "1")
    _cli_error(out, "could not serve the coordinator", "is in use")


@pytest.mark.parametrize("coordinator", ["localhost", "localhost:0", "localhost:http", ":1234"])
def test_start_process_checks_the_coordinator_address(coordinator):
    with pytest.raises(nn.InputError, match="HOST:PORT"):
        launcher.start_process(coordinator, 2, 1)


def test_cli_data_folder_missing(tmp_path):
    _cli_error(_cli("--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")), "does not exist")


def test_cli_out_is_a_file(tmp_path, request):
    (tmp_path / "file").write_text("x")
    _cli_error(_cli("--data-dir", _mnist(request), "--out", str(tmp_path / "file")), "is a file")


def test_cli_out_cannot_be_written(tmp_path, request):
    _cli_error(_cli("--data-dir", _mnist(request), "--out", "/proc/jaxnn-out"), "cannot write into --out")


def test_cli_batch_larger_than_the_data(tmp_path, request):
    out = _cli("--data-dir", _mnist(request), "--batch-size", "70000", "--out", str(tmp_path))
    _cli_error(out, "larger than the training set", "60000")


def test_cli_corrupt_data_file(tmp_path):
    folder = _idx_folder(tmp_path / "mnist")
    (folder / data.FILES["y_train"]).write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    _cli_error(_cli("--data-dir", str(folder), "--out", str(tmp_path / "o")), "corrupt")


def test_cli_labels_of_255(tmp_path):
    folder = _idx_folder(tmp_path / "mnist", labels=255)
    _cli_error(_cli("--data-dir", str(folder), "--out", str(tmp_path / "o")), "labels must lie in [0, 10)")


@pytest.mark.slow
def test_cli_checkpoint_guard_resume_and_another_model(tmp_path, request):
    mnist, out = _mnist(request), str(tmp_path / "run")
    first = _cli("--data-dir", mnist, "--epochs", "1", "--width", "32", "--out", out)
    assert first.returncode == 0, first.stderr
    metrics = (tmp_path / "run" / "metrics.json").read_bytes()
    _cli_error(
        _cli("--data-dir", mnist, "--epochs", "1", "--out", out), "already holds a checkpoint", "--resume"
    )
    _cli_error(
        _cli("--data-dir", mnist, "--epochs", "2", "--width", "64", "--out", out, "--resume"),
        "cannot resume",
        "same model",
    )
    assert (tmp_path / "run" / "metrics.json").read_bytes() == metrics  # nothing was lost
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really")
    _cli_error(
        _cli("--data-dir", mnist, "--epochs", "2", "--width", "32", "--out", out, "--resume"),
        "moved it aside",
    )


@contextlib.contextmanager
def _small_disk(path, size="8m"):
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_cli_full_disk_keeps_the_previous_results(tmp_path, request):
    mnist = _mnist(request)
    with _small_disk(tmp_path / "disk") as disk:
        out = disk / "run"
        out.mkdir()
        (out / "metrics.json").write_text('{"test_accuracy": 0.98}')
        filler = disk / "filler"
        with open(filler, "wb") as f:  # leave about 100 kB: less than a checkpoint (about 0.4 MB)
            f.write(bytes(os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 100_000))
        run = _cli("--data-dir", mnist, "--epochs", "1", "--width", "64", "--out", str(out), "--overwrite")
        _cli_error(run, "No space left on device")
        assert (out / "metrics.json").read_text() == '{"test_accuracy": 0.98}'
        assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # no half-written files


# --- kill -9 at random moments, then --resume: the same result as a run never stopped ---------------------


def _final(out):
    opt = train.optimizer("adam", 3e-3, "onecycle", 100)  # the main job's optimizer: same state structure
    like = train.init_state(nn.mlp([784, 32, 32, 10]), opt, KEY, (784,))
    state, meta = train.load_checkpoint(str(out / "checkpoint.npz"), like)
    return state, meta


@pytest.mark.slow
def test_kill_and_resume_loop_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, request):
    mnist = _mnist(request)
    epochs = 15
    common = ["--data-dir", mnist, "--epochs", str(epochs), "--width", "32", "--batch-size", "32"]
    common += ["--checkpoint-every", "0"]  # a checkpoint after every chunk of steps
    common += ["--no-compile-cache"]  # every start compiles, as the kill timing below assumes
    reference = _cli(*common, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    args = [*common, "--out", str(out)]
    for _ in range(20):
        resume = ["--resume"] if (out / "checkpoint.npz").exists() else ["--overwrite"]
        proc = subprocess.Popen(
            [sys.executable, TRAIN_PY, "--no-progress", *args, *resume],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # start-up takes about 3 s on a quiet machine; each kill allows 0.5 s more, so that a
            # loaded machine (slower start-ups) still gets through
            proc.wait(timeout=rng.uniform(3.0, 4.5) + 0.5 * kills)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0, proc.stderr.read()
        break
    else:
        pytest.fail("the run never finished")
    assert kills >= 2, "no kill landed: make the runs longer"
    (got, meta), (want, _) = _final(out), _final(tmp_path / "ref")
    assert meta["epoch"] == epochs
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs
    assert not [p for p in out.iterdir() if files.TMP_MARK in p.name]


def test_resume_mid_epoch_is_bitwise_equal(tmp_path, monkeypatch):
    """A run stopped after its third within-epoch checkpoint, then resumed, ends as one never stopped."""
    full, _ = _checkpoint(tmp_path, epochs=2, name="full.npz", checkpoint_every=0, batch_size=4)
    saves = []
    real_save = checkpoint.save

    def save_then_die(path, tree, meta=None):
        real_save(path, tree, meta)
        saves.append(meta["position"])
        if len(saves) == 3:
            raise KeyboardInterrupt  # as if killed right after the third save

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _checkpoint(tmp_path, epochs=2, name="part.npz", checkpoint_every=0, batch_size=4)
    assert saves[-1] > 0  # it stopped inside an epoch
    monkeypatch.setattr(checkpoint, "save", real_save)
    resumed, history = _checkpoint(
        tmp_path, epochs=2, name="part.npz", checkpoint_every=0, batch_size=4, resume=True
    )
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]


def test_relu_keeps_nan_visible():
    y = nn.activation("relu").apply((), jnp.array([[jnp.nan, -1.0, 2.0]]))
    assert np.isnan(y[0, 0]) and y[0, 1] == 0 and y[0, 2] == 2


@pytest.mark.parametrize("content", ["npy", "text"])
def test_a_file_that_is_no_checkpoint_at_all(tmp_path, content):
    """A .npy array or a text file where a checkpoint should be: CheckpointError, never NumPy's TypeError."""
    path = tmp_path / "state.npz"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    else:
        path.write_text("hello")
    with pytest.raises(
        nn.CheckpointError, match="single NumPy array" if content == "npy" else "not a readable"
    ):
        checkpoint.read(str(path))
    like = train.init_state(nn.mlp([2, 8, 3]), train.optimizer("sgd", 0.1), KEY, (2,))
    with pytest.raises(nn.CheckpointError):
        train.load_checkpoint(str(path), like)


def test_resume_from_a_checkpoint_the_user_saved_says_fit_did_not_write_it(tmp_path):
    """checkpoint.save of the user's own tree and metadata, then fit(resume=True) on it: the message says
    it was not written by fit (not that it holds another model), and the file is left where it was."""
    path = tmp_path / "mine.npz"
    checkpoint.save(str(path), nn.mlp([2, 8, 3]).init(KEY, (2,))[1], {"note": "my own"})
    with pytest.raises(nn.CheckpointError, match="not written by train.fit") as caught:
        _fit(checkpoint_path=str(path), resume=True)
    assert "another model" not in str(caught.value) and path.exists()


def _lock(folder, pid):
    record = {
        "pid": pid,
        "host": socket.gethostname(),
        "started": "2026-11-30 10:00:00",
        "command": "train.py",
    }
    (folder / ".jaxnn-run.lock").write_text(json.dumps(record))


@pytest.mark.slow
def test_cli_a_live_runs_folder_is_refused_and_a_dead_runs_lock_taken_over(tmp_path, request):
    mnist = _mnist(request)
    out = tmp_path / "run"
    out.mkdir()
    common = [
        "--data-dir",
        mnist,
        "--epochs",
        "1",
        "--width",
        "16",
        "--train-size",
        "1024",
        "--out",
        str(out),
    ]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, live.pid)
        for extra in ([], ["--overwrite"]):  # --overwrite never bypasses a live run
            _cli_error(_cli(*common, *extra), f"pid {live.pid}", "another run")
        assert not (out / "metrics.json").exists()
    finally:
        live.kill()
        live.wait()
    run = _cli(*common)  # its process is gone: the lock is taken over, and released at the end
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "metrics.json").exists() and not (out / ".jaxnn-run.lock").exists()


@pytest.mark.parametrize("content", ["[1, 2]", "42", '"text"', "null"])
def test_a_lock_of_valid_json_that_is_not_a_lock_is_taken_over(tmp_path, content):
    """A damaged lock names no live run: it is taken over, not an AttributeError."""
    (tmp_path / cli.LOCK).write_text(content)
    with cli.run_lock(str(tmp_path)) as path:
        assert json.loads(open(path).read())["pid"] == os.getpid()
    assert not (tmp_path / cli.LOCK).exists()


@pytest.mark.parametrize(
    "flag, place, words",
    [
        ("--tensorboard", "file", "is a file, not a folder"),
        ("--profile", "/proc/jaxnn-profile", "cannot write into --profile"),
        ("--save-weights", "/proc/jaxnn/w.safetensors", "cannot write into --save-weights's folder"),
        ("--export", "folder", "is a folder; give the path of a file"),
    ],
)
def test_cli_outputs_that_cannot_be_written_are_refused_before_training(tmp_path, flag, place, words):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    target = str(tmp_path / place) if place in ("file", "folder") else place
    args = flags.parse_args(["--out", str(tmp_path / "out"), flag, target])
    with pytest.raises(nn.InputError, match=re.escape(words)):
        flags.check_extra_outputs(args)


def test_cli_an_unwritable_profile_folder_ends_the_run_before_any_data_is_read(tmp_path):
    out = _cli("--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--profile", "/proc/x")
    _cli_error(out, "cannot write into --profile")  # not the data folder's error: checked first
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.slow
def test_cli_two_runs_started_together_into_one_folder(tmp_path, request):
    """Exactly one takes the folder; the other says which process holds it (without the lock both
    ran and wrote the same files)."""
    mnist = _mnist(request)
    args = [sys.executable, TRAIN_PY, "--no-progress", "--data-dir", mnist, "--epochs", "2", "--width", "16"]
    args += ["--out", str(tmp_path / "run")]
    runs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "is being written by another run" in refused and "Traceback" not in refused
