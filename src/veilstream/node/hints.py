"""Where to find peers, as a person or a magnet writes it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from veilstream.errors import VeilError


class AddressError(VeilError):
    """Not a HOST:PORT."""


def parse_host_port(text: str, *, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise AddressError(f"{what} must be HOST:PORT (such as 127.0.0.1:6881), not {text!r}")
    return host.strip("[]"), int(port)


def magnet_hints(text: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Trackers (`tr`) and peer hints (`x.pe`, BEP 9) carried by a magnet link."""
    if not text.strip().lower().startswith("magnet:"):
        return [], []
    query = parse_qs(urlsplit(text.strip()).query)
    peers = []
    for hint in query.get("x.pe", []):
        try:
            peers.append(parse_host_port(hint, what="x.pe"))
        except AddressError:
            continue
    return query.get("tr", []), peers
