import os
import socket

import pytest
from hypothesis import HealthCheck, settings

# Property tests run a bounded number of examples in `make test`; `make fuzz` raises it.
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz" if os.environ.get("VEIL_FUZZ_SECONDS") else "default")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def local_relay_of_this_worker(tmp_path_factory):
    """Commands run without `--relay` use the machine's local relay: give each test process
    (each xdist worker) its own store and port, never the user's ~/.local/share one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VEIL_RELAY_DATA", str(tmp_path_factory.mktemp("local-relay")))
        patch.setenv("VEIL_RELAY_PORT", str(free_port()))
        yield
