"""caplab: classic networking-lab exercises as production-grade Twisted services."""

__version__ = "0.1.0"
