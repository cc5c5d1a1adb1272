"""The market settings pack: values are checked when set."""

import pytest

from veilstream.market.errors import MarketError
from veilstream.market.settings import MarketSettings


def test_cheques_signed_ahead_is_a_count_zero_or_more():
    assert MarketSettings().cheques_signed_ahead == 7
    assert MarketSettings(cheques_signed_ahead=0).cheques_signed_ahead == 0  # sign each cheque on demand
    for bad in (-1, 1.5, True):
        with pytest.raises(MarketError, match="cheques_signed_ahead"):
            MarketSettings(cheques_signed_ahead=bad)
