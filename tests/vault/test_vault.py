"""The vault: secrets only ever at rest encrypted; writes atomic; crashes leave no debris."""

import os
import re
import subprocess
import sys

import pytest

from veilstream.content import KeyRing, PublishOptions, publish_file
from veilstream.content.keytree import TreeNode
from veilstream.identity import generate_mnemonic
from veilstream.vault import KdfParams, StorageError, Vault, VaultError, atomic_writer, write_atomic

FAST_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)  # tests only: the default costs 64 MiB


@pytest.fixture
def words():
    return generate_mnemonic()


@pytest.fixture
def vault(tmp_path, words):
    return Vault.create(tmp_path / "home", "correct horse", words, FAST_KDF)


def test_unlock_returns_the_same_identity(vault, words):
    again = Vault.open(vault.home).unlock("correct horse")
    assert again.identity().mnemonic == words
    assert Vault.open(vault.home).public_identity()["wallet_address"] == again.identity().wallet_address


def test_wrong_passphrase(vault):
    with pytest.raises(VaultError, match="wrong passphrase"):
        Vault.open(vault.home).unlock("incorrect horse")


def test_no_secret_is_stored_in_the_clear(vault, words):
    identity = vault.identity()
    ring = KeyRing((TreeNode(3, 0, os.urandom(32)),), os.urandom(32))
    vault.store_keyring("ab" * 32, ring)
    secrets = [words.encode(), words.split()[0].encode() + b" " + words.split()[1].encode(),
               identity.wallet_key, identity.wallet_key.hex().encode(), identity.creator_seed,
               ring.nodes[0].key, ring.nodes[0].key.hex().encode(), ring.metadata_key.hex().encode()]
    for path in vault.home.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(secret in blob for secret in secrets), path


def test_secret_files_are_private(vault):
    for name in ("vault.json", "identity.sealed"):
        assert (vault.home / name).stat().st_mode & 0o077 == 0


def test_keyring_round_trip_and_binding(vault):
    ring = KeyRing((TreeNode(2, 1, os.urandom(32)), TreeNode(0, 9, os.urandom(32))), None)
    vault.store_keyring("cd" * 32, ring)
    assert vault.keyring("cd" * 32) == ring
    # a sealed key file moved to another content id does not open
    os.rename(vault.home / "keys" / f"{'cd' * 32}.sealed", vault.home / "keys" / f"{'ef' * 32}.sealed")
    with pytest.raises(VaultError, match="damaged"):
        vault.keyring("ef" * 32)


def test_create_refuses_to_overwrite_and_open_needs_init(vault, tmp_path, words):
    with pytest.raises(VaultError, match="already exists"):
        Vault.create(vault.home, "x", words, FAST_KDF)
    with pytest.raises(VaultError, match="veil init"):
        Vault.open(tmp_path / "nowhere")


def test_change_passphrase(vault, words):
    vault.change_passphrase("new one", FAST_KDF)
    assert Vault.open(vault.home).unlock("new one").identity().mnemonic == words
    with pytest.raises(VaultError):
        Vault.open(vault.home).unlock("correct horse")


def test_adopt_moves_a_published_content_in_whole(vault, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(70_000))
    with vault.workdir() as work:
        done = publish_file(src, work, vault.identity(), PublishOptions(slice_size=16 * 1024))
        vault.adopt(work, done.torrent, "creator")
    cid = done.torrent.content_id
    assert vault.torrent(cid) == done.torrent
    assert vault.ciphertext_path(cid).stat().st_size == done.torrent.length
    assert [c.content_id for c in vault.contents()] == [cid]
    assert list((vault.home / "tmp").iterdir()) == []


def test_a_failed_publish_leaves_nothing(vault, tmp_path):
    with pytest.raises(RuntimeError):
        with vault.workdir() as work:
            (work / "partial").write_bytes(b"half")
            raise RuntimeError("crash")
    assert list((vault.home / "tmp").iterdir()) == []
    assert not (vault.home / "content").exists()


def test_work_of_a_killed_process_is_swept_on_open(vault):
    child = subprocess.run(
        [sys.executable, "-c", "import os, pathlib, sys; p = pathlib.Path(sys.argv[1]) / f'{os.getpid()}-x'; "
         "p.mkdir(parents=True); (p / 'ciphertext').write_bytes(b'x' * 1000); os._exit(9)", str(vault.home / "tmp")],
    )
    assert child.returncode == 9
    assert len(list((vault.home / "tmp").iterdir())) == 1
    Vault.open(vault.home)
    assert list((vault.home / "tmp").iterdir()) == []


def test_atomic_writer_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "manifest"
    write_atomic(target, b"old")
    with pytest.raises(ValueError):
        with atomic_writer(target) as handle:
            handle.write(b"new but unfinished")
            raise ValueError
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest"]


def test_atomic_writer_reports_a_full_disk(tmp_path):
    """A real EFBIG from the kernel (RLIMIT_FSIZE) in a child process: one clear error, old file kept."""
    target = tmp_path / "big"
    write_atomic(target, b"old")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from veilstream.vault import write_atomic, StorageError\n"
        "try:\n    write_atomic(__import__('pathlib').Path(sys.argv[1]), b'x' * 100000)\n"
        "except StorageError as e:\n    print(e); sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert child.returncode == 3, child.stderr
    assert "disk full" in child.stdout
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["big"]


def test_a_passphrase_change_rotates_the_data_key(vault, words):
    """With the old key file and the old passphrase (a backup, a shoulder-surfed
    passphrase) nothing written after the change opens: the data key is new."""
    ring = KeyRing((TreeNode(2, 0, os.urandom(32)),), os.urandom(32))
    vault.store_keyring("ab" * 32, ring)
    old_key_file = (vault.home / "vault.json").read_bytes()
    vault.change_passphrase("battery staple", FAST_KDF)
    again = Vault.open(vault.home).unlock("battery staple")
    assert again.identity().mnemonic == words and again.keyring("ab" * 32) == ring
    (vault.home / "vault.json").write_bytes(old_key_file)
    with pytest.raises(VaultError, match="damaged or belongs to another vault"):
        Vault.open(vault.home).unlock("correct horse").identity()


@pytest.mark.parametrize("cut", ["before the commit", "after the commit"])
def test_a_passphrase_change_cut_short_leaves_a_working_vault(vault, words, cut, monkeypatch):
    """A crash while secrets are sealed again: before the key file is replaced the old
    passphrase still opens everything; after it, the new one does."""
    from veilstream.vault import store

    ring = KeyRing((TreeNode(2, 0, os.urandom(32)),), os.urandom(32))
    vault.store_keyring("cd" * 32, ring)
    real = store.UnlockedVault._finish_rotation
    if cut == "before the commit":
        real_write = store.write_atomic

        def crash_at_commit(path, data, mode=0o600):
            if path.name == "vault.json":
                raise OSError("power cut")
            return real_write(path, data, mode)
        monkeypatch.setattr(store, "write_atomic", crash_at_commit)
    else:
        monkeypatch.setattr(store.UnlockedVault, "_finish_rotation", lambda self: None)
    with pytest.raises(OSError):
        if cut == "after the commit":
            vault.change_passphrase("battery staple", FAST_KDF)
            raise OSError("power cut")
        vault.change_passphrase("battery staple", FAST_KDF)
    monkeypatch.setattr(store, "write_atomic", store.write_atomic)
    monkeypatch.setattr(store.UnlockedVault, "_finish_rotation", real)
    passphrase = "correct horse" if cut == "before the commit" else "battery staple"
    again = Vault.open(vault.home).unlock(passphrase)
    assert again.identity().mnemonic == words and again.keyring("cd" * 32) == ring
    assert not list(vault.home.rglob("*.next"))


@pytest.mark.parametrize("params", [(1, 1024, 1), (0, 65536, 1), (1, 2**40, 1), (10**9, 65536, 1)])
def test_a_key_file_with_a_cost_out_of_bounds_is_refused(vault, params):
    """Argon2id with next to no memory would let a stolen key file be guessed cheaply; with
    absurd costs a hostile key file would exhaust the machine."""
    import json

    doc = json.loads((vault.home / "vault.json").read_bytes())
    doc["time_cost"], doc["memory_kib"], doc["parallelism"] = params
    (vault.home / "vault.json").write_text(json.dumps(doc))
    with pytest.raises(VaultError, match="out of bounds"):
        Vault.open(vault.home).unlock("correct horse")


def test_a_home_made_with_wider_rights_is_made_private(tmp_path, words):
    home = tmp_path / "wide"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    Vault.create(home, "pw", words, FAST_KDF)
    assert home.stat().st_mode & 0o777 == 0o700
    os.chmod(home, 0o755)
    Vault.open(home)
    assert home.stat().st_mode & 0o777 == 0o700


def test_user_output_follows_the_umask():
    from veilstream.vault import user_file_mode

    old = os.umask(0o077)
    try:
        assert user_file_mode() == 0o600
        os.umask(0o022)
        assert user_file_mode() == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("part", ["identity.sealed", "vault.json", "identity.json"])
def test_a_missing_part_of_the_vault_is_named_damaged(vault, part):
    (vault.home / part).unlink()
    opened = Vault(vault.home)  # Vault.open would say "no vault" for a missing vault.json: it marks one
    with pytest.raises(VaultError, match=rf"is damaged \({re.escape(part)} is missing\).*veil init --restore"):
        opened.public_identity() if part == "identity.json" else opened.unlock("correct horse").identity()


def test_a_content_the_full_disk_cannot_index_is_not_adopted(small_disk, words, tmp_path):
    vault = Vault.create(small_disk.path / "home", "correct horse", words, FAST_KDF)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(70_000))
    with vault.workdir() as work:
        done = publish_file(src, work, vault.identity(), PublishOptions(slice_size=16 * 1024))
        small_disk.fill()
        with pytest.raises(StorageError, match=r"^no space left on the disk of the vault at .*: its index was not changed"):
            vault.adopt(work, done.torrent, "creator")
        assert (work / done.torrent.name).is_file()  # handed back to the work dir, which drops it
    assert not vault.content_dir(done.torrent.content_id).exists()
    small_disk.free()
    assert vault.contents() == []
    assert list((vault.home / "tmp").iterdir()) == []
