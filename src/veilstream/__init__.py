"""Veilstream: encrypted, pay-per-slice content delivery with a signed social feed."""

__version__ = "0.1.0"
