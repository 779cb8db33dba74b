"""Every file jaxnn writes is written atomically: into a temporary file beside the target, flushed
to disk, given the permissions the umask allows, then renamed over the target. A kill, a full disk
or an error mid-write leaves the previous file as it was; temporary files left by killed writes
are removed by the next write into the same folder.

    atomic_write(path, lambda f: f.write(data))          # f: a binary file object
    # for writers that want a path
    with atomic_path("figure.png") as tmp: fig.savefig(tmp)
"""

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = ["atomic_write", "atomic_path", "write_text", "clean_stale", "process_alive"]

TMP_MARK = ".jaxnn-tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    """Whether a process of this host still runs (the owner of a temporary file or a lock).

    **Arguments:** `pid` a process id.

    **Returns:** True if it runs, also when it belongs to another user (signal refused).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: str) -> list[str]:
    """Remove the temporary files of killed writes in a folder: ours, whose writing process is gone.

    **Arguments:**

    - `folder`: the folder.

    **Returns:** the names removed.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if TMP_MARK not in name:
            continue
        try:
            pid = int(name.split(TMP_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not process_alive(pid):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_path(path: str, mode: int | None = None) -> Iterator[str]:
    """A temporary path beside `path` for writers that want a path (savefig): on success it is
    synced and renamed to `path`; on an error it is removed and `path` stays as it was.

    **Arguments:**

    - `path`: the file to write.
    - `mode`: its permissions before the umask (default 0o666, as open() would give).

    **Returns:** a context manager yielding the temporary path.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    clean_stale(folder)
    base = os.path.basename(path)
    suffix = os.path.splitext(base)[1]  # writers such as savefig pick the format from it
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}{TMP_MARK}{os.getpid()}-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, (0o666 if mode is None else mode) & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write(path: str, write: Callable[[IO[bytes]], Any], mode: int | None = None) -> str:
    """Write a file that becomes `path` only once complete.

    **Arguments:**

    - `path`: the file to write.
    - `write`: a function of a binary file object that writes the contents.
    - `mode`: its permissions before the umask.

    **Returns:** path.
    """
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return path


def write_text(path: str, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically. **Returns:** path."""
    return atomic_write(path, lambda f: f.write(text.encode()))
