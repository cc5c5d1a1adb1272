"""The node's own settings pack (the `[node]` table of config.toml)."""

from __future__ import annotations

from dataclasses import dataclass

from veilstream.errors import VeilError

MIB = 1024 * 1024


class NodeSettingsError(VeilError):
    exit_code = 2


@dataclass(frozen=True)
class NodeSettings:
    # The API acts for this machine's user only: it listens on loopback unless told otherwise.
    api_host: str = "127.0.0.1"
    # Fixed, so the app's address survives restarts (a bookmark, the login link); 0: any free port.
    api_port: int = 8467
    chain_rpc_url: str = ""  # an EVM JSON-RPC endpoint; empty: the vault's embedded chain
    chain_deployment: str = ""  # the deployment file (where the contracts are) for chain_rpc_url
    trackers: tuple[str, ...] = ()  # HTTP trackers every content is announced to
    # ...and the machine's local tracker (node/local_tracker.py), run by the first node up
    local_tracker: bool = True
    log_max_bytes: int = 10 * MIB  # node.log is rotated past this...
    log_files_kept: int = 5  # ...keeping this many old ones: 60 MiB at most
    # A signal stops the node within this: it stops taking peers, cashes what is owed and
    # flushes; what the chain did not take by then stays in the ledger for the next run.
    stop_timeout_s: float = 10.0
    # A media request that gets no verified slice for this long answers 504 rather than hang
    # (a player retries; the BEP 3 peer timeout is two minutes, a stream window is seconds).
    media_stall_timeout_s: float = 60.0
    poll_interval_s: float = 0.25  # how often the node looks after grants, the chain watch and due cheques
    # Live events (/api/v1/events) kept for clients that reconnect; one further behind resyncs
    # from the snapshot (qBittorrent keeps a client's last state the same way, per `rid`).
    events_kept: int = 1000
    # An idle event stream sends a comment this often, so proxies and browsers keep it open.
    events_keepalive_s: float = 15.0
    # The browser app's sessions (node/session.py): they end after this long unused, and
    # this long after the unlock whatever happens; at most this many at once.
    session_idle_s: float = 12 * 3600.0
    session_max_s: float = 7 * 24 * 3600.0
    sessions_kept: int = 16
    # Wrong passphrases in a row before each further try waits (doubling from the base delay).
    unlock_free_failures: int = 5
    unlock_base_delay_s: float = 1.0
    unlock_max_delay_s: float = 300.0
    # Crash reports stay in $VEIL_HOME/logs/crashes; set an http(s) URL of your choice to have
    # each one POSTed there as well (scrubbed as on disk). Empty: nothing is ever sent.
    crash_report_url: str = ""
    # A file uploaded to publish (POST /api/v1/contents) may be this large at most: it is
    # written to the vault's disk (twice, for a remux) before it is encrypted beside it.
    upload_max_bytes: int = 16 * 1024 * MIB

    def __post_init__(self) -> None:
        if not self.api_host:
            raise NodeSettingsError("api_host must name an address to listen on, such as 127.0.0.1")
        if self.stop_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise NodeSettingsError("stop_timeout_s and poll_interval_s must be positive numbers of seconds")
        if self.events_kept < 1 or self.events_keepalive_s <= 0:
            raise NodeSettingsError("events_kept must be at least 1 and events_keepalive_s a positive number of seconds")
        if min(self.session_idle_s, self.session_max_s, self.unlock_base_delay_s, self.unlock_max_delay_s) <= 0:
            raise NodeSettingsError("session_idle_s, session_max_s, unlock_base_delay_s and unlock_max_delay_s must be "
                                    "positive numbers of seconds")
        if self.sessions_kept < 1 or self.unlock_free_failures < 0:
            raise NodeSettingsError("sessions_kept must be at least 1 and unlock_free_failures at least 0")
        if self.crash_report_url and not self.crash_report_url.startswith(("http://", "https://")):
            raise NodeSettingsError(f"crash_report_url = {self.crash_report_url!r}: an http:// or https:// URL, "
                                    "or empty to send nothing")
        if self.upload_max_bytes < 1:
            raise NodeSettingsError("upload_max_bytes must be at least 1")
        if self.log_max_bytes < 4096 or self.log_files_kept < 1:
            raise NodeSettingsError("log_max_bytes must be at least 4096 and log_files_kept at least 1")
