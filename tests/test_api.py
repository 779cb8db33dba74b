"""The public API is typed and documented: every public callable's docstring lists each of its
arguments and what it returns (Equinox's Arguments/Returns style), no docstring quotes a machine's
timings, and the type checker runs clean over the package."""

import importlib
import inspect
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the modules of the API reference: `jaxnn` itself and every public submodule; their `__all__` is the API
PUBLIC_MODULES = [
    "jaxnn",
    "jaxnn.core",
    "jaxnn.layers",
    "jaxnn.conv",
    "jaxnn.pooling",
    "jaxnn.normalization",
    "jaxnn.recurrent",
    "jaxnn.attention",
    "jaxnn.blockwise",
    "jaxnn.remat",
    "jaxnn.hostmem",
    "jaxnn.activations",
    "jaxnn.losses",
    "jaxnn.gradients",
    "jaxnn.gradcheck",
    "jaxnn.curvature",
    "jaxnn.models",
    "jaxnn.summary",
    "jaxnn.precision",
    "jaxnn.augment",
    "jaxnn.train",
    "jaxnn.train.tensorboard",
    "jaxnn.data",
    "jaxnn.language",
    "jaxnn.checkpoint",
    "jaxnn.parallel",
    "jaxnn.io",
    "jaxnn.files",
    "jaxnn.errors",
    "jaxnn.types",
    "jaxnn.throughput",
]


def _public_callables():
    seen = set()
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__: its public names are undeclared"
        for attr in module.__all__:
            obj = getattr(module, attr)
            is_loss = hasattr(obj, "forward") and hasattr(obj, "rule")  # documented where it is assigned
            is_type_name = name == "jaxnn.types"  # aliases such as Shape = tuple[int, ...]
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen or is_loss or is_type_name:
                continue
            seen.add(id(obj))
            yield f"{name}.{attr}", obj


def _undocumented(obj):
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        return [] if doc else ["no docstring"]
    missing = [
        p
        for p in inspect.signature(obj).parameters
        if not any(f"`{pre}{p}{post}" in doc for pre in ("", "*", "**") for post in ("`", "(", ","))
    ]
    problems = [f"arguments not listed: {missing}"] if missing else []
    return problems + ([] if "**Returns:**" in doc else ["no **Returns:**"])


def test_every_public_callable_lists_its_arguments_and_returns():
    problems = {name: p for name, obj in _public_callables() if (p := _undocumented(obj))}
    assert not problems, problems


TIMING = re.compile(r"\b\d+(\.\d+)? ?(ms|GFLOP/s)\b|\bon \d+ (CPU )?cores\b|\bissue \d+\b")


def test_no_docstring_quotes_timings_or_issue_numbers():
    found = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in [None, *module.__all__]:
            obj = module if attr is None else getattr(module, attr)
            doc = inspect.getdoc(obj) or ""
            if TIMING.search(doc):
                found[f"{name}.{attr or ''}"] = TIMING.search(doc).group(0)
    assert not found, found


def test_the_package_ships_its_types():
    assert os.path.exists(os.path.join(ROOT, "jaxnn", "py.typed"))


@pytest.mark.slow  # a static check of the whole package (10 s): CI runs it with the slow tests
def test_the_type_checker_runs_clean():
    checker = shutil.which("basedpyright")
    if checker is None:
        pytest.fail("basedpyright is missing: pip install -e '.[test]'")
    out = subprocess.run([checker, "jaxnn"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _layer_constructors():
    """(module, name) of every public layer type: a capitalised name in a jaxnn module's __all__
    whose signature returns a Layer (found by walking the package, so a new module is not missed)."""
    import pkgutil

    import jaxnn

    found = []
    for info in pkgutil.walk_packages(jaxnn.__path__, "jaxnn."):
        if info.name == "jaxnn.plots":  # a stub that raises ImportError with its new place
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if name[:1].isupper() and inspect.isfunction(obj):
                if inspect.signature(obj).return_annotation in (jaxnn.Layer, "Layer"):
                    found.append((info.name, name))
    return found


def test_a_new_layer_needs_only_its_module_and_its_gradient_table_row():
    """Each layer type is exported by `jaxnn` and checked by the gradient table; what is missing is
    named, with the file to add it to (the API index is checked in tests/test_docs.py)."""
    import jaxnn
    from jaxnn_lab.gradient_table import LAYERS

    constructors = _layer_constructors()
    assert len(constructors) >= 20, constructors  # the walk found the layers
    missing = [
        f"export {n} (from {m}) in jaxnn/__init__.py" for m, n in constructors if n not in jaxnn.__all__
    ]
    missing += [
        f"add a row for {n} to LAYERS in jaxnn_lab/gradient_table.py"
        for _, n in constructors
        if not any(n in row for row in LAYERS)
    ]
    assert not missing, "; ".join(missing)


def test_the_library_never_imports_the_lab():
    """jaxnn/ is the library: nothing in it imports jaxnn_lab (the application beside it)."""
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxnn")):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                text = open(path).read()
                if re.search(r"^\s*(from|import) jaxnn_lab\b", text, re.M):
                    offenders.append(os.path.relpath(path, ROOT))
    assert not offenders, offenders


def test_no_public_docstring_points_at_a_private_name():
    """A reader of the API pages cannot follow `_helper`: docstrings name public things only."""
    private = re.compile(r"`[\w.]*\b_[a-z]\w*`")
    found = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        docs = [(name, inspect.getdoc(module) or "")]
        docs += [
            (qualified, inspect.getdoc(obj) or "")
            for qualified, obj in _public_callables()
            if qualified.startswith(name + ".")
        ]
        found += [f"{where}: {m.group(0)}" for where, doc in docs for m in private.finditer(doc)]
    assert not found, found
