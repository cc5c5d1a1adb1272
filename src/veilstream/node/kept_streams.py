"""The streams the user opened on the node, kept in `$VEIL_HOME/node/streams.json` so that a
restart — after a stop or a `kill -9` — opens each again and it goes on from the slices it
holds, until the user stops it.

A resumed stream spends no more than what its budget had left: the budget counts every
cheque this vault signed for the content since the stream was opened, read from the cheque
ledger (`watching.paid_for`) (written before a cheque leaves), so a crash between a payment and any note of it
cannot hand the stream its budget twice.

    {"<content id>": {"content": "magnet:?…", "budget_wei": 5000, "signed_at_open_wei": 1000}}
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from veilstream.atomic import replace_file

log = logging.getLogger("veilstream.node")

STREAMS_FILE = Path("node") / "streams.json"


@dataclass(frozen=True)
class KeptStream:
    content: str  # as the user gave it (a magnet carries the peers and trackers to ask)
    budget_wei: int
    signed_at_open_wei: int  # what the vault had signed for the content when the stream opened

    def budget_left(self, signed_now_wei: int) -> int:
        return max(0, self.budget_wei - max(0, signed_now_wei - self.signed_at_open_wei))


class KeptStreams:
    def __init__(self, home: Path) -> None:
        self.path = Path(home) / STREAMS_FILE
        self.streams: dict[str, KeptStream] = {}
        try:
            data = json.loads(self.path.read_text())
            for cid, fields in data.items():
                self.streams[cid] = KeptStream(str(fields["content"]), int(fields["budget_wei"]),
                                               int(fields["signed_at_open_wei"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s is unreadable (%s): no stream is resumed", self.path, exc)
            self.streams = {}

    def keep(self, content_id: str, stream: KeptStream) -> None:
        self.streams[content_id] = stream
        self._write()

    def forget(self, content_id: str) -> bool:
        if self.streams.pop(content_id, None) is None:
            return False
        self._write()
        return True

    def _write(self) -> None:
        replace_file(self.path, json.dumps({cid: asdict(s) for cid, s in self.streams.items()}).encode(), mode=0o600)
