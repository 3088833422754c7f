import pytest

collect_ignore = ["bench"]  # benchmark scripts are run by hand, never collected


@pytest.fixture
def sim():
    """A fresh simulator on a loopback ephemeral port."""
    from comfy_cli.sim import SimServer

    with SimServer() as server:
        yield server
