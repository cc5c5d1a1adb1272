"""Local storage: ciphertext, torrents, an index, and secrets encrypted at rest."""

from veilstream.atomic import disk_is_full
from veilstream.vault.atomic import StorageError, atomic_writer, user_file_mode, write_atomic
from veilstream.vault.lock import VaultBusy
from veilstream.vault.output import OutputExists, ResumableOutput
from veilstream.vault.sealing import KdfParams, VaultError, WrongPassphrase
from veilstream.vault.store import HeldContent, UnlockedVault, Vault

__all__ = [
    "HeldContent", "KdfParams", "OutputExists", "ResumableOutput", "StorageError", "UnlockedVault", "Vault", "VaultBusy",
    "VaultError", "WrongPassphrase", "atomic_writer", "disk_is_full", "user_file_mode", "write_atomic",
]
