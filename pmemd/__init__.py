"""pmemd: declarative emulated persistent memory (``memmap=``) for Linux."""

__version__ = "0.1.0"
