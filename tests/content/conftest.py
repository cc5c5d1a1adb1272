import pytest

from veilstream.identity import Identity

CREATOR_WORDS = "leader monkey parrot ring guide accident before fence cannon height naive bean"


@pytest.fixture(scope="session")
def creator() -> Identity:
    return Identity.from_mnemonic(CREATOR_WORDS)
