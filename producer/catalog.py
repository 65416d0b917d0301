"""Read article catalogs (``.xlsx`` workbooks and ``.csv`` files) and validate the whole input.

Every problem in every file is collected before anything is rejected, so one run tells the
user everything that needs fixing, each problem named by file, sheet, row and column. What
is worth knowing but needs no fixing (a repeated row, an empty sheet, a title above the
header) is a notice instead. File formats (decoding, damaged or hostile files) are handled in
``producer.sheets``; finding the table on a sheet in ``producer.layout``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl.utils import get_column_letter

from producer.layout import (
    KEY_FIELD,
    KEY_HEADERS,
    REQUIRED_COLUMNS,
    cell_text,
    find_header,
    headers_hint,
    index_headers,
    is_blank,
    normalise_header,
    normalise_text,
    wanted_header,
)
from producer.sheets import CSV_SUFFIXES, BadCell, Row, SheetError, open_tables

MAX_KEY_CHARS = 200
MAX_LISTED_PROBLEMS = 200
DUPLICATE, EMPTY_SHEET, SHEET_IGNORED, HEADER_ROW = NOTICE_KINDS = (
    "duplicate",
    "empty sheet",
    "sheet option ignored",
    "header row",
)
CONTENT_KEY_PREFIX = "c-"
# 48 bits: two different articles share a key with odds under 1 in 10,000 in a catalog of
# 200,000 rows (the row limit), while the key stays short enough for file names.
CONTENT_KEY_HEX = 12
# Unicode category Cc (C0, DEL and C1 controls) except tab, line feed and carriage return.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class CatalogRow:
    """One article as read from a catalog row.

    ``keyed`` is True when ``key`` came from a key column (or from whoever built the row),
    False when it is the row's :func:`content_key`. ``headers`` are the catalog's own headers
    of name, description, model_name, model_descr and, when there is one, the key column.
    """

    file: str
    sheet: str
    row: int
    key: str
    name: str
    description: str
    model_name: str
    model_descr: str
    keyed: bool = True
    headers: tuple[str, ...] = REQUIRED_COLUMNS

    @property
    def source_text(self) -> str:
        """The non-empty text fields, stripped, one per line."""
        return _joined((self.name, self.description, self.model_name, self.model_descr))

    @property
    def source_columns(self) -> dict[str, str]:
        """The cells read, under the catalog's headers as written: header to cell text."""
        values = (self.name, self.description, self.model_name, self.model_descr, self.key)
        # Four headers mean no key column: zip stops before the key.
        return dict(zip(self.headers, values, strict=False))


def content_key(text: str) -> str:
    """The article key of a row without a key column, from what the models will read.

    The same text gives the same key wherever its row stands, so inserting, moving or
    deleting rows leaves the other articles' keys alone.

    Args:
        text: the row's model input, ``CatalogRow.source_text``.

    Returns:
        ``"c-"`` and the first 12 hex digits of the SHA-256 of the text normalised: Unicode
        NFC, whitespace runs within each line made one space, lines stripped, blank lines
        dropped. Case is kept, since it reaches the model.
    """
    digest = hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()
    return CONTENT_KEY_PREFIX + digest[:CONTENT_KEY_HEX]


def _joined(parts: Sequence[str]) -> str:
    return "\n".join(p.strip() for p in parts if p.strip())


def _place(file: str, sheet: str | None, row: int | None, column: str | None) -> str:
    parts = [file]
    if sheet is not None:
        parts.append(f"sheet {sheet!r}")
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input; the location parts are None where they do not apply."""

    file: str
    sheet: str | None
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"{_place(self.file, self.sheet, self.row, self.column)}: {self.message}"


@dataclass(frozen=True)
class Notice:
    """Something the user may want to know about the input that does not stop the read.

    ``kind`` is one of ``NOTICE_KINDS``: "duplicate" (a row repeating an earlier one, left
    out), "empty sheet" (skipped), "sheet option ignored" (``--sheet`` for a CSV file),
    "header row" (the header is below other rows, which were skipped).
    """

    file: str
    sheet: str | None
    row: int | None
    column: str | None
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{_place(self.file, self.sheet, self.row, self.column)}: {self.message}"


class CatalogError(Exception):
    """The input has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(list(problems))
        self.problems: list[Problem] = list(problems)

    def __str__(self) -> str:
        lines = [f"{len(self.problems)} problem(s) in the input:"]
        lines += [str(p) for p in self.problems[:MAX_LISTED_PROBLEMS]]
        hidden = len(self.problems) - MAX_LISTED_PROBLEMS
        if hidden > 0:
            lines.append(f"... and {hidden} more problem(s)")
        return "\n".join(lines)


@dataclass
class _Layout:
    """Where the fields of one sheet are: column index and header text as written."""

    index: dict[str, int]
    header: dict[str, str]
    headers: tuple[str, ...] = ()  # ``CatalogRow.headers`` of this sheet's rows


@dataclass(frozen=True)
class _Seen:
    """Where an article key was first read, and whether it came from a key column."""

    file: str
    sheet: str
    row: int
    keyed: bool

    def __str__(self) -> str:
        return f"{self.file}, sheet {self.sheet!r}, row {self.row}"


@dataclass
class _State:
    """What has been read so far across the whole input."""

    max_cell_chars: int
    max_rows: int
    notices: list[Notice]
    rows: list[CatalogRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: dict[str, _Seen] = field(default_factory=dict)
    data_rows: int = 0
    stopped: bool = False


def parse_column_map(spec: str) -> dict[str, str]:
    """Parse the ``--columns`` flag, e.g. ``"description=Beschreibung,name=Titel"``.

    Args:
        spec: comma-separated ``field=header`` pairs; fields are the names in
            ``REQUIRED_COLUMNS`` or ``key``, headers are as written in the file.

    Returns:
        A dict from our field name to the file's header.

    Raises:
        ValueError: the syntax is wrong, a field is unknown or given twice.
    """
    if not spec.strip():
        raise ValueError("empty column map; expected e.g. 'description=Beschreibung'")
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        ours, sep, theirs = (part.strip() for part in item.partition("="))
        if not sep or not ours or not theirs:
            raise ValueError(f"bad column map entry {item.strip()!r}; expected 'field=header'")
        if ours in mapping:
            raise ValueError(f"column {ours!r} is mapped twice")
        mapping[ours] = theirs
    _check_column_map(mapping)
    return mapping


def read_catalog(
    paths: Sequence[Path],
    sheet: str | None = None,
    columns: Mapping[str, str] | None = None,
    max_cell_chars: int = 10_000,
    max_rows: int = 200_000,
    notices: list[Notice] | None = None,
) -> list[CatalogRow]:
    """Read every article from the given files, validating the input as a whole.

    Hidden sheets are read like visible ones, so no article goes missing unnoticed. A formula
    cell gives the value Excel stored for it; a formula without a stored value (written by a
    script and never recalculated) or an error value such as ``#REF!`` in a column we read is
    a problem naming its cell. Merged cells hold their value in the top-left cell only.

    A sheet's header is the first of its first ten non-blank rows that holds every column we
    read, so a title above the table is skipped. Rows of a sheet with a key column are keyed
    by it; other rows by :func:`content_key`, and a row whose content key was read before,
    anywhere in the input, is left out with a notice (it would make the same article).

    Args:
        paths: ``.xlsx``/``.xlsm`` workbooks and ``.csv``/``.tsv`` files, read in this order.
        sheet: read only this sheet of each workbook (CSV files have just one table).
        columns: our field name (``REQUIRED_COLUMNS`` or ``key``) to the header used in the
            files, for files whose headers differ.
        max_cell_chars: longest text allowed in one cell.
        max_rows: most article rows allowed in the whole input.
        notices: if given, ``Notice`` objects are appended to it, also when the read fails:
            repeated rows, skipped empty sheets, headers found below other rows, ``sheet``
            given for a CSV file.

    Returns:
        The articles in input order: files as given, sheets in workbook order, rows top down;
        a repeated row only where it first occurs.

    Raises:
        CatalogError: anything is wrong anywhere in the input; it lists every problem.
        ValueError: ``columns`` names an unknown field.
    """
    columns = dict(columns or {})
    _check_column_map(columns)
    state = _State(max_cell_chars, max_rows, notices if notices is not None else [])
    for path in paths:
        if state.stopped:
            break
        _read_file(Path(path), str(path), sheet, columns, state)
    if not state.data_rows and not state.problems:
        where = ", ".join(str(p) for p in paths) or "(no input files)"
        state.problems.append(Problem(where, None, None, None, "no articles found in the input"))
    if state.problems:
        raise CatalogError(state.problems)
    return state.rows


def _check_column_map(columns: Mapping[str, str]) -> None:
    allowed = (*REQUIRED_COLUMNS, KEY_FIELD)
    unknown = sorted(set(columns) - set(allowed))
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(allowed)}")


def _read_file(
    path: Path, file: str, sheet: str | None, columns: Mapping[str, str], state: _State
) -> None:
    try:
        with open_tables(path, sheet, state.max_cell_chars) as tables:
            if sheet is not None and path.suffix.lower() in CSV_SUFFIXES:
                message = "--sheet applies to workbooks; a CSV file has one table, read whole"
                state.notices.append(Notice(file, None, None, None, message, SHEET_IGNORED))
            for table in tables:
                if state.stopped:
                    break
                _SheetReader(file, table.sheet, columns, state).read(table.rows)
    except SheetError as exc:
        state.problems.append(Problem(file, exc.sheet, exc.row, None, exc.message))


@dataclass
class _SheetReader:
    """Reads one table, a worksheet or a CSV file, into the shared state."""

    file: str
    sheet: str
    columns: Mapping[str, str]
    state: _State

    def problem(self, row: int | None, column: str | None, message: str) -> Problem:
        return Problem(self.file, self.sheet, row, column, message)

    def notice(self, row: int | None, message: str, kind: str) -> None:
        self.state.notices.append(Notice(self.file, self.sheet, row, None, message, kind))

    def read(self, rows: Iterator[tuple[int, Row]]) -> None:
        """Find the header row, then read every article row below it."""
        try:
            search = find_header(rows, self.columns)
            if search.first is None:
                self.notice(None, "sheet is empty; skipped", EMPTY_SHEET)
                return
            # Without a header row, the first non-blank row is the likeliest meant as one.
            header = search.header or search.first
            layout = self._layout(*header)
            if search.skipped:
                message = (
                    f"row {header[0]} taken as the header row; the {search.skipped} "
                    f"non-blank row(s) above it were skipped"
                )
                self.notice(header[0], message, HEADER_ROW)
            if layout is None:
                return
            for number, values in search.rest:
                if not is_blank(values):
                    self._take(number, values, layout)
                    if self.state.stopped:
                        return
        except SheetError as exc:
            self.state.problems.append(self.problem(exc.row, None, exc.message))

    def _layout(self, number: int, values: Row) -> _Layout | None:
        """Find our fields in the header row; None when the rows cannot be interpreted."""
        positions, written = index_headers(values)
        fatal = self._report_duplicates(number, positions, written)
        layout = _Layout(index={}, header={})
        for ours in (*REQUIRED_COLUMNS, KEY_FIELD):
            wanted = wanted_header(ours, self.columns, positions)
            if wanted in positions:
                layout.index[ours] = positions[wanted][0]
                layout.header[ours] = written[wanted]
            elif ours != KEY_FIELD or KEY_FIELD in self.columns:
                theirs = self.columns.get(ours, ours)
                message = f"missing required column {theirs!r}"
                if ours in self.columns:
                    message += f" (mapped to {ours!r})"
                message += f"; {headers_hint(values, ours)}"
                self.state.problems.append(self.problem(number, theirs, message))
                fatal = True
        layout.headers = tuple(layout.header.values())
        return None if fatal else layout

    def _report_duplicates(
        self, number: int, positions: Mapping[str, list[int]], written: Mapping[str, str]
    ) -> bool:
        """Report headers that occur more than once; True if one of them is a column we read."""
        used = {normalise_header(self.columns.get(ours, ours)) for ours in REQUIRED_COLUMNS}
        if KEY_FIELD in self.columns:
            used.add(normalise_header(self.columns[KEY_FIELD]))
        else:
            used.update(KEY_HEADERS)
        fatal = False
        for header, indexes in positions.items():
            if len(indexes) > 1:
                letters = ", ".join(get_column_letter(i + 1) for i in indexes)
                message = f"duplicated header {written[header]!r} (columns {letters})"
                self.state.problems.append(self.problem(number, written[header], message))
                fatal = fatal or header in used
        return fatal

    def _take(self, number: int, values: Row, layout: _Layout) -> None:
        state = self.state
        state.data_rows += 1
        if state.data_rows > state.max_rows:
            message = f"more than {state.max_rows} article rows in the input; reading stopped"
            state.problems.append(self.problem(number, None, message))
            state.stopped = True
            return
        cells = {ours: _at(values, i) for ours, i in layout.index.items()}
        texts = {ours: cell_text(cell) for ours, cell in cells.items()}
        fields = {ours: texts[ours] for ours in REQUIRED_COLUMNS}
        found = self._cell_problems(number, cells, layout)
        keyed = KEY_FIELD in layout.index
        if keyed:
            key = texts[KEY_FIELD].strip()
            found += self._key_problems(number, key, layout.header[KEY_FIELD])
        else:
            key = content_key(_joined(list(fields.values())))
        if found:
            state.problems += found
            return
        row = CatalogRow(
            self.file, self.sheet, number, key, **fields, keyed=keyed, headers=layout.headers
        )
        if keyed or self._first_time(row):
            state.rows.append(row)

    def _first_time(self, row: CatalogRow) -> bool:
        """Whether a row without a key column is new; a repeat is noted and left out."""
        first = self.state.seen.get(row.key)
        if first is None:
            self.state.seen[row.key] = _Seen(row.file, row.sheet, row.row, keyed=False)
            return True
        if first.keyed:  # a key column's key that happens to equal this content key
            message = f"duplicate article key {row.key!r}; first used in {first}"
            self.state.problems.append(self.problem(row.row, None, message))
        else:
            message = (
                f"repeats row {first.row} of sheet {first.sheet!r} in {first.file}; imported once"
            )
            self.notice(row.row, message, DUPLICATE)
        return False

    def _cell_problems(
        self, number: int, cells: Mapping[str, object], layout: _Layout
    ) -> list[Problem]:
        found = []
        for ours, cell in cells.items():
            if isinstance(cell, BadCell):
                where = f"{get_column_letter(layout.index[ours] + 1)}{number}"
                message = f"{cell.reason}: {cell.shown} (cell {where})"
                message += f"; {cell.hint}" if cell.hint else ""
            else:
                message = _cell_problem(cell_text(cell), self.state.max_cell_chars)
            if message is not None:
                found.append(self.problem(number, layout.header[ours], message))
        if not cell_text(cells["description"]).strip():
            found.append(self.problem(number, layout.header["description"], "empty description"))
        return found

    def _key_problems(self, number: int, key: str, column: str) -> list[Problem]:
        if not key:
            # Falling back to a content key would mix two identities in one sheet.
            message = (
                f"empty article key in column {column!r}; give every row a key or remove the column"
            )
            return [self.problem(number, column, message)]
        found = []
        if len(key) > MAX_KEY_CHARS:
            message = f"article key has {len(key)} characters; the limit is {MAX_KEY_CHARS}"
            found.append(self.problem(number, column, message))
        first = self.state.seen.get(key)
        if first is None:
            self.state.seen[key] = _Seen(self.file, self.sheet, number, keyed=True)
        else:
            message = f"duplicate article key {key!r}; first used in {first}"
            found.append(self.problem(number, column, message))
        return found


def _at(values: Row, index: int) -> object:
    return values[index] if index < len(values) else None


def _cell_problem(text: str, max_chars: int) -> str | None:
    if len(text) > max_chars:
        return f"cell has {len(text)} characters; the limit is {max_chars}"
    controls = list(_CONTROL_CHARS.finditer(text))
    if controls:
        first = controls[0]
        where = f"first U+{ord(first.group()):04X} at position {first.start() + 1}"
        return f"contains {len(controls)} control character(s), {where}"
    return None
