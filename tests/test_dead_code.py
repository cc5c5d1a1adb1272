"""No dead code: vulture (settings in pyproject.toml, false positives in
scripts/vulture_whitelist.py) finds nothing that nothing uses."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_vulture_finds_no_dead_code():
    result = subprocess.run([sys.executable, "-m", "vulture"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and not result.stdout.strip(), (
        "dead code (remove it, or whitelist a framework's name in scripts/vulture_whitelist.py):\n" + result.stdout)
