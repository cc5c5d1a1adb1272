"""The vault: a node's home directory.

    <home>/vault.json          data key wrapped under the passphrase (Argon2id)
    <home>/identity.sealed     the mnemonic, sealed with the data key
    <home>/identity.json       public keys only (addresses), readable without the passphrase
    <home>/index.db            SQLite (WAL) index of contents held
    <home>/content/<id>/       <id>.torrent and the ciphertext file
    <home>/keys/<id>.sealed    key rings, sealed with the data key
    <home>/secrets/<n>.sealed  small secrets (purchases' one-time keys), sealed with the data key
    <home>/tmp/<pid>-*/        work in progress; moved into place by a rename when complete
    <home>/locks/<name>.lock   advisory locks: one process at a time works on a content or sends from the wallet

Every file is written atomically; a content directory appears whole or not at all.
"""

from __future__ import annotations

import hmac
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from veilstream.content import ContentKeys, KeyRing, Torrent, TreeNode, WrongKeyError, parse_content_id, verify_all_keys
from veilstream.identity import Identity
from veilstream.vault import lock
from veilstream.atomic import disk_is_full, fsync_directory
from veilstream.vault.atomic import StorageError, describe_os_error, write_atomic
from veilstream.vault.sealing import DataKey, KdfParams, VaultError, WrongPassphrase


@dataclass(frozen=True)
class HeldContent:
    content_id: str
    role: str  # "creator", "seeder" or "viewer"
    slice_count: int
    ciphertext_length: int
    added_at: float


class Vault:
    """A vault on disk; public operations need no passphrase."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    # -- lifecycle ---------------------------------------------------------------
    @staticmethod
    def exists(home: Path) -> bool:
        return (Path(home) / "vault.json").is_file()

    @classmethod
    def create(cls, home: Path, passphrase: str, mnemonic: str, kdf: KdfParams = KdfParams()) -> UnlockedVault:
        home = Path(home)
        if cls.exists(home):
            raise VaultError(f"a vault already exists at {home}; choose another VEIL_HOME or remove it first")
        if not passphrase:
            raise VaultError("the passphrase is empty; choose one (it encrypts your keys at rest)")
        identity = Identity.from_mnemonic(mnemonic)
        data_key = DataKey.generate()
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, home)) from None
        _keep_private(home)
        write_atomic(home / "identity.sealed", data_key.seal(identity.mnemonic.encode(), "identity"))
        write_atomic(home / "identity.json", json.dumps(identity.public_summary(), indent=2).encode(), 0o644)
        write_atomic(home / "vault.json", data_key.wrap(passphrase, kdf))  # last: marks the vault complete
        vault = UnlockedVault(home, data_key)
        vault._init_index()
        return vault

    @classmethod
    def open(cls, home: Path) -> Vault:
        if not cls.exists(home):
            raise VaultError(f"no vault at {home}: run `veil init` first (or set VEIL_HOME)")
        _keep_private(Path(home))
        vault = cls(home)
        vault._init_index()
        vault._sweep_abandoned_work()
        return vault

    def unlock(self, passphrase: str) -> UnlockedVault:
        data_key = DataKey.unwrap(self._read_part("vault.json"), passphrase)
        vault = UnlockedVault(self.home, data_key)
        vault._finish_rotation()
        return vault

    def public_identity(self) -> dict[str, str]:
        try:
            return json.loads(self._read_part("identity.json"))
        except ValueError:
            raise self._damaged("identity.json is not readable JSON") from None

    def _read_part(self, name: str) -> bytes:
        """One of the vault's own files, which `create` wrote: missing means damaged."""
        path = self.home / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise self._damaged(f"{name} is missing") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from None

    def _damaged(self, what: str) -> VaultError:
        return VaultError(f"the vault at {self.home} is damaged ({what}): move it aside and restore your identity "
                          "from its mnemonic with `veil init --restore` (or `--restore-shares`)")

    # -- one writer --------------------------------------------------------------
    def hold(self, name: str, purpose: str, *, wait_s: float = 0.0) -> AbstractContextManager[None]:
        """Hold the vault's lock `name` (such as `content-<id>`) for a `with` block, or raise
        `VaultBusy` naming the process that holds it; `purpose` names this one ("veil play")."""
        return lock.hold(self.home / "locks", name, purpose, wait_s=wait_s)

    def hold_content(self, content_id: str, purpose: str) -> AbstractContextManager[None]:
        """One process at a time fetches, plays, serves or writes a content of this vault."""
        return self.hold(f"content-{parse_content_id(content_id)}", purpose)

    # -- index -------------------------------------------------------------------
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the index: committed whole, or (on any error) not at all."""
        try:
            conn = sqlite3.connect(self.home / "index.db", timeout=30)
        except sqlite3.Error as exc:
            raise self._index_error(exc) from None
        try:
            yield conn
            conn.commit()
        except BaseException as exc:
            with suppress(sqlite3.Error):  # SQLite may have rolled back already ("cannot rollback")
                conn.rollback()
            if isinstance(exc, sqlite3.Error):
                raise self._index_error(exc) from None
            raise
        finally:
            conn.close()

    def _index_error(self, exc: sqlite3.Error) -> StorageError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or disk_is_full(self.home):
            return StorageError(f"no space left on the disk of the vault at {self.home}: its index was not changed; "
                                "free some space and run the command again")
        return StorageError(f"the vault index at {self.home / 'index.db'} cannot be used ({exc}): damaged?")

    def _init_index(self) -> None:
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS contents ("
                " content_id TEXT PRIMARY KEY, role TEXT NOT NULL, slice_count INTEGER NOT NULL,"
                " ciphertext_length INTEGER NOT NULL, added_at REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS published ("
                " source TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " content_id TEXT NOT NULL, published_at REAL NOT NULL)"
            )

    def contents(self) -> list[HeldContent]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM contents ORDER BY added_at").fetchall()
        return [HeldContent(*row) for row in rows]

    def note_published(self, source: Path, content_id: str) -> None:
        """Remember which file became which content (a second publish of it is said)."""
        info = Path(source).stat()
        with self._db() as db:
            db.execute("INSERT INTO published VALUES (?, ?, ?, ?, ?)",
                       (str(Path(source).absolute()), info.st_size, info.st_mtime_ns, content_id, time.time()))

    def published_as(self, source: Path) -> list[str]:
        """The contents this vault published from `source` as it is now (same size and time)."""
        info = Path(source).stat()
        with self._db() as db:
            rows = db.execute("SELECT content_id FROM published WHERE source = ? AND size = ? AND mtime_ns = ?"
                              " ORDER BY published_at", (str(Path(source).absolute()), info.st_size,
                                                         info.st_mtime_ns)).fetchall()
        return [row[0] for row in rows if self.content_dir(row[0]).is_dir()]

    def partial_plays(self) -> dict[str, int]:
        """content id → bytes of ciphertext kept from plays (what makes the next play free)."""
        root = self.home / "partial"
        sizes: dict[str, int] = {}
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_dir() and len(entry.name) == 64:
                    sizes[entry.name] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        return sizes

    def remove(self, content_id: str) -> int:
        """Remove a content's ciphertext, torrent and play leftovers (its keys stay: they
        were paid for). Returns the bytes freed."""
        cid = parse_content_id(content_id)
        doomed = [self.content_dir(cid), self.home / "partial" / cid]
        doomed += list((self.home / "partial").glob(f"{cid}.*")) if (self.home / "partial").is_dir() else []
        freed = 0
        for path in doomed:
            if not path.exists():
                continue
            files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
            freed += sum(f.stat().st_size for f in files)
            if path.is_dir():
                aside = self.home / "tmp" / f"{os.getpid()}-removed-{path.name}"  # gone in one rename
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, aside)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        with self._db() as db:
            db.execute("DELETE FROM contents WHERE content_id = ?", (cid,))
        return freed

    # -- contents ------------------------------------------------------------------
    def content_dir(self, content_id: str) -> Path:
        return self.home / "content" / parse_content_id(content_id)

    def torrent(self, content_id: str) -> Torrent:
        cid = parse_content_id(content_id)
        path = self.content_dir(cid) / f"{cid}.torrent"
        if not path.is_file():
            raise VaultError(f"content {cid[:16]}… is not in this vault")
        torrent = Torrent.load(path)
        if torrent.content_id != cid:
            raise VaultError(f"the vault's torrent for {cid[:16]}… is damaged (its info-hash differs)")
        return torrent

    def ciphertext_path(self, content_id: str) -> Path:
        torrent = self.torrent(content_id)
        return self.content_dir(content_id) / torrent.name

    @contextmanager
    def workdir(self) -> Iterator[Path]:
        """A private scratch directory, removed unless its content was adopted."""
        tmp_root = self.home / "tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=tmp_root))
        except OSError as exc:
            raise StorageError(describe_os_error(exc, tmp_root)) from None
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def adopt(self, workdir: Path, torrent: Torrent, role: str) -> Path:
        """Move a finished content directory into place in one rename, then index it."""
        target = self.content_dir(torrent.content_id)
        if target.exists():
            raise VaultError(f"content {torrent.content_id[:16]}… is already in this vault")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fsync_directory(workdir)
            os.rename(workdir, target)
            fsync_directory(target.parent)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, target)) from None
        try:
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO contents VALUES (?, ?, ?, ?, ?)",
                    (torrent.content_id, role, torrent.piece_count, torrent.length, time.time()),
                )
        except StorageError:
            os.rename(target, workdir)  # not indexed: not in the vault either (the caller drops its work)
            raise
        return target

    def _sweep_abandoned_work(self) -> None:
        """Remove scratch directories left by processes that died mid-way."""
        tmp_root = self.home / "tmp"
        if not tmp_root.is_dir():
            return
        for entry in tmp_root.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


ROTATION_SUFFIX = ".next"  # a secret sealed under the next data key, during a passphrase change


class UnlockedVault(Vault):
    """A vault opened with its passphrase: secrets can be read and stored."""

    def __init__(self, home: Path, data_key: DataKey) -> None:
        super().__init__(home)
        self._data_key = data_key

    def check_passphrase(self, passphrase: str) -> None:
        """Raise `WrongPassphrase` unless `passphrase` opens this vault (as slowly as an
        unlock: the key derivation is the point)."""
        if not hmac.compare_digest(DataKey.unwrap(self._read_part("vault.json"), passphrase).key, self._data_key.key):
            raise WrongPassphrase("the passphrase opens another vault")

    def identity(self) -> Identity:
        sealed = self._read_part("identity.sealed")
        return Identity.from_mnemonic(self._data_key.open(sealed, "identity").decode())

    def store_keyring(self, content_id: str, ring: KeyRing) -> None:
        cid = parse_content_id(content_id)
        payload = json.dumps({
            "nodes": [[n.height, n.index, n.key.hex()] for n in ring.nodes],
            "metadata_key": ring.metadata_key.hex() if ring.metadata_key else None,
        }).encode()
        write_atomic(self.home / "keys" / f"{cid}.sealed", self._data_key.seal(payload, f"keys {cid}"))

    def drop_keyring(self, content_id: str) -> None:
        """Forget the keys of a content that did not make it into the vault."""
        (self.home / "keys" / f"{parse_content_id(content_id)}.sealed").unlink(missing_ok=True)

    def keyring(self, content_id: str) -> KeyRing:
        """The keys this vault holds for a content. A content this identity created needs
        none kept: its keys derive from the creator seed and the manifest's salt (so a vault
        restored from the mnemonic opens and sells its catalogue once it has the torrent)."""
        cid = parse_content_id(content_id)
        path = self.home / "keys" / f"{cid}.sealed"
        if not path.is_file():
            ring = self._creator_keys(cid)
            if ring is None:
                raise VaultError(f"this vault holds no keys for {cid[:16]}…")
            self.store_keyring(cid, ring)
            return ring
        fields = json.loads(self._data_key.open(path.read_bytes(), f"keys {cid}"))
        nodes = tuple(TreeNode(h, j, bytes.fromhex(k)) for h, j, k in fields["nodes"])
        meta = fields.get("metadata_key")
        return KeyRing(nodes, bytes.fromhex(meta) if meta else None)

    def _creator_keys(self, cid: str) -> KeyRing | None:
        """The keys re-derived if this identity created `cid` (its torrent in the vault)."""
        try:
            torrent = self.torrent(cid)
        except VaultError:
            return None
        manifest, identity = torrent.manifest, self.identity()
        if manifest.creator_address != bytes.fromhex(identity.wallet_address[2:]):
            return None
        keys = ContentKeys.derive(identity.creator_seed, manifest.salt, manifest.slice_count)
        ring = KeyRing((keys.tree_root,), keys.metadata_key)
        try:
            verify_all_keys(torrent, ring)
        except WrongKeyError:
            raise VaultError(f"content {cid[:16]}… names this identity as its creator but its keys do not derive "
                             "from this seed (restored with another BIP-39 passphrase?)") from None
        return ring

    def store_secret(self, name: str, secret: bytes) -> None:
        """Keep a small secret (a purchase's one-time key, say) sealed under the data key."""
        write_atomic(self._secret_path(name), self._data_key.seal(secret, f"secret {name}"))

    def secret(self, name: str) -> bytes | None:
        path = self._secret_path(name)
        return self._data_key.open(path.read_bytes(), f"secret {name}") if path.is_file() else None

    def _secret_path(self, name: str) -> Path:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise VaultError(f"not a secret's name: {name!r}")
        return self.home / "secrets" / f"{name}.sealed"

    def change_passphrase(self, new_passphrase: str, kdf: KdfParams = KdfParams()) -> None:
        """A new passphrase and a new data key: every secret is sealed again, so a copy of
        the old key file with the old passphrase opens nothing written from now on.

        Crash-safe: the secrets are first sealed under the new key beside the old ones
        (`.next`), then the new key file replaces the old one (the commit), then the
        `.next` files replace theirs. Unlocking finishes or discards a rotation cut short."""
        if not new_passphrase:
            raise VaultError("the new passphrase is empty")
        new_key = DataKey.generate()
        for path, purpose in self._sealed_files():
            plaintext = self._data_key.open(path.read_bytes(), purpose)
            write_atomic(path.with_name(path.name + ROTATION_SUFFIX), new_key.seal(plaintext, purpose))
        write_atomic(self.home / "vault.json", new_key.wrap(new_passphrase, kdf))  # the commit
        self._data_key = new_key
        self._finish_rotation()

    def _sealed_files(self) -> list[tuple[Path, str]]:
        files = [(self.home / "identity.sealed", "identity")]
        keys = self.home / "keys"
        if keys.is_dir():
            files += [(p, f"keys {p.name.removesuffix('.sealed')}") for p in sorted(keys.glob("*.sealed"))]
        secrets = self.home / "secrets"
        if secrets.is_dir():
            files += [(p, f"secret {p.name.removesuffix('.sealed')}") for p in sorted(secrets.glob("*.sealed"))]
        return files

    def _finish_rotation(self) -> None:
        """`.next` files left by a rotation: ours if the current key opens them (the key
        file was committed: put them in place), else the abandoned attempt's (drop them)."""
        for path, purpose in self._sealed_files():
            pending = path.with_name(path.name + ROTATION_SUFFIX)
            if not pending.exists():
                continue
            try:
                self._data_key.open(pending.read_bytes(), purpose)
            except VaultError:
                pending.unlink()
                continue
            os.replace(pending, path)
        fsync_directory(self.home)


def _keep_private(home: Path) -> None:
    """The vault's folder is its owner's alone (the index, ledgers and audit logs say who
    paid whom): a home made before, or by hand, with wider rights is narrowed to 0700."""
    try:
        if home.stat().st_mode & 0o077:
            os.chmod(home, 0o700)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, home)) from None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
