"""A streaming parser for mysqldump files: INSERT lines in, PostgreSQL COPY text out.

Pure: it reads lines (bytes) and yields bytes, and knows nothing of files or databases.

mysqldump writes one table per file as `CREATE TABLE` (one column a line, in the table's order),
then extended inserts, one statement a line: ``INSERT INTO `t` VALUES (1,0,'A_b'),(2,...);``
(newer mariadb-dump puts each row of a statement on a line of its own; both are read) and, when
complete, a last line ``-- Dump completed on ...``. Strings are escaped as
mysql_real_escape_string does (``\\\\ \\' \\" \\0 \\n \\r \\Z``); titles are binary UTF-8 with
underscores for spaces.

Speed comes from doing the work per line in C: one compiled pattern per table matches a whole
row and captures only the wanted columns, and `re.split` both extracts them and proves that the
line holds nothing but rows (every piece between two matches must be empty). MySQL's escapes
are COPY's escapes for everything a title can hold (``\\\\``, ``\\'``, ``\\"`` stand for
themselves in COPY text), so a captured string goes to COPY as it is; a line with a tab, a
``\\0`` or a ``\\Z`` takes the exact, slower path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.errors import DumpError

# A quoted MySQL string, its body captured: no quote or backslash, or a backslash and anything.
_STRING_BODY = rb"[^'\\]*(?:\\.[^'\\]*)*"
_STRING = rb"'(" + _STRING_BODY + rb")'"
_INT = rb"(-?\d+)"
_ANY = rb"(?:'" + _STRING_BODY + rb"'|NULL|[-+0-9.eE]+)"  # a column we do not keep
_CREATE = re.compile(rb"^CREATE TABLE `(\w+)` \(")
_COLUMN = re.compile(rb"^\s+`(\w+)` ")
_COMPLETED = b"-- Dump completed"
_MYSQL_ESCAPES = {b"0": b"\0", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"Z": b"\x1a"}
_ESCAPE = re.compile(rb"\\(.)", re.S)


@dataclass(frozen=True)
class Want:
    """The columns to keep from one table, in output order; `strings` are the quoted ones."""

    table: str
    columns: tuple[str, ...]
    strings: frozenset[str] = frozenset()


@dataclass
class Progress:
    """What a parse has read so far (updated as it goes)."""

    lines: int = 0
    rows: int = 0
    bytes: int = 0
    completed: bool = False


def row_pattern(all_columns: list[str], want: Want) -> re.Pattern[bytes]:
    """The pattern of one row of a table with `all_columns`, capturing the wanted ones in order.

    Captures come in table order; `Want.columns` must therefore follow the table's order for
    the output to follow it too (`copy_rows` checks that).
    """
    parts = []
    for name in all_columns:
        if name in want.columns:
            parts.append(_STRING if name in want.strings else _INT)
        else:
            parts.append(_ANY)
    return re.compile(rb"\(" + rb",".join(parts) + rb"\)[,;]")


def copy_rows(lines: Iterable[bytes], want: Want, progress: Progress | None = None
              ) -> Iterator[bytes]:
    """COPY text (tab-separated, one row a line) of the wanted columns, one chunk per INSERT.

    Raises DumpError for a file that is not this table's dump, lacks a wanted column, holds a
    line that is not rows, or ends before mysqldump's completion line.
    """
    progress = progress if progress is not None else Progress()
    lines = iter(lines)
    table = want.table.encode()
    insert = b"INSERT INTO `" + table + b"` VALUES"
    columns: list[str] | None = None
    pattern: re.Pattern[bytes] | None = None
    stride = len(want.columns) + 1
    within = False  # inside an INSERT whose rows come one a line (newer mariadb-dump)
    for line in lines:
        progress.lines += 1
        progress.bytes += len(line)
        if line.startswith(insert) or (within and line.startswith(b"(")):
            if pattern is None:
                raise DumpError(f"`{want.table}`: rows before its CREATE TABLE")
            body = line[len(insert):] if line.startswith(insert) else line
            body = body.strip()
            within = not body.endswith(b";")
            if not body.strip():
                continue
            chunk, count = _rows(body, pattern, stride, want, progress.lines)
            progress.rows += count
            yield chunk
        elif line.startswith(b"CREATE TABLE"):
            columns = _create_table(line, lines, want, progress)
            order = [c for c in columns if c in want.columns]
            if tuple(order) != want.columns:
                missing = sorted(set(want.columns) - set(columns))
                raise DumpError(f"`{want.table}`: unknown schema, no column {', '.join(missing)}"
                                if missing else f"`{want.table}`: columns in another order")
            pattern = row_pattern(columns, want)
        elif line.startswith(b"INSERT INTO"):
            raise DumpError(f"line {progress.lines}: rows of another table than `{want.table}`")
        elif line.startswith(_COMPLETED):
            progress.completed = True
    if columns is None:
        raise DumpError(f"no CREATE TABLE `{want.table}` in the file")
    if not progress.completed:
        raise DumpError(f"`{want.table}` ends after line {progress.lines} without mysqldump's"
                        " '-- Dump completed' line: the file is truncated")


def table_columns(lines: Iterable[bytes]) -> tuple[str, list[str]]:
    """The first table's name and its columns, in order (for telling schemas apart)."""
    it = iter(lines)
    for line in it:
        match = _CREATE.match(line)
        if match:
            return match.group(1).decode(), _column_names(it)
    raise DumpError("no CREATE TABLE in the file")


def _create_table(line: bytes, lines: Iterable[bytes], want: Want, progress: Progress
                  ) -> list[str]:
    match = _CREATE.match(line)
    if not match or match.group(1) != want.table.encode():
        name = match.group(1).decode() if match else "?"
        raise DumpError(f"a dump of table `{name}` where `{want.table}` was expected")
    counting = _counted(iter(lines), progress)
    return _column_names(counting)


def _counted(lines: Iterator[bytes], progress: Progress) -> Iterator[bytes]:
    for line in lines:
        progress.lines += 1
        progress.bytes += len(line)
        yield line


def _column_names(lines: Iterator[bytes]) -> list[str]:
    names = []
    for line in lines:
        match = _COLUMN.match(line)
        if match:
            names.append(match.group(1).decode())
        else:
            break  # the first key, or the closing parenthesis
    if not names:
        raise DumpError("CREATE TABLE without columns")
    return names


def _rows(body: bytes, pattern: re.Pattern[bytes], stride: int, want: Want, lineno: int
          ) -> tuple[bytes, int]:
    if not body.endswith((b");", b"),")):
        raise DumpError(f"`{want.table}` line {lineno}: rows that do not end with ');'")
    parts = pattern.split(body)
    # Rows only: the text before, between and after the matches must be empty.
    if any(parts[::stride]):
        bad = next(p for p in parts[::stride] if p)
        raise DumpError(f"`{want.table}` line {lineno}: not a row: {bad[:60]!r}")
    count = (len(parts) - 1) // (stride)
    fields = [parts[i::stride] for i in range(1, stride)]
    if b"\t" in body or b"\\0" in body or b"\\Z" in body:
        fields = [[_exact(v) for v in column] if name in want.strings else column
                  for name, column in zip(want.columns, fields, strict=True)]
    chunk = b"\n".join(map(b"\t".join, zip(*fields, strict=True))) + b"\n"
    if b"_" in chunk:
        chunk = chunk.replace(b"_", b" ")  # only titles hold underscores: the rest are numbers
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        # A title cut inside a character by an old byte limit: keep it readable and loadable.
        chunk = chunk.decode("utf-8", "replace").encode("utf-8")
    return chunk, count


def unescape(value: bytes) -> bytes:
    """A MySQL string body as the bytes it stands for."""
    return _ESCAPE.sub(lambda m: _MYSQL_ESCAPES.get(m.group(1), m.group(1)), value)


def copy_escape(value: bytes) -> bytes:
    """Bytes as one field of PostgreSQL's COPY text format."""
    return (value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
            .replace(b"\r", b"\\r").replace(b"\0", b""))


def _exact(value: bytes) -> bytes:
    return copy_escape(unescape(value))
