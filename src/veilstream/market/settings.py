"""Every tunable of the market, in one place (libtorrent's settings-pack idea)."""

from __future__ import annotations

from dataclasses import dataclass

from veilstream.market.errors import MarketError


@dataclass(frozen=True)
class MarketSettings:
    credit_window_slices: int = 2  # DESIGN.md: what a party risks per relationship
    cash_threshold_wei: int = 10**15  # a payee cashes once its uncashed cheques pass this
    # A batch of cheques (or a claim) is sent only if what it brings this account is at least
    # this many times its gas at the current gas price: gas then takes at most a tenth. Waiting
    # loses nothing, as a batch only grows and a deadline (a lane's time, a withdrawal, a share
    # cut) has the cheques it concerns cashed whatever the gas; what is held back stays in the
    # ledger for a later run or `veil wallet cash`. 0: whatever the gas.
    min_cash_gain_ratio: float = 10.0
    key_session_ttl_s: int = 3_600  # a viewer's ephemeral key-session key expires after this
    key_session_renew_s: int = 120  # a viewer renews its session this long before it expires
    # A viewer fetches (and so pays for) at most this many slices past the keys it holds: what
    # it risks to a key agent that stops answering (the seeders' and agent's credit windows
    # are the other side's risk).
    pay_ahead_slices: int = 32
    key_lookahead_slices: int = 32  # keys held ahead of the playhead (asked for in batches of half)
    key_batch_wait_s: float = 0.02  # a waiting player's short batch waits this long for payments to widen it
    key_request_timeout_s: float = 5.0  # a key agent that answers nothing in this long is passed over
    key_refusals_while_paid: int = 5  # refusals in a row, though paid for, before an agent is passed over
    key_refusal_backoff_s: float = 0.2  # a refused key request is asked again this long × the refusals so far
    no_key_agent_timeout_s: float = 10.0  # a player waiting for a key with no agent to ask gives up after this
    audit_anchor_every_entries: int = 1_000  # the key agent anchors its audit-log head this often
    max_slices_per_key_request: int = 4_096  # bounds the work one request can ask of a key agent
    # A viewer holds a lane of its deposit for each payee (the Wallet's `open_lanes`) this
    # long; a payee stops counting on a lane this margin before its time and cashes by then.
    lane_duration_s: int = 24 * 3_600
    lane_cash_margin_s: int = 1_800
    lane_gather_s: float = 0.05  # the first lanes wait this long for peers met at start, to open in one transaction
    cover_lookups_per_connection: int = 64  # chain lookups of lanes one peer can cost a payee
    max_idle_books: int = 10_000  # past this many viewers' books, those of viewers gone are forgotten
    # A cold cheque signature costs ~3× a warm one (libsecp256k1's tables leave the cache as
    # slices stream through): each cold one also signs the next this many cheques to the same
    # payee for the same content and step, so the stream does not wait on signing (Payer's
    # `sign_ahead`; unused ones are dropped, and never pass the budget); 0: sign on demand.
    cheques_signed_ahead: int = 7

    def __post_init__(self) -> None:
        value = self.cheques_signed_ahead
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MarketError("cheques_signed_ahead must be a whole number, 0 or more")
