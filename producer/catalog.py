"""Read article catalogs (``.xlsx`` workbooks and ``.csv`` files) and validate the whole input.

Every problem in every file is collected before anything is rejected, so one run tells the
user everything that needs fixing, each problem named by file, sheet, row and column. File
formats (decoding, damaged or hostile files) are handled in ``producer.sheets``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl.utils import get_column_letter

from producer.sheets import BadCell, Row, SheetError, open_tables

REQUIRED_COLUMNS = ("name", "description", "model_name", "model_descr")
KEY_HEADERS = ("sku", "article_id", "article id", "id", "key")
KEY_FIELD = "key"
MAX_KEY_CHARS = 200
MAX_LISTED_PROBLEMS = 200
# Unicode category Cc (C0, DEL and C1 controls) except tab, line feed and carriage return.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class CatalogRow:
    """One article as read from a catalog row."""

    file: str
    sheet: str
    row: int
    key: str
    name: str
    description: str
    model_name: str
    model_descr: str

    @property
    def source_text(self) -> str:
        """The non-empty text fields, stripped, one per line."""
        parts = (self.name, self.description, self.model_name, self.model_descr)
        return "\n".join(p.strip() for p in parts if p.strip())


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input; the location parts are None where they do not apply."""

    file: str
    sheet: str | None
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.sheet is not None:
            parts.append(f"sheet {self.sheet!r}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return f"{', '.join(parts)}: {self.message}"


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


@dataclass
class _State:
    """What has been read so far across the whole input."""

    max_cell_chars: int
    max_rows: int
    rows: list[CatalogRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    key_seen_at: dict[str, str] = field(default_factory=dict)
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
) -> list[CatalogRow]:
    """Read every article from the given files, validating the input as a whole.

    Hidden sheets are read like visible ones, so no article goes missing unnoticed. A formula
    cell gives the value Excel stored for it; a formula without a stored value (written by a
    script and never recalculated) or an error value such as ``#REF!`` in a column we read is
    a problem naming its cell. Merged cells hold their value in the top-left cell only.

    Args:
        paths: ``.xlsx``/``.xlsm`` workbooks and ``.csv``/``.tsv`` files, read in this order.
        sheet: read only this sheet of each workbook (CSV files have just one table).
        columns: our field name (``REQUIRED_COLUMNS`` or ``key``) to the header used in the
            files, for files whose headers differ.
        max_cell_chars: longest text allowed in one cell.
        max_rows: most article rows allowed in the whole input.

    Returns:
        The articles in input order: files as given, sheets in workbook order, rows top down.

    Raises:
        CatalogError: anything is wrong anywhere in the input; it lists every problem.
        ValueError: ``columns`` names an unknown field.
    """
    columns = dict(columns or {})
    _check_column_map(columns)
    state = _State(max_cell_chars=max_cell_chars, max_rows=max_rows)
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
        with open_tables(path, sheet) as tables:
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

    def read(self, rows: Iterator[tuple[int, Row]]) -> None:
        """Read the header (the first non-blank row), then every article row below it."""
        try:
            header = next(((n, v) for n, v in rows if not _is_blank(v)), None)
            if header is None:
                self.state.problems.append(self.problem(None, None, "sheet is empty (no header)"))
                return
            layout = self._layout(*header)
            if layout is None:
                return
            for number, values in rows:
                if not _is_blank(values):
                    self._take(number, values, layout)
                    if self.state.stopped:
                        return
        except SheetError as exc:
            self.state.problems.append(self.problem(exc.row, None, exc.message))

    def _layout(self, number: int, values: Row) -> _Layout | None:
        """Find our fields in the header row; None when the rows cannot be interpreted."""
        positions, written = _index_headers(values)
        fatal = self._report_duplicates(number, positions, written)
        layout = _Layout(index={}, header={})
        for ours in (*REQUIRED_COLUMNS, KEY_FIELD):
            wanted = _wanted_header(ours, self.columns, positions)
            if wanted in positions:
                layout.index[ours] = positions[wanted][0]
                layout.header[ours] = written[wanted]
            elif ours != KEY_FIELD or KEY_FIELD in self.columns:
                theirs = self.columns.get(ours, ours)
                message = f"missing required column {theirs!r}"
                if ours in self.columns:
                    message += f" (mapped to {ours!r})"
                self.state.problems.append(self.problem(number, theirs, message))
                fatal = True
        return None if fatal else layout

    def _report_duplicates(
        self, number: int, positions: Mapping[str, list[int]], written: Mapping[str, str]
    ) -> bool:
        """Report headers that occur more than once; True if one of them is a column we read."""
        used = {_normalise(self.columns.get(ours, ours)) for ours in REQUIRED_COLUMNS}
        if KEY_FIELD in self.columns:
            used.add(_normalise(self.columns[KEY_FIELD]))
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
        texts = {ours: _cell_text(cell) for ours, cell in cells.items()}
        key = texts.get(KEY_FIELD, "").strip() or f"{Path(self.file).stem}:{self.sheet}:{number}"
        found = self._cell_problems(number, cells, layout)
        found += self._key_problems(number, key, layout.header.get(KEY_FIELD))
        state.problems += found
        if not found:
            fields = {ours: texts[ours] for ours in REQUIRED_COLUMNS}
            row = CatalogRow(file=self.file, sheet=self.sheet, row=number, key=key, **fields)
            state.rows.append(row)

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
                message = _cell_problem(_cell_text(cell), self.state.max_cell_chars)
            if message is not None:
                found.append(self.problem(number, layout.header[ours], message))
        if not _cell_text(cells["description"]).strip():
            found.append(self.problem(number, layout.header["description"], "empty description"))
        return found

    def _key_problems(self, number: int, key: str, column: str | None) -> list[Problem]:
        found = []
        if len(key) > MAX_KEY_CHARS:
            message = f"article key has {len(key)} characters; the limit is {MAX_KEY_CHARS}"
            found.append(self.problem(number, column, message))
        first = self.state.key_seen_at.get(key)
        if first is None:
            self.state.key_seen_at[key] = f"{self.file}, sheet {self.sheet!r}, row {number}"
        else:
            message = f"duplicate article key {key!r}; first used in {first}"
            found.append(self.problem(number, column, message))
        return found


def _index_headers(values: Row) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Map each normalised header to its column indexes and to its text as first written."""
    positions: dict[str, list[int]] = {}
    written: dict[str, str] = {}
    for index, value in enumerate(values):
        text = _cell_text(value).strip()
        if text:
            positions.setdefault(_normalise(text), []).append(index)
            written.setdefault(_normalise(text), text)
    return positions, written


def _normalise(header: str) -> str:
    return " ".join(header.split()).casefold()


def _wanted_header(ours: str, columns: Mapping[str, str], positions: Mapping) -> str | None:
    if ours in columns:
        return _normalise(columns[ours])
    if ours == KEY_FIELD:
        return next((h for h in KEY_HEADERS if h in positions), None)
    return ours


def _is_blank(values: Row) -> bool:
    return all(not _cell_text(value).strip() for value in values)


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


def _cell_text(value: object) -> str:
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
