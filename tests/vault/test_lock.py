"""One writer at a time: a vault's locks refuse a second holder by name, and die with their holder."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from veilstream.vault import VaultBusy, VaultError
from veilstream.vault.lock import hold

CID = "3f2a" + "00" * 30

HOLDER = """
import sys
from pathlib import Path
from veilstream.vault.lock import hold
with hold(Path(sys.argv[1]), sys.argv[2], "veil play"):
    print("held", flush=True)
    sys.stdin.read()
"""


def holder(directory, name) -> subprocess.Popen:
    """Another process holding `name` until its stdin closes (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), name], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_process_is_refused_with_the_holders_name(tmp_path):
    other = holder(tmp_path, f"content-{CID}")
    try:
        with pytest.raises(VaultBusy) as refused:
            with hold(tmp_path, f"content-{CID}", "veil fetch"):
                pytest.fail("two holders at once")
        message = str(refused.value)
        assert message.startswith(f"content {CID[:16]}… is in use by `veil play` (pid {other.pid}, since ")
        assert message.endswith("; wait for it or stop it")
        with hold(tmp_path, f"content-{'ab' * 32}", "veil fetch"):  # another content is free
            pass
    finally:
        other.kill()
        other.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    other = holder(tmp_path, "wallet-0xabc")
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    with hold(tmp_path, "wallet-0xabc", "veil serve"):
        assert (tmp_path / "wallet-0xabc.lock").exists()


def test_two_holders_in_one_process_exclude_each_other_too(tmp_path):
    with hold(tmp_path, "wallet-0xabc", "veil serve"):
        with pytest.raises(VaultBusy, match="in use by `veil serve`"):
            with hold(tmp_path, "wallet-0xabc", "veil serve"):
                pass
    with hold(tmp_path, "wallet-0xabc", "veil serve"):  # released on leaving the block
        pass


def test_a_waiting_holder_gets_the_lock_once_it_is_released(tmp_path):
    other = holder(tmp_path, "wallet-0xabc")
    got = threading.Event()

    def wait_for_it() -> None:
        with hold(tmp_path, "wallet-0xabc", "veil play", wait_s=60):
            got.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not got.is_set()  # the other process still holds it
    other.stdin.close()
    other.wait()
    waiter.join(timeout=60)
    assert got.is_set()


def test_a_lock_name_cannot_leave_the_locks_folder(tmp_path):
    for name in ("../escape", "", "a/b", ".hidden"):
        with pytest.raises(VaultError, match="not a lock's name"):
            with hold(tmp_path / "locks", name, "veil play"):
                pass
    assert not (tmp_path / "escape.lock").exists()
