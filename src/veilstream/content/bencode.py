"""Bencoding (BEP 3), strict.

The content id is a hash over bencoded bytes, so the decoder accepts only the canonical
form: sorted unique dict keys, no leading zeros, no `-0`, nothing after the value. Every
bad input raises `BencodeError`; nesting and size are bounded so hostile input costs little.
"""

from __future__ import annotations

from typing import Union

Value = Union[int, bytes, list["Value"], dict[bytes, "Value"]]

MAX_DEPTH = 64  # real torrents nest < 10 deep; bounds recursion on hostile input
MAX_INT_DIGITS = 64  # a 64-digit integer is far past any length or time we use


class BencodeError(ValueError):
    """The bytes are not canonical bencoding."""


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):  # bool is an int subclass; never a bencode value
        raise TypeError("cannot bencode a bool")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, str):
        raw = value.encode()
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {(k.encode() if isinstance(k, str) else bytes(k)): v for k, v in value.items()}
        if len(keys) != len(value):
            raise TypeError("duplicate dict key after encoding")
        for key in sorted(keys):
            _encode(key, out)
            _encode(keys[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    value, end = decode_prefix(data, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} trailing bytes after the value")
    return value


def decode_prefix(data: bytes, start: int = 0) -> tuple[Value, int]:
    """Decode one value starting at `start`; return it and the offset just past it."""
    try:
        return _decode(memoryview(data), start, 0)
    except IndexError:
        raise BencodeError("truncated") from None


def _decode(data: memoryview, i: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    tag = data[i]
    if tag == ord("i"):
        end = _find(data, ord("e"), i + 1, MAX_INT_DIGITS + 1)
        return _parse_int(bytes(data[i + 1 : end]), allow_negative=True), end + 1
    if ord("0") <= tag <= ord("9"):
        colon = _find(data, ord(":"), i, MAX_INT_DIGITS)
        length = _parse_int(bytes(data[i:colon]), allow_negative=False)
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("string runs past the end")
        return bytes(data[start : start + length]), start + length
    if tag == ord("l"):
        items: list[Value] = []
        i += 1
        while data[i] != ord("e"):
            item, i = _decode(data, i, depth + 1)
            items.append(item)
        return items, i + 1
    if tag == ord("d"):
        result: dict[bytes, Value] = {}
        previous: bytes | None = None
        i += 1
        while data[i] != ord("e"):
            if not ord("0") <= data[i] <= ord("9"):
                raise BencodeError("dict key is not a string")
            key, i = _decode(data, i, depth + 1)
            assert isinstance(key, bytes)
            if previous is not None and key <= previous:
                raise BencodeError("dict keys are not sorted and unique")
            result[key], i = _decode(data, i, depth + 1)
            previous = key
        return result, i + 1
    raise BencodeError(f"unexpected byte {tag:#04x} at offset {i}")


def _find(data: memoryview, byte: int, start: int, limit: int) -> int:
    for j in range(start, min(start + limit + 1, len(data))):
        if data[j] == byte:
            return j
    if start + limit + 1 > len(data):
        raise BencodeError("truncated")
    raise BencodeError("number too long")


def _parse_int(raw: bytes, allow_negative: bool) -> int:
    digits = raw[1:] if allow_negative and raw.startswith(b"-") else raw
    if not digits or not digits.isdigit():
        raise BencodeError(f"not an integer: {raw[:20]!r}")
    if digits != b"0" and digits.startswith(b"0"):
        raise BencodeError("integer with a leading zero")
    if raw == b"-0":
        raise BencodeError("negative zero")
    return int(raw)
