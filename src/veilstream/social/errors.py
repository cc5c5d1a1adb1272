"""Errors of the social layer."""

from __future__ import annotations

from veilstream.errors import VeilError


class SocialError(VeilError):
    """A social action failed for a reason the user can act on (bad input, no relay, ...)."""


class InvalidEvent(SocialError):
    """An event was refused; `reason` is a short machine-friendly cause, logged on refusal."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
