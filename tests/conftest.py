import os

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test in float64: gradient checks need the precision."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def data_root(request):
    """The --data-dir folder (holding mnist/, fashion_mnist/, tinyshakespeare/); skips without it."""
    root = request.config.getoption("--data-dir")
    if not root:
        pytest.skip("needs --data-dir (e.g. ../shared/data)")
    return root


def pytest_addoption(parser):
    parser.addoption(
        "--data-dir", default=None, help="folder holding the MNIST IDX files (e.g. ../shared/data)"
    )


@pytest.fixture(autouse=True, scope="session")
def compile_cache_of_its_own(tmp_path_factory):
    """Experiment scripts run by the tests keep their compiled programs, and fit its measured matmul
    ceiling, in a folder of the test session's, not in the user's cache."""
    folder = tmp_path_factory.mktemp("compile-cache")
    settings = {"JAXNN_COMPILE_CACHE": str(folder), "JAXNN_CEILING_FILE": str(folder / "matmul_ceiling.json")}
    old = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield
    for name, value in old.items():
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value
