"""Reading catalog files in bounded memory: a hostile or broken file is refused while it is
streamed, before anything holds it whole.

A workbook's texts (its shared strings, and inline strings and values in its worksheets) are
counted with a streaming XML parser before openpyxl loads them: openpyxl keeps every shared
string in memory, so one string of 900 MiB, packed into a 1 MB file, would cost gigabytes.
Texts longer than the cell limit are problems the catalog reader reports cell by cell; once
such texts add up to more than :data:`MAX_OVERSIZED_CHARS`, the workbook is refused at once.

CSV text is validated and decoded in chunks, read in lines of at most :data:`MAX_LINE_CHARS`,
and parsed with the csv module's field size limit set to :func:`field_limit`: a field a bit
over the cell limit is reported with its column by the catalog reader, a runaway one is
refused as soon as it is met.
"""

from __future__ import annotations

import codecs
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO
from xml.parsers import expat

# Characters of texts over the cell limit a workbook may hold, all together, before it is
# refused unread: enough to report many over-long cells, far below what would hurt.
MAX_OVERSIZED_CHARS = 16 << 20
# The longest CSV field, when the cell limit is lower: reported with its column up to here.
MAX_FIELD_CHARS = 4 << 20
# The longest CSV line: a row of many cells at the cell limit fits; a file of one endless
# line does not.
MAX_LINE_CHARS = 16 << 20
_CHUNK = 1 << 20
# Elements holding one cell's text: a shared string (all its runs) and a worksheet cell.
_ITEMS = ("si", "c")


class LimitExceeded(ValueError):
    """A file goes past a limit while it is streamed; :mod:`producer.sheets` reports it as a
    ``SheetError`` with the message as it is."""


def check_workbook_texts(archive: zipfile.ZipFile, max_cell_chars: int) -> None:
    """Stream a workbook's shared strings and worksheets, refusing runaway texts.

    Raises:
        LimitExceeded: texts longer than ``max_cell_chars`` add up to more than
            :data:`MAX_OVERSIZED_CHARS` characters.
    """
    counter = _TextCounter(max_cell_chars)
    for part in archive.infolist():
        name = part.filename.lower()
        if name.endswith(".xml") and ("sharedstrings" in name or "/worksheets/" in name):
            counter.scan(archive, part)


class _TextCounter:
    """Counts the characters of each cell's text as expat hands them over, never holding one."""

    def __init__(self, max_cell_chars: int) -> None:
        self.max_cell_chars = max_cell_chars
        self.oversized = 0  # characters of the texts over the limit, so far
        self.current = 0  # characters of the cell being read

    def scan(self, archive: zipfile.ZipFile, part: zipfile.ZipInfo) -> None:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.buffer_text = False  # text in pieces as it comes, never joined
        parser.StartElementHandler = self._start
        parser.CharacterDataHandler = self._text
        with archive.open(part) as stream:
            try:
                while chunk := stream.read(_CHUNK):
                    parser.Parse(chunk, False)
                parser.Parse(b"", True)
            except expat.ExpatError:
                # Damage, not size: openpyxl reports it with its sheet and row. Everything
                # before the damage was counted already.
                return

    def _start(self, name: str, attributes: dict) -> None:
        if name.rpartition(" ")[2] in _ITEMS:
            self.current = 0

    def _text(self, text: str) -> None:
        before = self.current
        self.current += len(text)
        if self.current > self.max_cell_chars:
            # Only what lies past the limit is new: the part before was counted already.
            self.oversized += self.current - max(before, self.max_cell_chars)
            if before <= self.max_cell_chars:
                self.oversized += self.max_cell_chars
        if self.oversized > MAX_OVERSIZED_CHARS:
            raise LimitExceeded(
                f"the workbook's texts longer than the cell limit ({self.max_cell_chars} "
                f"characters, FARM_MAX_CELL_CHARS) add up to more than "
                f"{MAX_OVERSIZED_CHARS >> 20} Mi characters; refused before loading it"
            )


def field_limit(max_cell_chars: int) -> int:
    """The longest CSV field read before the file is refused where it is."""
    return max(max_cell_chars, MAX_FIELD_CHARS)


def invalid_at(path: Path, encoding: str) -> int | None:
    """The byte offset where ``path`` stops being valid ``encoding``; None when it is valid.

    The file is decoded in chunks and the text thrown away: only the answer is kept.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            if not chunk:
                return None
            offset += len(chunk)


def bounded_lines(handle: TextIO, max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The lines of ``handle``, refusing one longer than ``max_chars`` before it is whole.

    Raises:
        LimitExceeded: a line is longer than ``max_chars`` (its number is in the message).
    """
    number = 0
    while line := handle.readline(max_chars + 1):
        number += 1
        if len(line) > max_chars:
            raise LimitExceeded(
                f"line {number} is longer than {max_chars >> 20} Mi characters "
                "(a runaway cell or not a CSV file); refused before reading it whole"
            )
        yield line
