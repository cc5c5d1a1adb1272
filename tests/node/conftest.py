"""The node tests that share running nodes (module-scoped fixtures: a devnet, nodes in their
own processes) and build on each other's state run on one xdist worker each, in file order
(`make test` runs `--dist loadgroup`): split over two workers, each would start its own
nodes and a test would miss what an earlier one, on the other worker, did."""

import pytest

SHARED_NODES = {"test_node.py", "test_node_contents.py", "test_node_feed.py", "test_node_limits.py", "test_node_live.py",
                "test_node_media.py", "test_node_wallet.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SHARED_NODES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
