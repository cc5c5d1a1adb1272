"""Publishing into a vault, as the CLI and the API share it: options as the user writes
them, a publish stopped half-way (the node stopping) leaves nothing, and the node's record
of its publishes stays bounded."""

import os

import pytest

from cli_harness import PASS, new_vault
from veilstream.content import PublishError
from veilstream.errors import VeilError
from veilstream.node.publishing import (
    DONE,
    ENCRYPTING,
    PUBLISHES_KEPT,
    Publishes,
    publish_into_vault,
    publish_options,
)


@pytest.fixture
def vault(tmp_path):
    new_vault(tmp_path / "home")
    from veilstream.vault import Vault

    return Vault.open(tmp_path / "home").unlock(PASS)


def test_options_are_taken_as_the_cli_takes_them():
    options = publish_options(slice_size="64KiB", price="1000gwei", seeder_share="25%", name="a.mp4",
                              mime_type="video/mp4", trackers=("http://t/announce",))
    assert options.slice_size == 64 * 1024 and options.terms.price_per_slice_wei == 10**12
    assert options.terms.seeder_share_bps == 2500 and options.display_name == "a.mp4"
    assert options.mime_type == "video/mp4" and options.trackers == ("http://t/announce",)
    assert publish_options().terms.price_per_slice_wei == 0


@pytest.mark.parametrize("given, words", [
    ({"price": "10"}, "say the price's unit"),
    ({"price": "-1gwei"}, "negative"),
    ({"seeder_share": "101%"}, "from 0% to 100%"),
    ({"seeder_share": "a lot"}, "not a share"),
    ({"slice_size": "3KiB"}, "power of two"),
    ({"slice_size": "big"}, "not a size"),
    ({"mime_type": "video"}, "not a MIME type"),
])
def test_a_bad_option_says_what_is_wrong(given, words):
    with pytest.raises(VeilError, match=words):  # a user's error: one line, a 400 from the API
        publish_options(**given)


def test_a_publish_stopped_half_way_leaves_nothing_in_the_vault(vault, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(300_000))
    stages, seen = [], []

    def stop_after_a_few(n: int) -> None:
        seen.append(n)
        if len(seen) == 3:
            raise PublishError("the node is stopping: nothing was published")

    with pytest.raises(PublishError, match="stopping"):
        publish_into_vault(vault, vault.identity(), source, publish_options(slice_size="16KiB"), purpose="test",
                           on_stage=lambda stage, total: stages.append((stage, total)), on_bytes=stop_after_a_few)
    assert stages == [(ENCRYPTING, 300_000)]
    assert vault.contents() == [] and list((vault.home / "tmp").iterdir()) == []
    assert not (vault.home / "keys").exists() or list((vault.home / "keys").iterdir()) == []
    done = publish_into_vault(vault, vault.identity(), source, publish_options(slice_size="16KiB"), purpose="test")
    assert [h.content_id for h in vault.contents()] == [done.torrent.content_id] and done.remuxed is False


def test_the_node_keeps_a_bounded_record_of_finished_publishes():
    announced = []
    publishes = Publishes(announced.append)
    first = publishes.new("a.bin")
    for _ in range(PUBLISHES_KEPT + 10):
        publishes.new("x.bin").finish({"content_id": "ab"})
    assert publishes.get(first.publish_id) is first  # one under way is never forgotten
    assert len(publishes._jobs) <= PUBLISHES_KEPT + 1
    assert announced[-1]["stage"] == DONE and set(announced[-1]) >= {"publish_id", "stage", "done_bytes", "total_bytes"}
    publishes.cancel_all()
    with pytest.raises(PublishError, match="stopping"):
        first.advance(1)
