"""Config-file watching with watchdog (inotify): wake the daemon when pmem.yaml or a drop-in changes.

Editors save by writing a new file and renaming it over the old one, and ``/etc/pmem.d`` may not
exist yet, so pmemd watches directories (never single files) and filters by name: ``/etc`` for
``pmem.yaml`` and the creation of ``pmem.d``, and each existing ``pmem.d`` directory. When a
watched directory appears later, the watches are re-armed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pmemd.fsroot import Root
from pmemd.sources import DROPIN_DIRS, MAIN_CONFIG


class ConfigWatcher:
    def __init__(self, root: Root, on_change: Callable[[str], None], main: str = MAIN_CONFIG,
                 main_root: Root | None = None) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self._root = root
        self._main = str((main_root or root).join(main))
        self._dropins = [str(root.join(d)) for d in DROPIN_DIRS]
        self._parents = sorted({os.path.dirname(p) for p in (self._main, *self._dropins)})
        self._on_change = on_change
        self._observer: Any = Observer()
        self._watched: set[str] = set()
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher._event(event)

        self._handler = Handler()

    def _relevant(self, path: str) -> bool:
        if path == self._main:
            return True
        directory = os.path.dirname(path)
        if path in self._dropins:
            return True
        return directory in self._dropins and path.endswith(".yaml")

    def _event(self, event: Any) -> None:
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        if any(p in self._dropins for p in paths):
            self.arm()  # a pmem.d directory appeared or vanished
        if any(self._relevant(p) for p in paths) and event.event_type not in ("opened", "closed_no_write"):
            self._on_change(paths[-1])

    def arm(self) -> None:
        """Watch every existing directory of interest that is not watched yet."""
        for directory in (*self._parents, *self._dropins):
            if directory in self._watched or not os.path.isdir(directory):
                continue
            try:
                self._observer.schedule(self._handler, directory, recursive=False)
            except OSError:
                continue  # vanished between the check and the watch; the next arm() retries
            self._watched.add(directory)

    def start(self) -> None:
        self.arm()
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
