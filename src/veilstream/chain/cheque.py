"""Cheques: EIP-712 signed promises `(viewer, contentId, seeder, cumulativeAmount)`.

One cumulative counter runs per (viewer, content, seeder): each new cheque replaces the
last, so a replayed or stale cheque is worth nothing, and the payee only ever needs to
keep the latest. The domain binds a cheque to one chain id and one Wallet contract, so a
cheque signed for one deployment is void on every other.

Signing goes through eth-account's structured-data path. Verification computes the same
digest directly and recovers the signer with libsecp256k1 (coincurve): it is the hot path
of every seeder and key agent (one check per slice served), and it accepts exactly what
the contract accepts (v of 27 or 28, low s), no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import coincurve
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from veilstream.chain.errors import ChequeError

try:  # safe-pysha3 (C, pulled in by eth-tester[py-evm]): ~8x faster than pycryptodome here
    from sha3 import keccak_256 as _keccak_256

    def keccak(data: bytes) -> bytes:
        return _keccak_256(data).digest()

except ImportError:  # pragma: no cover
    from eth_hash.auto import keccak

DOMAIN_NAME = "Veilstream Wallet"
DOMAIN_VERSION = "1"
EIP712_DOMAIN_TYPE = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
CHEQUE_TYPE = "Cheque(address viewer,bytes32 contentId,address seeder,uint256 cumulativeAmount)"
CHEQUE_TYPEHASH = keccak(CHEQUE_TYPE.encode())
EIP712_DOMAIN_TYPEHASH = keccak(EIP712_DOMAIN_TYPE.encode())

EIP712_TYPES = {
    "Cheque": [
        {"name": "viewer", "type": "address"},
        {"name": "contentId", "type": "bytes32"},
        {"name": "seeder", "type": "address"},
        {"name": "cumulativeAmount", "type": "uint256"},
    ]
}

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# EIP-2: of the two valid s values, only the low one is accepted (as the contract does).
SECP256K1_HALF_N = SECP256K1_N // 2
UINT256_MAX = 2**256 - 1
SIGNATURE_BYTES = 65
# viewer (20) | content id (32) | seeder (20) | cumulative amount (32) | r s v (65)
WIRE_BYTES = 20 + 32 + 20 + 32 + SIGNATURE_BYTES
ZERO_CONTENT_ID = bytes(32)


def content_id_bytes(value: bytes | str) -> bytes:
    """A content id as 32 bytes, from bytes or 64 hex digits (with or without 0x)."""
    if isinstance(value, str):
        text = value.removeprefix("0x")
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ChequeError(f"content id {text!r} is not hex") from None
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ChequeError("a content id is 32 bytes (64 hex digits)")
    return bytes(value)


def checksum_address(value: str | bytes, what: str = "address") -> str:
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise ChequeError(f"{what} must be 20 bytes")
        return _checksummed(bytes(value))
    if not isinstance(value, str) or not _is_address(value):
        raise ChequeError(f"{what} {value!r} is not an EVM address")
    return _checksummed(value)


# Every cheque names the same few addresses again and again (one cheque per slice), and
# EIP-55 checksumming costs a keccak each time: remember the answers.
_checksummed = lru_cache(maxsize=4096)(to_checksum_address)
_is_address = lru_cache(maxsize=4096)(is_address)


def _word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


@dataclass(frozen=True)
class Cheque:
    """The signed fields. `cumulative_amount` is in wei, the total ever owed to `seeder`
    by `viewer` for `content_id` (the zero id: a direct payment to `seeder`)."""

    viewer: str
    content_id: bytes
    seeder: str
    cumulative_amount: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "viewer", checksum_address(self.viewer, "viewer"))
        object.__setattr__(self, "seeder", checksum_address(self.seeder, "seeder"))
        object.__setattr__(self, "content_id", content_id_bytes(self.content_id))
        amount = self.cumulative_amount
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= UINT256_MAX:
            raise ChequeError("a cheque amount is a whole number of wei in [0, 2**256)")

    @property
    def key(self) -> tuple[str, bytes, str]:
        """The relationship a cheque counts for: newer cheques replace older ones."""
        return (self.viewer, self.content_id, self.seeder)

    def struct_hash(self) -> bytes:
        return keccak(
            CHEQUE_TYPEHASH
            + _word(self.viewer)
            + self.content_id
            + _word(self.seeder)
            + self.cumulative_amount.to_bytes(32, "big")
        )

    def typed_message(self) -> dict:
        return {
            "viewer": self.viewer,
            "contentId": self.content_id,
            "seeder": self.seeder,
            "cumulativeAmount": self.cumulative_amount,
        }


@dataclass(frozen=True)
class SignedCheque:
    cheque: Cheque
    signature: bytes  # r (32) | s (32) | v (1, 27 or 28)

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes | bytearray) or len(self.signature) != SIGNATURE_BYTES:
            raise ChequeError("a cheque signature is 65 bytes (r, s, v)")
        object.__setattr__(self, "signature", bytes(self.signature))

    @property
    def v(self) -> int:
        return self.signature[64]

    @property
    def r(self) -> bytes:
        return self.signature[:32]

    @property
    def s(self) -> bytes:
        return self.signature[32:64]

    def to_bytes(self) -> bytes:
        c = self.cheque
        return (
            bytes.fromhex(c.viewer[2:])
            + c.content_id
            + bytes.fromhex(c.seeder[2:])
            + c.cumulative_amount.to_bytes(32, "big")
            + self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedCheque:
        if len(data) != WIRE_BYTES:
            raise ChequeError(f"a cheque on the wire is {WIRE_BYTES} bytes, got {len(data)}")
        cheque = Cheque(
            viewer=data[0:20],
            content_id=data[20:52],
            seeder=data[52:72],
            cumulative_amount=int.from_bytes(data[72:104], "big"),
        )
        return cls(cheque, data[104:])

    def to_json(self) -> dict:
        c = self.cheque
        return {
            "viewer": c.viewer,
            "content_id": c.content_id.hex(),
            "seeder": c.seeder,
            "cumulative_amount": str(c.cumulative_amount),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, doc: dict) -> SignedCheque:
        try:
            cheque = Cheque(
                viewer=doc["viewer"],
                content_id=doc["content_id"],
                seeder=doc["seeder"],
                cumulative_amount=_whole_wei(doc["cumulative_amount"]),
            )
            return cls(cheque, bytes.fromhex(doc["signature"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an amount of 1e999
            raise ChequeError(f"malformed cheque: {exc}") from None

    def as_contract_tuple(self) -> tuple:
        """The `Cheque` struct as Wallet.cash takes it."""
        c = self.cheque
        return (c.viewer, c.content_id, c.seeder, c.cumulative_amount, self.v, self.r, self.s)


def _whole_wei(value) -> int:
    """A cheque amount from JSON: a whole number, or its decimal digits (never a float)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("a cheque amount is a whole number of wei, written as digits")
    if isinstance(value, str) and not value.isdigit():
        raise ValueError(f"a cheque amount is digits, not {value[:40]!r}")
    return int(value)


@lru_cache(maxsize=16)
def _signing_key(secret: bytes) -> coincurve.PrivateKey:
    """A viewer signs a cheque per slice with the same key: build it (and its public key)
    once, not per cheque."""
    return coincurve.PrivateKey(secret)


@dataclass(frozen=True)
class ChequeDomain:
    """The EIP-712 domain of one Wallet deployment. Read `chain_id` from the chain."""

    chain_id: int
    wallet: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "wallet", checksum_address(self.wallet, "wallet"))
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int) or self.chain_id <= 0:
            raise ChequeError("chain id must be a positive integer")

    def typed_domain(self) -> dict:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.wallet,
        }

    @cached_property
    def separator(self) -> bytes:
        return keccak(
            EIP712_DOMAIN_TYPEHASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + self.chain_id.to_bytes(32, "big")
            + _word(self.wallet)
        )

    def digest(self, cheque: Cheque) -> bytes:
        return keccak(b"\x19\x01" + self.separator + cheque.struct_hash())

    def sign(self, account: LocalAccount, cheque: Cheque) -> SignedCheque:
        """Sign as `account`, which must be the cheque's viewer.

        Signs the EIP-712 digest directly with libsecp256k1 (coincurve): a viewer signs a
        cheque per slice, and eth-account's typed-data path costs ~1 ms each. libsecp256k1
        signs deterministically (RFC 6979) with a low s, as the contract requires; the
        tests check the result equals eth-account's `sign_typed_data`."""
        if account.address != cheque.viewer:
            raise ChequeError("only the viewer named in a cheque may sign it")
        recoverable = _signing_key(bytes(account.key)).sign_recoverable(self.digest(cheque), hasher=None)
        return SignedCheque(cheque, recoverable[:64] + bytes([27 + recoverable[64]]))

    def sign_with_eth_account(self, account: LocalAccount, cheque: Cheque) -> SignedCheque:
        """The same signature through eth-account's structured-data path (the reference)."""
        if account.address != cheque.viewer:
            raise ChequeError("only the viewer named in a cheque may sign it")
        message = encode_typed_data(
            domain_data=self.typed_domain(),
            message_types=EIP712_TYPES,
            message_data=cheque.typed_message(),
        )
        signed = Account.sign_message(message, account.key)
        signature = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])
        return SignedCheque(cheque, signature)

    def recover(self, signed: SignedCheque) -> str:
        """The signer's address; raises ChequeError for a signature the contract rejects."""
        return to_checksum_address(self._recover_raw(signed))

    def _recover_raw(self, signed: SignedCheque) -> bytes:
        v = signed.v
        if v not in (27, 28):
            raise ChequeError("cheque signature has an invalid v")
        r = int.from_bytes(signed.r, "big")
        s = int.from_bytes(signed.s, "big")
        if not (0 < r < SECP256K1_N) or not (0 < s <= SECP256K1_HALF_N):
            raise ChequeError("cheque signature is out of range or malleable (high s)")
        try:
            public = coincurve.PublicKey.from_signature_and_message(
                signed.signature[:64] + bytes([v - 27]),
                self.digest(signed.cheque),
                hasher=None,
            )
        except Exception:  # coincurve raises a bare Exception on an unrecoverable signature
            raise ChequeError("cheque signature does not recover to any key") from None
        return keccak(public.format(compressed=False)[1:])[-20:]

    def verify(self, signed: SignedCheque) -> None:
        """Raises ChequeError unless the cheque is signed by its viewer for this domain."""
        if self._recover_raw(signed) != bytes.fromhex(signed.cheque.viewer[2:]):
            raise ChequeError("cheque is not signed by its viewer for this wallet and chain")

    def is_valid(self, signed: SignedCheque) -> bool:
        try:
            self.verify(signed)
        except ChequeError:
            return False
        return True
