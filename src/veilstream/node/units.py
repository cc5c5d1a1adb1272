"""Amounts as a person reads them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from veilstream.chain import ChainError
from veilstream.errors import VeilError

SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "k": 1 << 10, "kb": 1000, "mib": 1 << 20, "m": 1 << 20, "mb": 1000**2,
              "gib": 1 << 30, "g": 1 << 30, "gb": 1000**3}
WEI_PER_ETHER = 10**18
UNITS = {"wei": 1, "gwei": 10**9, "eth": WEI_PER_ETHER, "ether": WEI_PER_ETHER}


def parse_amount(text: str) -> int:
    """'0.5' (ether), '0.5eth', '20gwei', '1000wei' -> wei."""
    raw = text.strip().lower().replace("_", "")
    unit = "eth"
    for name in sorted(UNITS, key=len, reverse=True):
        if raw.endswith(name):
            raw, unit = raw[: -len(name)].strip(), name
            break
    try:
        value = Decimal(raw) * UNITS[unit]
    except InvalidOperation:
        raise ChainError(f"{text!r} is not an amount: write e.g. 0.5, 0.5eth, 20gwei or 1000wei") from None
    if value < 0:
        raise ChainError(f"{text!r} is negative: an amount is 0 or more")
    if value != value.to_integral_value():
        raise ChainError(f"{text!r} is not a whole number of wei")
    return int(value)


def format_ether(wei: int) -> str:
    text = f"{Decimal(wei) / WEI_PER_ETHER:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def format_gas(wei: int) -> str:
    """An estimate of gas, to two significant digits: ~0.00015 ETH."""
    drop = max(0, len(str(wei)) - 2)
    return "~" + format_ether(round(wei, -drop) if drop else wei)


class SizeError(VeilError):
    """Text that is not an amount of bytes."""


def parse_size(text: str) -> int:
    """'1MiB', '256KiB', '500kb' or a byte count -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not match or match[2].lower() not in SIZE_UNITS:
        raise SizeError(f"not a size: {text!r} (try 1MiB, 256KiB or a byte count)")
    return int(match[1]) * SIZE_UNITS[match[2].lower()]


def format_size(n: int) -> str:
    """Bytes as a person reads them: 512 B, 256 KiB, 1.5 MiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    return f"{n} B"
