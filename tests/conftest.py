import jax
import pytest


@pytest.fixture
def x64():
    """Run the test in float64: gradient checks need the precision."""
    with jax.enable_x64(True):
        yield


def pytest_addoption(parser):
    parser.addoption(
        "--data-dir", default=None, help="folder holding the MNIST IDX files (e.g. ../shared/data)"
    )
