"""pmemd: declarative emulated persistent memory (``memmap=``) for Linux."""

import os

# pydantic looks for third-party plugins through importlib.metadata on first use, which costs
# tens of milliseconds per CLI run; pmemd uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

__version__ = "0.1.0"
