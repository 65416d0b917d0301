"""Images a worker process has just written, kept in memory for its own score stage.

A GPU worker that renders an article usually scores it next: the score message is the most
urgent one on the GPU queue, and the worker that sent it is the one free to take it. The
score stage then takes the picture from here instead of decoding the PNG again (about 10 ms
of CPU per 1024² image, on the GPU's path). The file on disk stays the truth: an entry is
used only while the file is still the one written (same inode, size and modification time:
outputs are written to a scratch file and renamed, so a rewrite is a new inode).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

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
        self._items: OrderedDict[str, tuple[tuple[int, int, int], Image.Image]] = OrderedDict()
        self._lock = threading.Lock()  # PNG writer threads keep, the task thread loads
        self.hits = 0

    def keep(self, path: Path, image: Image.Image) -> None:
        """Remember ``image`` as the content just written to ``path``.

        Args:
            path: the file, already complete on disk.
            image: the picture it holds (RGB).
        """
        signature = _signature(path)
        with self._lock:
            self._items[str(path)] = (signature, image)
            self._items.move_to_end(str(path))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def load(self, path: Path) -> Image.Image:
        """The RGB picture at ``path``: from memory when it is still the one written.

        Args:
            path: an image file.

        Returns:
            The picture.

        Raises:
            OSError: the file cannot be read (and is not held here).
        """
        with self._lock:
            kept = self._items.get(str(path))
        if kept is not None and kept[0] == _signature(path):
            self.hits += 1
            return kept[1]
        return read_rgb(path)


def read_rgb(path: Path) -> Image.Image:
    """Decode the image file at ``path`` as RGB.

    Args:
        path: an image file.

    Returns:
        The picture, fully loaded (the file is closed).
    """
    with Image.open(path) as image:
        return image.convert("RGB")


def _signature(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
