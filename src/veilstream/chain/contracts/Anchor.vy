# pragma version ==0.4.3
"""
@title Anchor
@notice Anyone posts a Merkle root under a kind (an audit-log head, a batch of feed
        events); the chain fixes when it existed and in what order a poster published.
@dev    Kinds are numbers named off chain (veilstream.chain.AnchorKind). The latest root
        and a sequence number are kept per (poster, kind); the full history is the log.
"""

event Anchored:
    poster: indexed(address)
    kind: indexed(uint256)
    root: bytes32
    seq: uint256

latest: public(HashMap[address, HashMap[uint256, bytes32]])
count: public(HashMap[address, HashMap[uint256, uint256]])


@external
def post(kind: uint256, root: bytes32) -> uint256:
    assert root != empty(bytes32), "anchor: root is zero"
    seq: uint256 = self.count[msg.sender][kind] + 1
    self.count[msg.sender][kind] = seq
    self.latest[msg.sender][kind] = root
    log Anchored(poster=msg.sender, kind=kind, root=root, seq=seq)
    return seq
