"""Every tunable of the market, in one place (libtorrent's settings-pack idea)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarketSettings:
    credit_window_slices: int = 2  # DESIGN.md: what a party risks per relationship
    cash_threshold_wei: int = 10**15  # a payee cashes once its uncashed cheques pass this
    key_session_ttl_s: int = 3_600  # a viewer's ephemeral key-session key expires after this
    key_lookahead_slices: int = 32  # keys held ahead of the playhead (asked for in batches of half)
    key_batch_wait_s: float = 0.02  # a waiting player's short batch waits this long for payments to widen it
    audit_anchor_every_entries: int = 1_000  # the key agent anchors its audit-log head this often
    max_slices_per_key_request: int = 4_096  # bounds the work one request can ask of a key agent
