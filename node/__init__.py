"""The vault core of one Strongroom node: settings, store, key ring and domain services."""

__version__ = "0.1.0"
