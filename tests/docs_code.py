"""The code of the docs pages, as the tests run it: every ```python block of a page, in order, as
one script in a fresh process (so that each page starts from a clean JAX, as a reader's session
does). A block right after the line `<!-- not run -->` is skipped (it shows a command, or code that
needs hardware or a network the tests lack).

What a block prints is shown right after it, in a ```text title="Output" block, and a tutorial
says under its title how long its code runs. `--write` runs the page and writes both; the tests
check that each block's output has the lines the page shows, numbers aside (they move with the
machine and the library's version; the lines, labels and tables must not).

    python tests/docs_code.py docs/tutorials/cnn.md --data-dir ../shared/data           # run one page
    python tests/docs_code.py docs/tutorials/*.md --data-dir ../shared/data --write     # refresh them
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(
    r"(<!-- not run -->\s*\n)?```python\n(.*?)```\n(\n```text title=\"Output\"\n.*?```\n)?", re.S
)
MARK = "#--- output of block "
"""A line the runner prints before each block, to tell the blocks' outputs apart."""
SHOWN = 40
"""The most lines of output a page shows for one block: longer ones show their start and end."""
RUNTIME = re.compile(r"\n\*The code on this page runs in about .*?\*\n")
NUMBER = re.compile(r"[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?%?|\bnan\b|\binf\b", re.I)


def _runnable(text):
    """The page's run blocks, as regex matches, in order."""
    return [m for m in BLOCK.finditer(text) if not m.group(1)]


def code_of(page):
    """The page's runnable code: its ```python blocks joined, each preceded by a line that prints
    MARK and its number (so the output can be split by block)."""
    with open(page) as f:
        text = f.read()
    return "\n".join(
        f"print({MARK!r} + {str(i + 1)!r}, flush=True)  # block {i + 1} of {os.path.relpath(page, ROOT)}\n"
        f"{m.group(2)}"
        for i, m in enumerate(_runnable(text))
    )


def outputs_of(stdout):
    """{block number: the lines it printed}, from a run's stdout."""
    found, current = {}, None
    for line in stdout.splitlines():
        if line.startswith(MARK):
            current = int(line[len(MARK) :])
            found[current] = []
        elif current is not None:
            found[current].append(line.rstrip())
    return {i: lines for i, lines in found.items() if lines}


def shown(lines):
    """The lines a page shows for an output: all of them, or the start and the end around '...'."""
    if len(lines) <= SHOWN:
        return lines
    return lines[: SHOWN - 12] + ["..."] + lines[-11:]


def _masked(line):
    return " ".join(NUMBER.sub("#", line).split())


def differences(page, stdout, every_output=True):
    """Where the page's Output blocks differ from the run's output (numbers aside), as messages;
    with `every_output`, also each block that printed but shows no output."""
    with open(page) as f:
        text = f.read()
    printed, problems = outputs_of(stdout), []
    for i, m in enumerate(_runnable(text), 1):
        page_lines = m.group(3).split("\n")[2:-2] if m.group(3) else None
        if page_lines is None:
            if i in printed and every_output:
                problems.append(f"block {i} prints {len(printed[i])} lines the page does not show")
            continue
        run_lines = shown(printed.get(i, []))
        want, got = [_masked(x) for x in page_lines], [_masked(x) for x in run_lines]
        if want != got:
            diff = next((j for j, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            a = page_lines[diff] if diff < len(page_lines) else "(nothing)"
            b = run_lines[diff] if diff < len(run_lines) else "(nothing)"
            problems.append(f"block {i}, output line {diff + 1}: the page shows {a!r}, the run printed {b!r}")
    return problems


def write_outputs(page, stdout, seconds):
    """Rewrite the page's Output blocks from a run's stdout, and its run time under the title."""
    with open(page) as f:
        text = f.read()
    printed, pieces, last = outputs_of(stdout), [], 0
    for i, m in enumerate(_runnable(text), 1):
        pieces.append(text[last : m.start()] + f"```python\n{m.group(2)}```\n")
        if i in printed:
            body = "\n".join(shown(printed[i]))
            pieces.append(f'\n```text title="Output"\n{body}\n```\n')
        last = m.end()
    text = "".join(pieces) + text[last:]
    if "/tutorials/" in page:
        about = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} minutes"
        line = f"\n*The code on this page runs in about {about} on a 2-core CPU, top to bottom.*\n"
        text = (
            RUNTIME.sub(line, text, count=1) if RUNTIME.search(text) else text.replace("\n", "\n" + line, 1)
        )
    with open(page, "w") as f:
        f.write(text)


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
    p.add_argument(
        "--write", action="store_true", help="write each block's output and the run time into the page"
    )
    args = p.parse_args()
    for page in args.pages:
        t0 = time.perf_counter()
        out = run(page, args.data_dir, cwd=os.getcwd())
        seconds = time.perf_counter() - t0
        print(
            f"== {page}: exit {out.returncode} in {seconds:.0f} s\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
        if out.returncode == 0 and args.write:
            write_outputs(page, out.stdout, seconds)
        elif out.returncode == 0:
            print("\n".join(differences(page, out.stdout)) or "the page shows what the code prints")
