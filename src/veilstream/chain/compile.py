"""Rebuild contracts/artifacts.json from the Vyper sources:

    python -m veilstream.chain.compile
"""

from __future__ import annotations

import sys

from veilstream.chain.artifacts import ARTIFACTS_PATH, build_all, write_artifacts


def main() -> None:
    write_artifacts(build_all())
    print(f"wrote {ARTIFACTS_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
