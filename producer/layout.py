"""Where a catalog's table is on a sheet: its header row, our fields' columns, cell text.

``producer.catalog`` reads the rows; this module only interprets a sheet's layout: it finds
the header row (which may sit below a title), matches headers to our fields, and explains a
sheet whose headers do not match. It knows nothing of problems or notices.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from producer.sheets import Row

REQUIRED_COLUMNS = ("name", "description", "model_name", "model_descr")
KEY_HEADERS = ("sku", "article_id", "article id", "id", "key")
KEY_FIELD = "key"
# A title, a date line or a note may sit above the table; a header further down than this is
# more likely a second table than the catalog's own, so the search stops here.
HEADER_SEARCH_ROWS = 10
# A wide sheet's header row would drown the message that lists it.
MAX_LISTED_HEADERS = 12

Numbered = tuple[int, Row]


@dataclass
class HeaderSearch:
    """The outcome of looking for a sheet's header row.

    ``header`` is the first row holding every required column, or None when none of the
    first ``HEADER_SEARCH_ROWS`` non-blank rows does; ``first`` is the first non-blank row
    (None for an empty sheet); ``rest`` gives the rows below the header; ``skipped`` counts
    the non-blank rows above the header.
    """

    header: Numbered | None
    first: Numbered | None
    rest: Iterator[Numbered]
    skipped: int = 0


def find_header(rows: Iterator[Numbered], columns: Mapping[str, str]) -> HeaderSearch:
    """Find the header row: the first of the first ten non-blank rows with every column we need.

    Args:
        rows: a table's numbered rows; consumed up to the header row.
        columns: the ``--columns`` map (our field to the file's header).

    Returns:
        The header row, the first non-blank row and the rows below the header. Without a
        header row, ``rest`` is empty: rows under an unknown header cannot be read.
    """
    scanned: list[Numbered] = []
    for number, values in rows:
        if is_blank(values):
            continue
        scanned.append((number, values))
        if holds_required(values, columns):
            # Rows above the header are all in ``scanned``, so nothing below it is buffered.
            return HeaderSearch((number, values), scanned[0], rows, len(scanned) - 1)
        if len(scanned) == HEADER_SEARCH_ROWS:
            break
    return HeaderSearch(None, scanned[0] if scanned else None, iter(()))


def required_fields(columns: Mapping[str, str]) -> tuple[str, ...]:
    """Our fields a header row must hold: the four text fields, and the key when mapped."""
    return (*REQUIRED_COLUMNS, KEY_FIELD) if KEY_FIELD in columns else REQUIRED_COLUMNS


def holds_required(values: Row, columns: Mapping[str, str]) -> bool:
    """Whether a row, read as a header, holds every required column."""
    positions, _ = index_headers(values)
    return all(
        wanted_header(ours, columns, positions) in positions for ours in required_fields(columns)
    )


def headers_hint(values: Row, field: str) -> str:
    """What to tell a user whose header row lacks ``field``: the headers found, and the flags.

    Args:
        values: the row taken for the header.
        field: our field that is missing, for the ``--columns`` example.

    Returns:
        Text such as ``headers found: 'Artikel', 'Beschreibung'; ...`` naming ``--sheet`` and
        ``--columns``.
    """
    _, written = index_headers(values)
    shown = [repr(text) for text in list(written.values())[:MAX_LISTED_HEADERS]]
    hidden = len(written) - len(shown)
    listed = ", ".join(shown) + (f" and {hidden} more" if hidden > 0 else "")
    return (
        f"headers found: {listed}; to read only one sheet use --sheet NAME, to map a "
        f"differently named header use --columns {field}=HEADER,..."
    )


def index_headers(values: Row) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Map each normalised header to its column indexes and to its text as first written."""
    positions: dict[str, list[int]] = {}
    written: dict[str, str] = {}
    for index, value in enumerate(values):
        text = cell_text(value).strip()
        if text:
            positions.setdefault(normalise_header(text), []).append(index)
            written.setdefault(normalise_header(text), text)
    return positions, written


def normalise_header(header: str) -> str:
    """A header as it is matched: runs of whitespace made one space, case folded."""
    return " ".join(header.split()).casefold()


def wanted_header(ours: str, columns: Mapping[str, str], positions: Mapping) -> str | None:
    """The normalised header that holds our field ``ours``; None when no key column exists."""
    if ours in columns:
        return normalise_header(columns[ours])
    if ours == KEY_FIELD:
        return next((h for h in KEY_HEADERS if h in positions), None)
    return ours


def normalise_text(text: str) -> str:
    """Model input as compared for identity: NFC, each line's whitespace collapsed, no blank lines.

    Case is kept: it reaches the model, so two texts differing in case are different articles.
    """
    lines = (" ".join(line.split()) for line in unicodedata.normalize("NFC", text).splitlines())
    return "\n".join(line for line in lines if line)


def is_blank(values: Row) -> bool:
    """Whether no cell of a row holds anything but whitespace."""
    return all(not cell_text(value).strip() for value in values)


def cell_text(value: object) -> str:
    """The text of a cell as a person reads it: whole numbers without '.0', ISO dates."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)
