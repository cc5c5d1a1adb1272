"""bench/node.py runs: its cheapest part, as a smoke run, ends in one JSON line with the figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_harness import require_anvil

BENCH = Path(__file__).resolve().parents[2] / "bench" / "node.py"


@pytest.mark.slow
def test_the_node_benchmark_reports_the_range_figure_as_json():
    require_anvil()
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", "range", "--strict"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "node" and figures["errors"] == {}
    for key in ("media_ratio", "range_first_byte_ms", "api_p99_ms", "idle_rss_mib", "fanout_mib_s", "fanout_ratio"):
        assert key in figures
    assert figures["range_first_byte_ms"] > 0 and figures["range_held_first_byte_ms"] > 0
    assert set(figures["goals_met"]) == {"range_first_byte_ms"}
