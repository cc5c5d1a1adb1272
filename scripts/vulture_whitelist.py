"""Names vulture takes for dead code that are not: called by a framework or a library, or
read from data rather than from code. Run `vulture` (settings in pyproject.toml).

Only such false positives belong here. Code that nothing calls is removed, not listed."""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# Typer: the app calls its commands and its callback.
_._options  # node/cli/__init__.py: the app's --version callback
_.wallet_balance
_.wallet_deposit
_.withdraw_request
_.withdraw_execute
_.withdraw_cancel
_.wallet_pending
_.wallet_cash
_.wallet_lanes
_.wallet_claim
_.wallet_history
_.wallet_faucet
_.chain_info
_.chain_advance

# asyncio calls its protocols' callbacks, and __aexit__ takes the exception triple.
_.datagram_received  # swarm/dht.py
_.get_buffer  # swarm/node.py (BufferedProtocol)
_.sizehint
_.buffer_updated
_.pause_writing
_.resume_writing
_.exc_info  # social: async context managers' __aexit__(*exc_info)

# Enum members and record fields named by data (the contracts' codes, files, rows, wire).
_.CHACHA20_POLY1305  # content/crypto.py: the suite a manifest names
_.NONE  # chain/client.py GrantState: the contract's state 0
_.source_sha256  # chain/artifacts.py: the field of artifacts.json
_.added_at  # vault/store.py HeldContent: a column of the vault's index
_.challenge  # social/protocol.py AuthRequested: the relay's NIP-42 challenge

# Attributes set for libtorrent and PyAV, which read them.
_.ti  # lt.add_torrent_params
_.pix_fmt  # av video streams
_.bit_rate

# pytest runs these: an autouse fixture, and fuzz tests bound as module attributes.
_.local_relay_of_this_worker
_.pytest_collection_modifyitems  # tests/node/conftest.py: a pytest hook

# FastAPI calls the routes, middleware and exception handlers it was given (node/api.py).
_.guard
_.user_error
_.bad_request
_.get_limits  # node/routes/limits.py
_.set_limits
_.set_content_limits
_.session_state  # node/routes/session.py
_.get_settings  # node/routes/settings.py
_.change_setting
_.health
_.node_status
_.list_streams
_.publish_state  # node/routes/contents.py
_.show  # node/cli/config_cmds.py: `veil config show` (typer)
# pydantic calls the field validators of the API's request models (node/routes/feed.py).
_._title
_._servers
_._emoji
_._text
_._key
_._picture
# Starlette reads a path convertor's regex and calls to_string (node/routes/blobs.py).
_.regex
_.to_string

# Library protocols: logging reads exc_text; uvicorn calls capture_signals and reads should_exit.
_.exc_text
_.capture_signals
_.should_exit
# prometheus_client's registry calls a custom collector's describe and collect (node/routes/metrics.py).
_.describe
_.collect
# http.server calls a handler's do_POST and log_message (tests/node/test_crash.py).
_.do_POST
_.log_message
