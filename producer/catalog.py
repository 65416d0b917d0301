"""Read article catalogs (``.xlsx`` workbooks and ``.csv`` files) and validate the whole input.

Every problem in every file is collected before anything is rejected, so one run tells the
user everything that needs fixing, each problem named by file, sheet, row and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
from openpyxl.utils import get_column_letter

REQUIRED_COLUMNS = ("name", "description", "model_name", "model_descr")
KEY_HEADERS = ("sku", "article_id", "article id", "id", "key")
KEY_FIELD = "key"
MAX_KEY_CHARS = 200
CSV_SHEET = "csv"
XLSX_SUFFIXES = (".xlsx", ".xlsm")
CSV_SUFFIXES = (".csv", ".tsv")
CSV_DELIMITERS = (",", ";", "\t")
MAX_LISTED_PROBLEMS = 200
# Unicode category Cc (C0, DEL and C1 controls) except tab, line feed and carriage return.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An encrypted Office file is an OLE container holding a stream with this (UTF-16) name.
_ENCRYPTION_STREAM = "EncryptionInfo".encode("utf-16-le")

Row = Sequence[object]


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


class _UnreadableError(Exception):
    """Reading a table failed; args are (message for the user, row number it failed at)."""


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
    message = _file_access_problem(path)
    suffix = path.suffix.lower()
    if message is not None:
        _file_problem(state, file, message)
    elif suffix in XLSX_SUFFIXES:
        _read_workbook(path, file, sheet, columns, state)
    elif suffix in CSV_SUFFIXES:
        _read_csv(path, file, columns, state)
    elif suffix == ".xls":
        _file_problem(state, file, "old Excel 97-2003 (.xls) file; save it as .xlsx")
    else:
        _file_problem(state, file, "not a spreadsheet; expected .xlsx or .csv")


def _file_problem(state: _State, file: str, message: str) -> None:
    state.problems.append(Problem(file, None, None, None, message))


def _file_access_problem(path: Path) -> str | None:
    try:
        if not path.is_file():
            return "not a file" if path.exists() else "file not found"
        path.open("rb").close()
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    return None


def _read_workbook(
    path: Path, file: str, sheet: str | None, columns: Mapping[str, str], state: _State
) -> None:
    message = _workbook_format_problem(path)
    if message is not None:
        _file_problem(state, file, message)
        return
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for damaged archives
        _file_problem(state, file, _damaged(exc))
        return
    try:
        for worksheet in _chosen_sheets(workbook, file, sheet, state):
            if state.stopped:
                break
            worksheet.reset_dimensions()  # stale size records would otherwise cut rows short
            cells = worksheet.iter_rows(min_row=1, values_only=True)
            # A damaged sheet can fail anywhere in its XML, with many exception types.
            rows = _numbered(cells, Exception, _damaged)
            _SheetReader(file, worksheet.title, columns, state).read(rows)
    finally:
        workbook.close()


def _workbook_format_problem(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
        if head.startswith(_ZIP_MAGIC):
            return None
        if head == _OLE_MAGIC:
            if _ENCRYPTION_STREAM in handle.read():
                return "the workbook is password-protected; save an unprotected copy"
            return "old Excel 97-2003 (.xls) file with an .xlsx name; save it as .xlsx"
    if not head:
        return "file is empty"
    return "not a valid .xlsx workbook (not a ZIP archive); is it a CSV file?"


def _damaged(exc: Exception) -> str:
    return f"corrupt or truncated workbook ({type(exc).__name__}: {exc})"


def _chosen_sheets(workbook, file: str, sheet: str | None, state: _State) -> list:
    worksheets = list(workbook.worksheets)
    if sheet is None:
        return worksheets
    exact = [ws for ws in worksheets if ws.title == sheet]
    # Excel treats sheet names case-insensitively, so a user may type them either way.
    chosen = exact or [ws for ws in worksheets if ws.title.casefold() == sheet.casefold()]
    if not chosen:
        titles = ", ".join(repr(ws.title) for ws in worksheets)
        message = f"no sheet named {sheet!r}; the workbook has {titles}"
        state.problems.append(Problem(file, sheet, None, None, message))
    return chosen[:1]


def _numbered(
    rows: Iterable[Row], errors: type[Exception], describe: Callable[[Exception], str]
) -> Iterator[tuple[int, Row]]:
    """Number the rows from 1, turning reader failures (``errors``) into ``_UnreadableError``."""
    iterator = iter(rows)
    for number in itertools.count(1):
        try:
            values = next(iterator)
        except StopIteration:
            return
        except errors as exc:
            raise _UnreadableError(describe(exc), number) from exc
        yield number, values


def _read_csv(path: Path, file: str, columns: Mapping[str, str], state: _State) -> None:
    data = path.read_bytes()
    if data.startswith((_ZIP_MAGIC, _OLE_MAGIC)):
        _file_problem(state, file, "binary file (an Excel workbook?), not CSV text")
        return
    text = _decode(data)
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows = _numbered(reader, csv.Error, lambda exc: f"malformed CSV: {exc}")
    _SheetReader(file, CSV_SHEET, columns, state).read(rows)


def _decode(data: bytes) -> str:
    """Decode CSV bytes: UTF-16 or UTF-8 (with or without BOM), else Windows-1252/Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _sniff_delimiter(text: str) -> str:
    """Pick the delimiter that occurs most often in the first non-blank line (the header)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = {delimiter: first.count(delimiter) for delimiter in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


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
        except _UnreadableError as exc:
            message, row = exc.args
            self.state.problems.append(self.problem(row, None, message))

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
        texts = {ours: _cell_text(_at(values, i)) for ours, i in layout.index.items()}
        key = texts.get(KEY_FIELD, "").strip() or f"{Path(self.file).stem}:{self.sheet}:{number}"
        found = self._cell_problems(number, texts, layout)
        found += self._key_problems(number, key, layout.header.get(KEY_FIELD))
        state.problems += found
        if not found:
            fields = {ours: texts[ours] for ours in REQUIRED_COLUMNS}
            row = CatalogRow(file=self.file, sheet=self.sheet, row=number, key=key, **fields)
            state.rows.append(row)

    def _cell_problems(
        self, number: int, texts: Mapping[str, str], layout: _Layout
    ) -> list[Problem]:
        found = []
        for ours, text in texts.items():
            message = _cell_problem(text, self.state.max_cell_chars)
            if message is not None:
                found.append(self.problem(number, layout.header[ours], message))
        if not texts["description"].strip():
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
