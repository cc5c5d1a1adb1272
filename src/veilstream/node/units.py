"""Amounts as a person reads them."""

from __future__ import annotations

from decimal import Decimal

WEI_PER_ETHER = 10**18


def format_ether(wei: int) -> str:
    text = f"{Decimal(wei) / WEI_PER_ETHER:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def format_gas(wei: int) -> str:
    """An estimate of gas, to two significant digits: ~0.00015 ETH."""
    drop = max(0, len(str(wei)) - 2)
    return "~" + format_ether(round(wei, -drop) if drop else wei)
