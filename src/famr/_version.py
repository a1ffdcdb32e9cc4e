"""The package version, in a module of its own (the I/O layer records it without importing
the whole package)."""

__version__ = "0.1.0"
