"""Crash reports: when the node dies of something no error message foresaw, what happened
is written to `$VEIL_HOME/logs/crashes/` (0600, the newest `REPORTS_KEPT` kept) so that the
user can read it or pass it on. Nothing leaves the machine unless the user names a URL
(`[node] crash_report_url`), and then only that report, by one POST.

A report holds the traceback and the versions, scrubbed of what could identify or rob the
user: the vault's secrets (passphrase, mnemonic, keys, the API token), content and event
ids and other long hex strings, wallet addresses, IP addresses, Nostr keys, and the vault's
own path.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from veilstream import __version__
from veilstream.atomic import replace_file

log = logging.getLogger("veilstream.node")

CRASH_DIR = Path("logs") / "crashes"
REPORTS_KEPT = 20
SEND_TIMEOUT_S = 10.0

_PATTERNS = (  # order matters: an address is hex too; no word boundaries, an id may sit inside a word
    (re.compile(r"0x[0-9a-fA-F]{40}(?![0-9a-fA-F])"), "[address]"),
    (re.compile(r"(?:0x)?[0-9a-fA-F]{32,}"), "[hex]"),
    (re.compile(r"(?:npub|nsec|note|nevent|nprofile)1[02-9ac-hj-np-z]{20,}"), "[nostr]"),
    (re.compile(r"(?:\d+\.){3}\d+(?::\d+)?"), "[ip]"),
    (re.compile(r"\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\](?::\d+)?"), "[ip]"),
    (re.compile(r"magnet:\?\S+"), "[magnet]"),
)


def scrub(text: str, secrets: list[str], home: Path | None = None) -> str:
    for secret in sorted((s for s in secrets if s and len(s) >= 8), key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    if home is not None:
        text = text.replace(str(home), "$VEIL_HOME")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def write_report(home: Path, error: BaseException, secrets: list[str], command: str) -> Path:
    """The report of `error` under the vault, scrubbed; its path."""
    text = "".join(traceback.format_exception(error))
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "veilstream": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "error": scrub(f"{type(error).__name__}: {error}", secrets, home),
        "traceback": scrub(text, secrets, home),
    }
    folder = Path(home) / CRASH_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now_ns = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now_ns // 1_000_000_000))
    path = folder / f"crash-{stamp}-{now_ns % 1_000_000_000:09d}.json"  # names sort as the reports came
    replace_file(path, json.dumps(report, indent=1).encode(), mode=0o600)
    for old in sorted(folder.glob("crash-*.json"))[:-REPORTS_KEPT]:
        old.unlink(missing_ok=True)
    return path


def send_report(path: Path, url: str) -> str | None:
    """POST the report at `path` to the user's `url`; None when it went, else why not."""
    request = urllib.request.Request(url, data=path.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as response:
            response.read()
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
