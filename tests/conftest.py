import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

if str(Path(__file__).parent) not in sys.path:  # shared helpers (cli_harness) import as plain modules
    sys.path.insert(0, str(Path(__file__).parent))
from cli_harness import free_port  # noqa: E402

# Property tests run a bounded number of examples in `make test`; `make fuzz` raises it.
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz" if os.environ.get("VEIL_FUZZ_SECONDS") else "default")


@pytest.fixture(scope="session", autouse=True)
def local_relay_of_this_worker(tmp_path_factory):
    """Commands run without `--relay` use the machine's local relay: give each test process
    (each xdist worker) its own store and port, never the user's ~/.local/share one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VEIL_RELAY_DATA", str(tmp_path_factory.mktemp("local-relay")))
        patch.setenv("VEIL_RELAY_PORT", str(free_port()))
        patch.setenv("VEIL_TRACKER_PORT", str(free_port()))  # and the machine's local tracker
        yield
class SmallDisk:
    """A real, small file system (tmpfs) that a test fills to the last byte: a full disk
    as the vault meets one, no mock between SQLite or the kernel and the error."""

    def __init__(self, path):
        self.path = path
        self._filler = path / ".filler"

    def fill(self, leave_bytes: int = 0) -> None:
        """Take all the free space but `leave_bytes` (rounded to pages)."""
        stats = os.statvfs(self.path)
        size = stats.f_bavail * stats.f_frsize - leave_bytes
        with open(self._filler, "ab") as handle:
            os.posix_fallocate(handle.fileno(), handle.tell(), max(size, 1))

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full disk is a real 4 MiB tmpfs here, and mounting one needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
