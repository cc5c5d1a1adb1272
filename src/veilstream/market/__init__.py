"""The market: cheques gate delivery and key release; the key agent and its audit log; the
viewer's paid stream."""
