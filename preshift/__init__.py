"""Preshift: move application components away from failure before it happens."""

__version__ = "0.1.0"
__all__ = ["__version__"]
