"""Content: slicing, the key tree, per-slice AEAD, Merkle trees, manifest, torrents, and
the publish and open pipelines."""

from veilstream.content.crypto import CipherSuite, ContentKeys, DecryptionError
from veilstream.content.keytree import TreeNode, leaf_keys_from_nodes, nodes_for_range, range_cover
from veilstream.content.manifest import Manifest, ManifestError, Metadata, Terms
from veilstream.content.publish import PublishError, PublishOptions, Published, publish_file
from veilstream.content.torrent import Torrent, TorrentError, parse_content_id
from veilstream.content.unseal import IntegrityError, KeyRing, WrongKeyError, decrypt_to, open_verified_slice, verify_all_keys

__all__ = [
    "CipherSuite", "ContentKeys", "DecryptionError", "IntegrityError", "KeyRing", "Manifest",
    "ManifestError", "Metadata", "PublishError", "PublishOptions", "Published", "Terms", "Torrent",
    "TorrentError", "TreeNode", "WrongKeyError", "decrypt_to", "leaf_keys_from_nodes",
    "nodes_for_range", "open_verified_slice", "parse_content_id", "publish_file", "range_cover", "verify_all_keys",
]
