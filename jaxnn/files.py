"""Every file jaxnn writes is written atomically: into a temporary file beside the target, flushed
to disk, given the permissions the umask allows, then renamed over the target. A kill, a full disk
or an error mid-write leaves the previous file as it was; temporary files left by killed writes
are removed by the next write into the same folder.

    atomic_write(path, lambda f: f.write(data))          # f: a binary file object
    with atomic_path("figure.png") as tmp: fig.savefig(tmp)   # for writers that want a path
"""

import contextlib
import os
import tempfile

TMP_MARK = ".jaxnn-tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder):
    """Remove temporary files of killed writes in `folder`: ours, whose writing process is gone."""
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
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_path(path, mode=None):
    """Yield a temporary path beside `path`; on success it is synced and renamed to `path`.

    mode: the file's permissions before the umask (default 0o666, as open() would give).
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


def atomic_write(path, write, mode=None):
    """Call write(f) on a binary file that becomes `path` only once complete."""
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return path


def write_text(path, text):
    return atomic_write(path, lambda f: f.write(text.encode()))
