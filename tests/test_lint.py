"""The code stays as pyproject.toml's ruff configuration says (lint and format, lines <= 110), and the
library's code holds no measurements."""

import ast
import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: pip install -e '.[test]'"
    out = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_version_is_defined_once():
    import jaxnn

    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject
    from importlib.metadata import version

    assert version("jaxnn") == jaxnn.__version__


# measurements and history belong on the benchmark pages and in the changelog, not in the code
MEASUREMENT = re.compile(
    r"\b\d+\.\d+x\b"  # a speed ratio, 0.90x
    r"|\b\d+(\.\d+)? ?(KiB|MiB|GiB|ms)\b"  # a size or a time
    r"|\d[\d,]* page faults|\d[\d,.]* ?GFLOP/s"  # a rate (the unit alone names what is reported)
    r"|so old runs|as before\b"
)


def test_the_library_holds_no_measurements_or_history():
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "jaxnn", "**", "*.py"), recursive=True)):
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if MEASUREMENT.search(line):
                found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


LONGEST = 60
"""The most lines of code a function of the library may have (its closures counted on their own;
blank lines, comments and its docstring not counted): a reader holds one function in their head."""


def _code_lines(lines, node):
    inner = [
        child
        for child in ast.walk(node)
        if child is not node and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    numbers = set(range(node.lineno, node.end_lineno + 1))
    for child in inner:
        numbers -= set(range(child.lineno, child.end_lineno + 1))
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        numbers -= set(range(first.lineno, first.end_lineno + 1))
    return sum(1 for n in numbers if lines[n - 1].strip() and not lines[n - 1].strip().startswith("#"))


def test_no_function_of_the_library_is_longer_than_a_reader_can_hold():
    too_long = []
    for path in sorted(glob.glob(os.path.join(ROOT, "jaxnn", "**", "*.py"), recursive=True)):
        source = open(path, encoding="utf-8").read()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = _code_lines(lines, node)
                if count > LONGEST:
                    too_long.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: {count} lines")
    assert not too_long, "\n".join(too_long)
