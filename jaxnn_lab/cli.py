"""The command line's plumbing, shared by the experiment scripts: one-line errors, the shared flags,
output folders checked before a run, metrics.json, the run lock, the persistent compile cache."""

import argparse
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import time

import jax

import jaxnn as nn
from jaxnn.files import process_alive, write_text


def compile_cache_folder():
    """Where compiled programs are kept between runs: $JAXNN_COMPILE_CACHE, else jaxnn/xla under the
    user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get("JAXNN_COMPILE_CACHE"):
        return os.environ["JAXNN_COMPILE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxnn", "xla")


def use_compile_cache(folder=None):
    """Switch on JAX's persistent compilation cache in `folder` (default compile_cache_folder()),
    for every program however quick to compile: a second identical run then loads its compiled
    programs instead of compiling them again. A folder that cannot be made leaves the cache off
    with a warning (compiling is slower, never wrong)."""
    folder = folder or compile_cache_folder()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        print(f"warning: compile cache off, cannot create {folder}: {e.strerror or e}", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def cli(main):
    """Run an experiment's main(): a jaxnn error, a file-system error (missing folder, full disk,
    no permission) or Ctrl-C ends in one line `error: ...` and exit status 1, not a traceback
    (`--debug` shows the traceback). The persistent compile cache is on unless --no-compile-cache
    is given (see use_compile_cache)."""
    if "--no-compile-cache" not in sys.argv:
        use_compile_cache()
    try:
        return main()
    except (nn.Error, OSError) as e:
        if "--debug" in sys.argv:
            raise
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted")


def positive(kind):
    """An argparse type: a number of `kind` (int or float) > 0, finite."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def check_out_folder(path, flag="--out"):
    """Raise InputError unless path is (or can become) a folder this process can write into."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise nn.InputError(f"{flag} {path!r} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".jaxnn-probe-")
        probe.close()
    except OSError as e:
        raise nn.InputError(f"cannot write into {flag} {path!r}: {e.strerror or e}") from None


def check_out_file(path, flag):
    """Raise InputError unless path can be written as a file (jaxnn writes files atomically, through
    a temporary file beside it): checked before training, so that no run is lost at its end."""
    if os.path.isdir(path):
        raise nn.InputError(f"{flag} {path!r} is a folder; give the path of a file")
    check_out_folder(os.path.dirname(os.path.abspath(path)), f"{flag}'s folder")


def parser(doc, epochs=None):
    """The options every experiment shares: --data-dir, --seed, --out, --debug (and --epochs with a
    default)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_compile_cache_flag(p)
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: download and cache)")
    if epochs is not None:
        p.add_argument("--epochs", type=positive(int), default=epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default results/<experiment>)")
    return p


def add_compile_cache_flag(p):
    """--no-compile-cache (read by `cli` before main runs; declared here so that --help shows it)."""
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile every program afresh (default: reuse compiled programs from $JAXNN_COMPILE_CACHE, "
        "else ~/.cache/jaxnn/xla)",
    )


LOCK = ".jaxnn-run.lock"


@contextlib.contextmanager
def run_lock(folder):
    """Hold folder/.jaxnn-run.lock while a run writes into folder. The lock is created atomically
    (O_CREAT | O_EXCL) and holds its process's pid, host and command. Another live run's lock ends
    in an InputError naming that process; a lock left by a process that is gone is taken over."""
    path = os.path.join(folder, LOCK)
    mine = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
    )
    for attempt in range(40):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path)
            if not owner and attempt < 20:  # another run is writing its lock right now: read it again
                time.sleep(0.05)
                continue
            if owner and _alive(owner):
                raise nn.InputError(
                    f"{folder} is being written by another run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, started {owner.get('started')}: {owner.get('command')}); "
                    "wait for it to finish or choose another --out"
                ) from None
            with contextlib.suppress(FileNotFoundError):  # its process is gone: take the lock over
                os.remove(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    else:
        raise nn.InputError(f"could not take the lock {path}: other runs keep taking it")
    try:
        yield path
    finally:
        if (_lock_owner(path) or {}).get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                os.remove(path)


def _lock_owner(path):
    try:
        with open(path) as f:
            owner = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}  # unreadable: a lock being written, or damaged
    return owner if isinstance(owner, dict) else {}  # valid JSON but not a lock's object: damaged


def _alive(owner):
    """Whether the lock's process still runs (on another host it cannot be checked: assumed to)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    return isinstance(pid, int) and process_alive(pid)


def out_dir(path, default_name):
    path = path or os.path.join("results", default_name)
    check_out_folder(path)
    return path


def write_metrics(folder, metrics):
    """metrics.json with the machine named, so numbers are never read without their context."""
    metrics = dict(metrics)
    metrics.setdefault(
        "machine",
        {
            "device": str(jax.devices()[0].device_kind),
            "devices": jax.device_count(),
            "jax": jax.__version__,
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    path = os.path.join(folder, "metrics.json")
    return write_text(path, json.dumps(metrics, indent=2))  # atomic: a full disk keeps the old file
