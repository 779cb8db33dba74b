"""The code of the docs pages, as the tests run it: every ```python block of a page, in order, as
one script in a fresh process (so that each page starts from a clean JAX, as a reader's session
does). A block right after the line `<!-- not run -->` is skipped (it shows a command, or code that
needs hardware or a network the tests lack).

    python tests/docs_code.py docs/tutorials/cnn.md --data-dir ../shared/data   # run one page
"""

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"(<!-- not run -->\s*\n)?```python\n(.*?)```", re.S)


def code_of(page):
    """The page's runnable code: its ```python blocks joined, each preceded by a comment naming it."""
    with open(page) as f:
        text = f.read()
    blocks = [m.group(2) for m in BLOCK.finditer(text) if not m.group(1)]
    return "\n".join(
        f"# --- block {i + 1} of {os.path.relpath(page, ROOT)}\n{b}" for i, b in enumerate(blocks)
    )


def is_slow(page):
    with open(page) as f:
        return "<!-- test: slow -->" in f.read()


def run(page, data_root, cwd, timeout=900):
    """Run a page's code; returns the CompletedProcess. JAXNN_DATA points at data_root, so that
    data.load reads the files there instead of downloading them."""
    env = dict(os.environ, JAXNN_DATA=os.path.abspath(data_root), PYTHONPATH=ROOT, MPLBACKEND="Agg")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-c", code_of(page)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pages", nargs="+")
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    for page in args.pages:
        out = run(page, args.data_dir, cwd=os.getcwd())
        print(f"== {page}: exit {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
