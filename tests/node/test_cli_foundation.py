"""The `veil` CLI as a person uses it: init, restore, backup, publish, open — and every
user mistake answered by one line, a non-zero exit, no traceback, nothing half-written."""

import itertools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cli_harness import PASS, VEIL, assert_clean_failure, content_id_of, veil_env
from cli_harness import veil as run
from veilstream.identity import Identity


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("veil") / "home"
    result = run(home, "init")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def mnemonic(home):
    from veilstream.vault import Vault

    return Vault.open(home).unlock(PASS).identity().mnemonic


def wallet_of(result) -> str:
    return re.search(r"wallet address\s+(0x[0-9a-fA-F]{40})", result.stdout)[1]


def test_init_shows_the_mnemonic_once_and_refuses_to_overwrite(home, mnemonic):
    again = run(home, "init")
    assert_clean_failure(again, "already exists")


def test_restore_from_mnemonic_gives_the_same_identity(tmp_path, mnemonic):
    result = run(tmp_path / "restored", "init", "--restore", stdin=mnemonic + "\n")
    assert result.returncode == 0, result.stderr
    assert wallet_of(result) == Identity.from_mnemonic(mnemonic).wallet_address
    assert mnemonic not in result.stdout  # a restore does not print the secret again


def test_backup_shares_restore_from_any_three(home, mnemonic, tmp_path):
    result = run(home, "backup", "--shares", "3-of-5")
    assert result.returncode == 0, result.stderr
    shares = re.findall(r"share \d: (.+)", result.stdout)
    assert len(shares) == 5
    expected = Identity.from_mnemonic(mnemonic).wallet_address
    for n, trio in enumerate(itertools.combinations(shares, 3)):
        if n % 3:  # 4 of the 10 combinations through the CLI; all 10 are checked in tests/identity
            continue
        restored = run(tmp_path / f"r{n}", "init", "--restore-shares", stdin="\n".join(trio) + "\n")
        assert restored.returncode == 0, restored.stderr
        assert wallet_of(restored) == expected
    too_few = run(tmp_path / "few", "init", "--restore-shares", stdin="\n".join(shares[:2]))
    assert_clean_failure(too_few, "shares")
    assert not (tmp_path / "few").exists()


@pytest.mark.parametrize("words,reason", [
    ("abandon abandon", "words"), ("abandon " * 11 + "wrongword", "not a BIP-39 word"), ("abandon " * 12, "checksum"),
])
def test_bad_mnemonic(tmp_path, words, reason):
    assert_clean_failure(run(tmp_path / "h", "init", "--restore", stdin=words), reason)
    assert not (tmp_path / "h").exists()


def test_bad_share(tmp_path):
    assert_clean_failure(run(tmp_path / "h", "init", "--restore-shares", stdin="academic acid acne\n"), "shares")


@pytest.mark.parametrize("spec", ["3of", "6-of-5", "1-of-3"])
def test_bad_share_scheme(home, spec):
    assert_clean_failure(run(home, "backup", "--shares", spec), "share|threshold|K-of-N")


def test_wrong_passphrase(home):
    assert_clean_failure(run(home, "backup", "--shares", "2-of-3", passphrase="nope"), "wrong passphrase")


def test_no_vault(tmp_path):
    assert_clean_failure(run(tmp_path / "none", "list"), "veil init")


@pytest.mark.parametrize("part, command", [("identity.sealed", ["backup", "--shares", "2-of-3"]),
                                           ("identity.json", ["wallet", "address"])])
def test_a_vault_missing_a_part_says_how_to_restore(tmp_path, part, command):
    home = tmp_path / "home"
    assert run(home, "init").returncode == 0
    (home / part).unlink()
    assert_clean_failure(run(home, *command), rf"vault at .* is damaged \({re.escape(part)} is missing\).*"
                                              r"`veil init --restore`")


@pytest.fixture(scope="module")
def published(home, tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    from veilstream.node.sample import make_sample_video

    video = make_sample_video(folder / "clip.mp4", seconds=3)
    result = run(home, "publish", str(video), "--slice-size", "16KiB", "--price", "1000wei", "--seeder-share", "2500")
    assert result.returncode == 0, result.stderr
    cid = content_id_of(result.stdout)
    assert f"magnet:?xt=urn:btmh:1220{cid}" in result.stdout
    return video, cid


def test_publish_then_open_is_byte_identical(home, published, tmp_path):
    video, cid = published
    out = tmp_path / "out.mp4"
    result = run(home, "open", cid, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == video.read_bytes()
    assert "video/mp4" in result.stdout and "3.0 s" in result.stdout
    listing = run(home, "list")
    assert cid in listing.stdout and "creator" in listing.stdout


def test_open_to_stdout(home, published):
    video, cid = published
    result = subprocess.run(VEIL + ["open", cid, "--out", "-"], capture_output=True, env=veil_env(home), timeout=60)
    assert result.returncode == 0 and result.stdout == video.read_bytes()


@pytest.mark.parametrize("case,pattern", [
    ("missing", "no such file"), ("empty", "empty"), ("directory", "directory"), ("unreadable", "permission denied"),
])
def test_publish_bad_input(home, tmp_path, case, pattern):
    target = tmp_path / "input.bin"
    prefix = ()
    if case == "empty":
        target.write_bytes(b"")
    elif case == "directory":
        target.mkdir()
    elif case == "unreadable":
        target.write_bytes(b"secret")
        target.chmod(0)
        if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
            prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
    before = held(home)
    assert_clean_failure(run(home, "publish", str(target), prefix=prefix), pattern)
    assert held(home) == before


@pytest.mark.parametrize("size", ["1000", "3MiB", "banana"])
def test_publish_bad_slice_size(home, published, size):
    video, _ = published
    assert_clean_failure(run(home, "publish", str(video), "--slice-size", size), "size")


def _copy_home(home: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "home-copy"
    shutil.copytree(home, copy)
    return copy


def test_open_a_tampered_ciphertext(home, published, tmp_path):
    _, cid = published
    copy = _copy_home(home, tmp_path)
    data_file = next(p for p in (copy / "content" / cid).iterdir() if not p.name.endswith(".torrent"))
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data_file.write_bytes(bytes(raw))
    out = tmp_path / "out.mp4"
    assert_clean_failure(run(copy, "open", cid, "--out", str(out)), r"slice \d+ does not match")
    assert not out.exists() and list(tmp_path.glob(".out.mp4*")) == []


def test_open_with_a_truncated_torrent(home, published, tmp_path):
    _, cid = published
    copy = _copy_home(home, tmp_path)
    torrent = copy / "content" / cid / f"{cid}.torrent"
    torrent.write_bytes(torrent.read_bytes()[:100])
    assert_clean_failure(run(copy, "open", cid, "--out", str(tmp_path / "o")), "torrent")


def test_open_with_foreign_keys(home, published, tmp_path):
    """Keys of another content under this content's name: refused before any output."""
    _, cid = published
    copy = _copy_home(home, tmp_path)
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(1_500_000))  # more slices than the sample: its key tree covers them all
    result = run(copy, "publish", str(other), "--slice-size", "16KiB")
    other_cid = content_id_of(result.stdout)
    from veilstream.vault import Vault

    vault = Vault.open(copy).unlock(PASS)
    vault.store_keyring(cid, vault.keyring(other_cid))
    out = tmp_path / "o"
    assert_clean_failure(run(copy, "open", cid, "--out", str(out)), "wrong key")
    assert not out.exists()


def test_a_creator_restored_from_the_mnemonic_opens_its_catalogue(home, mnemonic, published, tmp_path):
    """The keys derive from the seed and the manifest's salt: a restored vault needs only the
    torrent and ciphertext back (what `veil fetch` brings) to open and sell its content."""
    video, cid = published
    restored = tmp_path / "restored"
    assert run(restored, "init", "--restore", stdin=mnemonic + "\n").returncode == 0
    from veilstream.content import Torrent
    from veilstream.vault import Vault

    source = Vault.open(home)
    torrent = Torrent.load(source.content_dir(cid) / f"{cid}.torrent")
    vault = Vault.open(restored)
    with vault.workdir() as work:  # as `veil fetch` leaves it: torrent and ciphertext, no keys
        shutil.copy(source.content_dir(cid) / f"{cid}.torrent", work)
        shutil.copy(source.ciphertext_path(cid), work)
        vault.adopt(work, torrent, role="seeder")
    assert not (restored / "keys").exists()
    out = tmp_path / "restored.mp4"
    result = run(restored, "open", cid, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == video.read_bytes()
    assert (restored / "keys" / f"{cid}.sealed").is_file()  # derived once, then kept sealed

    # another identity holding the same torrent still has no keys
    stranger = tmp_path / "stranger"
    assert run(stranger, "init").returncode == 0
    other = Vault.open(stranger)
    with other.workdir() as work:
        shutil.copy(source.content_dir(cid) / f"{cid}.torrent", work)
        shutil.copy(source.ciphertext_path(cid), work)
        other.adopt(work, torrent, role="seeder")
    assert_clean_failure(run(stranger, "open", cid, "--out", str(tmp_path / "no.mp4")), "holds no keys")


def test_open_unknown_content(home, tmp_path):
    out = str(tmp_path / "x")  # a path of its own: an existing /tmp/x would be refused first
    assert_clean_failure(run(home, "open", "ab" * 32, "--out", out), "not in this vault")
    assert_clean_failure(run(home, "open", "xyz", "--out", out), "64 hex")


def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def held(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "content").iterdir()) if (home / "content").exists() else []


def test_publish_on_a_full_disk_leaves_nothing(home, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    before = held(home)
    assert_clean_failure(run(home, "publish", str(big), "--slice-size", "16KiB", preexec=_file_size_limit(200_000)), "disk full")
    assert held(home) == before
    assert list((home / "tmp").iterdir()) == []


def test_open_on_a_full_disk_leaves_nothing(home, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    cid = content_id_of(run(home, "publish", str(data)).stdout)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # the limit is above what the vault's index needs (SQLite's 32 KiB shared-memory file)
    result = run(home, "open", cid, "--out", str(out_dir / "o.bin"), preexec=_file_size_limit(100_000))
    assert_clean_failure(result, "disk full")
    assert list(out_dir.iterdir()) == []


def test_a_vault_on_a_full_disk_is_one_line_and_keeps_nothing(small_disk, tmp_path):
    home = small_disk.path / "home"
    assert run(home, "init").returncode == 0
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))

    def kept() -> list[str]:  # what publishing left in the vault
        return sorted(str(p.relative_to(home)) for d in ("content", "keys", "tmp") for p in (home / d).rglob("*"))

    small_disk.fill()
    assert_clean_failure(run(home, "publish", str(data), "--slice-size", "64KiB"), "disk full|no space left")
    assert_clean_failure(run(home, "list"), r"no space left on the disk of the vault at .*: its index was not changed")
    small_disk.free()
    assert kept() == []
    # more and more room: the ciphertext fits before the index does; each refusal keeps nothing
    for spare in range(300_000, 500_000, 8_192):
        small_disk.fill(leave_bytes=spare)
        result = run(home, "publish", str(data), "--slice-size", "64KiB")
        small_disk.free()
        if result.returncode == 0:
            break
        assert_clean_failure(result, "disk full|no space left")
        assert kept() == [], spare
    assert len(held(home)) == 1 and len(list((home / "keys").glob("*.sealed"))) == 1  # and at last it fits


def test_demo_runs_the_whole_network_and_verifies(tmp_path):
    result = run(tmp_path / "unused", "demo", "--seconds", "3", "--keep", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr + result.stdout
    for claim in ("demo passed", "byte-for-byte identical", "no plaintext, no keys", "split matches the registered terms",
                  "libtorrent (plain)", "seeder-1", "seeder-2"):
        assert claim in result.stdout, claim
    for name in ("seeder-1", "seeder-2", "libtorrent"):  # seeders got ciphertext and nothing else
        assert [p.name.startswith("veil-") for p in (tmp_path / "demo" / name).iterdir()] == [True]


def test_the_passphrase_is_taken_out_of_the_environment(monkeypatch):
    """Children (relay, anvil, a shell the user opens) must not inherit it."""
    import os

    from veilstream.node.cli import common

    monkeypatch.setattr(common, "_remembered", [])
    monkeypatch.setenv("VEIL_PASSPHRASE", "s3cret")
    assert common.read_passphrase() == "s3cret"
    assert "VEIL_PASSPHRASE" not in os.environ
    assert common.read_passphrase() == "s3cret"  # still known to this process


def test_version_and_a_passphrase_floor(tmp_path):
    version = run(tmp_path / "none", "--version")
    assert version.returncode == 0 and re.fullmatch(r"veil \d+\.\d+\.\d+\s*", version.stdout)
    assert_clean_failure(run(tmp_path / "weak", "init", passphrase="abc"), "at least 8 characters")
    assert not (tmp_path / "weak" / "vault.json").exists()


def test_publish_takes_units_says_a_file_is_published_and_prints_whole_values(home, published, tmp_path):
    video, cid = published
    assert_clean_failure(run(home, "publish", str(video), "--price", "1000"), "unit")  # 1000 what?
    assert_clean_failure(run(home, "publish", str(video), "--seeder-share", "120%"), "0% to 100%")
    again = run(home, "publish", str(video), "--slice-size", "16KiB", "--price", "1000wei")
    assert_clean_failure(again, f"already published as {cid}")
    fresh = run(home, "publish", str(video), "--again", "--seeder-share", "25%", "--json", env={"COLUMNS": "40"})
    assert fresh.returncode == 0, fresh.stderr
    result = json.loads(fresh.stdout)
    assert result["content_id"] != cid and result["seeder_share_bps"] == 2500
    assert result["magnet"].startswith(f"magnet:?xt=urn:btmh:1220{result['content_id']}")
    # a table piped to a file is never cut at the terminal's width: the magnet stays whole
    listing = run(home, "publish", str(video), "--again", env={"COLUMNS": "40"})
    magnet = re.search(r"magnet\s+(\S+)", listing.stdout)[1]
    assert magnet.startswith("magnet:?xt=urn:btmh:1220") and "&dn=veil-" in magnet and len(magnet) > 100


def test_open_does_not_overwrite_without_force(home, published, tmp_path):
    video, cid = published
    out = tmp_path / "mine.txt"
    out.write_bytes(b"keep me")
    assert_clean_failure(run(home, "open", cid, "--out", str(out)), "--force")
    assert out.read_bytes() == b"keep me"
    assert run(home, "open", cid, "--out", str(out), "--force").returncode == 0
    assert out.read_bytes() == video.read_bytes()


def test_rm_frees_a_content_and_keeps_its_keys(home, tmp_path):
    data = tmp_path / "scratch.bin"
    data.write_bytes(os.urandom(200_000))
    cid = json.loads(run(home, "publish", str(data), "--json").stdout)["content_id"]
    listed = json.loads(run(home, "list", "--json").stdout)
    assert cid in [c["content_id"] for c in listed["contents"]]
    removed = run(home, "rm", cid)
    assert removed.returncode == 0 and "MiB freed" in removed.stdout and "keys stay" in removed.stdout
    assert cid not in [c["content_id"] for c in json.loads(run(home, "list", "--json").stdout)["contents"]]
    assert (home / "keys" / f"{cid}.sealed").is_file() and not (home / "content" / cid).exists()
    assert_clean_failure(run(home, "rm", cid), "not in this vault")
