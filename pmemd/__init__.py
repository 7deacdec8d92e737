"""pmemd: declarative emulated persistent memory (``memmap=``) for Linux."""

import os
import sys
import types

# pydantic looks for third-party plugins (package entry points) when it builds a model; pmemd
# uses none, so the search is switched off. Its plugin loader still imports importlib.metadata
# (email, zipfile, csv...) for the search it then skips, a fifth of `pmemd plan`'s start-up:
# with plugins off, that loader's one function returns no plugins, and pmemd provides it as such.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
if os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__" and "pydantic.plugin._loader" not in sys.modules:
    _no_plugins = types.ModuleType("pydantic.plugin._loader", "pydantic's plugin loader, plugins disabled")
    setattr(_no_plugins, "get_plugins", tuple)  # noqa: B010  (get_plugins() -> no plugins)
    sys.modules["pydantic.plugin._loader"] = _no_plugins

__version__ = "0.1.0"
