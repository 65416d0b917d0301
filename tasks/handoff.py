"""Images a worker process has just written, kept in memory for its own score stage.

A GPU worker that renders an article usually scores it next: the score message is the most
urgent one on the GPU queue, and the worker that sent it is the one free to take it. The
score stage then takes the picture from here instead of decoding the PNG again (about 10 ms
of CPU per 1024² image, on the GPU's path). The file on disk stays the truth: an entry is
used only while the file is still the one written (same inode, size and modification time:
outputs are written to a scratch file and renamed, so a rewrite is a new inode). In an object
store (:mod:`tasks.storage`) an entry is used without asking the store: an attempt's object
is only ever written by renders of that attempt, with its seed, and asking would cost the
round trip the entry is there to save.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from PIL import Image

from tasks import storage
from tasks.storage import ObjectURL, Place

# Enough for the renders whose scores wait in one score batch (about 3 MB per 1024² picture).
CAPACITY = 8


class RecentImages:
    """The last few images written by this process, by path.

    Args:
        capacity: how many to keep; the oldest goes first.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[tuple | None, Image.Image]] = OrderedDict()
        self._lock = threading.Lock()  # PNG writer threads keep, the task thread loads
        self.hits = 0

    def keep(self, path: Place | str, image: Image.Image) -> None:
        """Remember ``image`` as the content just written to ``path``.

        Args:
            path: the file, already complete on disk, or the object just put.
            image: the picture it holds (RGB).
        """
        signature = _signature(storage.place(path))
        with self._lock:
            self._items[str(path)] = (signature, image)
            self._items.move_to_end(str(path))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def holds(self, path: Place | str) -> bool:
        """Whether :meth:`load` would take ``path``'s picture from memory."""
        return self._current(storage.place(path)) is not None

    def load(self, path: Place | str) -> Image.Image:
        """The RGB picture at ``path``: from memory when it is still the one written.

        Args:
            path: an image file or object.

        Returns:
            The picture.

        Raises:
            OSError: the file cannot be read (and is not held here).
        """
        path = storage.place(path)
        kept = self._current(path)
        if kept is not None:
            self.hits += 1
            return kept
        return read_rgb(path)

    def _current(self, path: Place) -> Image.Image | None:
        with self._lock:
            kept = self._items.get(str(path))
        if kept is None:
            return None
        try:
            return kept[1] if kept[0] == _signature(path) else None
        except OSError:  # the file is gone
            return None


def read_rgb(path: Place | str) -> Image.Image:
    """Decode the image file or object at ``path`` as RGB.

    Args:
        path: an image file or object.

    Returns:
        The picture, fully loaded (the file is closed).
    """
    with storage.open_read(storage.place(path)) as stream, Image.open(stream) as image:
        return image.convert("RGB")


def _signature(path: Place) -> tuple[int, int, int] | None:
    if isinstance(path, ObjectURL):
        return None  # trusted without a round trip (see the module)
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
