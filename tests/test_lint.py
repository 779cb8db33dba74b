"""The code stays as pyproject.toml's ruff configuration says (lint and format, lines <= 110)."""

import os
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
