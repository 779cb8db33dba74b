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
