"""`--params FILE`: one prompt per row of a CSV or TSV file (header row), JSONL, or a JSON array
of objects, read into plain values before anything is sent.

Keys are `NODE.INPUT` (as for `--set`), `@NODE.INPUT` (a local file to upload, relative to the
data file's folder), `name` (the prompt's name), or start with `#` (a note, ignored). A CSV cell
parses as a `--set` value (`7` a number, `a red fox` a string, `"007"` the string 007); a JSON
value is used as it is. An empty cell, a missing key or null leaves the workflow's own value.
Every error names the file, the line and the column.
"""

import csv
import io
import json
import os
from typing import List, NamedTuple, Optional, Tuple

from comfy_cli.errors import UsageError
from comfy_cli.workflow import read_bytes

MAX_BYTES = 1 << 30
NAME_CHARS = 100


class Missing:
    """An empty cell: the workflow's own value stays."""

    def __repr__(self):
        return "MISSING"


MISSING = Missing()


class Column(NamedTuple):
    key: str  # as written: "KSampler.cfg", "@LoadImage.image"
    node: str
    input: str
    upload: bool
    where: str  # "prompts.csv: line 1, column 3 (KSampler.cfg)", for errors


class Rows(NamedTuple):
    path: str
    columns: List[Column]
    rows: List[Tuple]  # one value per column, MISSING where not set
    lines: List[int]  # each row's first line
    names: List[Optional[str]]  # the `name` cell, or None


JSON_STARTS = frozenset('-0123456789[{"tfnNI \t')  # what a JSON text can start with (NaN, Infinity too)


def parse_value(raw):
    """A `--set` value: JSON if it parses, else the text itself."""
    if raw and raw[0] not in JSON_STARTS:
        return raw  # (most cells of a spreadsheet of prompts: no parse, no exception)
    try:
        return json.loads(raw)
    except ValueError:
        return raw
    except RecursionError:
        raise UsageError(f"{raw[:40]!r}...: the value is nested too deeply") from None


def read(path):
    """The rows of a --params file, checked for shape (not yet against any workflow)."""
    text = _text(path)
    kind = os.path.splitext(path)[1].lower()
    if kind in (".csv", ".tsv", ".tab"):
        rows = _table(path, text, "\t" if kind != ".csv" else _comma(text))
    elif kind in (".jsonl", ".ndjson"):
        rows = _objects(path, _jsonl(path, text))
    elif kind == ".json":
        rows = _objects(path, _json_array(path, text))
    else:
        raise UsageError(f"--params {path}: unknown kind of file; name it .csv, .tsv, .jsonl or .json")
    if not rows.rows:
        raise UsageError(f"--params {path}: no rows (a header and at least one row are needed)")
    return rows


def _text(path):
    data = read_bytes(path, f"--params {path}", MAX_BYTES, "a data file")
    if len(data) > MAX_BYTES:
        raise UsageError(f"--params {path}: larger than 1 GB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UsageError(f"--params {path}: line {line}: not UTF-8 text") from None


def _column(key, where):
    """A header key -> Column; errors name the column (`where`)."""
    upload = key.startswith("@")
    node, dot, name = key[1:].rpartition(".") if upload else key.rpartition(".")
    if not dot or not node or not name:
        raise UsageError(f"{where}: expected NODE.INPUT, @NODE.INPUT (a file to upload), name, "
                         "or #note as a column name")
    return Column(key, node, name, upload, where)


def _header(path, keys, line):
    seen, columns, name_at = set(), [], None
    for number, key in enumerate(keys, 1):
        key = key.strip()
        if key in seen:
            raise UsageError(f"--params {path}: line {line}, column {number} ({key}): the column is given twice")
        seen.add(key)
        if key == "name":
            name_at = number - 1
        elif not key.startswith("#"):
            columns.append((number - 1, _column(key, f"--params {path}: line {line}, column {number} ({key})")))
    return columns, name_at


def _table(path, text, delimiter):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    out = Rows(path, [], [], [], [])
    columns = name_at = width = None
    names = Names(path)
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if columns is None:
                columns, name_at = _header(path, cells, line)
                width = len(cells)
                out.columns.extend(c for _, c in columns)
                continue
            if len(cells) != width:
                raise UsageError(f"--params {path}: line {line}: {len(cells)} cells, the header has {width}"
                                 + (" (a comma inside a value needs the value in double quotes)"
                                    if delimiter == "," and len(cells) > width else ""))
            out.rows.append(tuple(_cell(path, line, c, cells[i]) for i, c in columns))
            out.lines.append(line)
            out.names.append(names.take(cells[name_at], line) if name_at is not None else None)
    except csv.Error as exc:
        raise UsageError(f"--params {path}: line {reader.line_num}: {exc}") from None
    if columns is None:
        raise UsageError(f"--params {path}: the file has no header row")
    return out


def _comma(text):
    """A .csv file's separator: ',' unless its header has ';' and no ',' (a spreadsheet saved where
    the comma is the decimal point)."""
    header = text.split("\n", 1)[0]
    return ";" if ";" in header and "," not in header else ","


def _cell(path, line, column, raw):
    if not raw.strip():
        return MISSING
    if column.upload:
        return _local(path, line, column, raw.strip())
    try:
        return parse_value(raw)
    except UsageError as exc:
        raise UsageError(f"--params {path}: line {line}, column {column.key}: {exc}") from None


def _local(path, line, column, value):
    if not isinstance(value, str) or not value:
        raise UsageError(f"--params {path}: line {line}, column {column.key}: expected a file name, got "
                         f"{json.dumps(value)[:60]}")
    full = value if os.path.isabs(value) else os.path.join(os.path.dirname(path), value)
    if not os.path.isfile(full):
        raise UsageError(f"--params {path}: line {line}, column {column.key}: {value}: no such file (paths are "
                         f"relative to the folder of {os.path.basename(path)})")
    return full


class Names:
    """`name` cells: printable, short, each once."""

    def __init__(self, path):
        self.path = path
        self.seen = {}

    def take(self, value, line):
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"--params {self.path}: line {line}, column name: expected a string")
        text = "".join(c if c.isprintable() else "?" for c in str(value).strip())[:NAME_CHARS]
        if not text:
            return None
        if text in self.seen:
            raise UsageError(f"--params {self.path}: line {line}, column name: {text!r} is already the name of "
                             f"line {self.seen[text]}; names must be unique")
        self.seen[text] = line
        return text


def _jsonl(path, text):
    """(line, object) for each non-blank line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            raise UsageError(f"--params {path}: line {number}: invalid JSON: {str(exc)[:100]}") from None
        except RecursionError:
            raise UsageError(f"--params {path}: line {number}: invalid JSON: nested too deeply") from None


def _json_array(path, text):
    """(line, object) for each element of a top-level JSON array, read one by one so errors
    can name the line an element starts on."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        raise UsageError(f"--params {path}: expected a JSON array of objects (one per prompt)")
    pos = _skip(text, pos + 1)
    first = True
    while not text.startswith("]", pos):
        if pos >= len(text):
            raise UsageError(f"--params {path}: the JSON array is cut short (no closing ']')")
        if not first:
            if not text.startswith(",", pos):
                raise UsageError(f"--params {path}: line {_line(text, pos)}: invalid JSON: expected ',' or ']'")
            pos = _skip(text, pos + 1)
        first = False
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError as exc:
            raise UsageError(f"--params {path}: line {_line(text, pos)}: invalid JSON: {str(exc)[:100]}") from None
        except RecursionError:
            raise UsageError(f"--params {path}: line {_line(text, pos)}: invalid JSON: nested too deeply") from None
        yield _line(text, pos), value
        pos = _skip(text, end)
    if text[pos + 1:].strip():
        raise UsageError(f"--params {path}: line {_line(text, pos + 1)}: text after the array")


def _skip(text, pos):
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text, pos):
    return text.count("\n", 0, pos) + 1


def _objects(path, items):
    """Rows from (line, object) pairs; the columns are every key met, in order of first use."""
    index, columns, parsed, lines, names = {}, [], [], [], []
    taken = Names(path)
    for line, obj in items:
        if not isinstance(obj, dict):
            raise UsageError(f"--params {path}: line {line}: expected an object of NODE.INPUT keys")
        row = {}
        for key, value in obj.items():
            if key == "name" or key.startswith("#"):
                continue
            if key not in index:
                index[key] = len(columns)
                columns.append(_column(key, f"--params {path}: line {line}, key {key}"))
            column = columns[index[key]]
            if value is not None:
                row[index[key]] = _local(path, line, column, value) if column.upload else value
        parsed.append(row)
        lines.append(line)
        names.append(taken.take(obj.get("name"), line))
    rows = [tuple(row.get(i, MISSING) for i in range(len(columns))) for row in parsed]
    return Rows(path, columns, rows, lines, names)
