"""Publish throughput against raw AES-256-GCM + SHA-256 over the same bytes, same run.

    .venv/bin/python bench/publish.py [--size-mib 1024] [--runs 3]

Each publish runs in a fresh child process so its peak RSS is its own. The reference reads
the same file in slice-sized chunks and does only AES-256-GCM (one call per slice) and
SHA-256 (one call per 16 KiB block), single-threaded: what publishing cannot avoid.
Ratio = our MiB/s ÷ raw MiB/s; medians over the runs. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SLICE = 1 << 20
BLOCK = 16 * 1024

CHILD = r"""
import resource, sys, time
from pathlib import Path
from veilstream.content import PublishOptions, publish_file
from veilstream.identity import Identity
creator = Identity.from_mnemonic("leader monkey parrot ring guide accident before fence cannon height naive bean")
start = time.perf_counter()
publish_file(Path(sys.argv[1]), Path(sys.argv[2]), creator, PublishOptions(slice_size=int(sys.argv[3])))
elapsed = time.perf_counter() - start
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_input(path: Path, size: int) -> None:
    chunk = os.urandom(SLICE)
    with open(path, "wb") as f:
        for i in range(size // SLICE):
            f.write(chunk[i % 7 :] + chunk[: i % 7])  # distinct slices, cheap to make
        f.write(os.urandom(size % SLICE))


def raw_seconds(path: Path) -> float:
    key, nonce, plain = os.urandom(32), bytes(12), SLICE - 16
    buffer = bytearray(plain)
    view = memoryview(buffer)
    start = time.perf_counter()
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            sealed = AESGCM(key).encrypt(nonce, view[:n], b"")
            sealed_view = memoryview(sealed)
            for i in range(0, len(sealed), BLOCK):
                sha256(sealed_view[i : i + BLOCK]).digest()
    return time.perf_counter() - start


def publish_seconds(path: Path, out: Path) -> tuple[float, float]:
    for old in out.iterdir():
        old.unlink()
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), str(SLICE)],
                            capture_output=True, text=True, check=True)
    seconds, rss = result.stdout.split()
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the input and output (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        source, out = Path(tmp) / "input.bin", Path(tmp) / "out"
        out.mkdir()
        make_input(source, size)
        raw_mib_s, ours_mib_s, peaks = [], [], []
        for run in range(args.runs):  # interleaved so drift affects both alike
            raw_mib_s.append(size / 2**20 / raw_seconds(source))
            seconds, rss = publish_seconds(source, out)
            ours_mib_s.append(size / 2**20 / seconds)
            peaks.append(rss)
            print(f"run {run + 1}: publish {ours_mib_s[-1]:.0f} MiB/s, raw {raw_mib_s[-1]:.0f} MiB/s, "
                  f"ratio {ours_mib_s[-1] / raw_mib_s[-1]:.2f}, peak RSS {rss:.0f} MiB", file=sys.stderr)
    mib_s, raw = statistics.median(ours_mib_s), statistics.median(raw_mib_s)
    print(json.dumps({"bench": "publish", "size_mib": args.size_mib, "runs": args.runs, "mib_s": round(mib_s, 1),
                      "raw_mib_s": round(raw, 1), "ratio": round(mib_s / raw, 3), "peak_rss_mib": round(max(peaks), 1)}))


if __name__ == "__main__":
    main()
