"""Read and write tables: CSV/TSV (optionally gzipped) and NPY, files or stdin/stdout.

Reading yields float32 chunks so that encode and reconstruct can stream;
every failure is a DataError naming the file, line and column. Writing goes
through an atomic file that appears only when every row is written, so a
failure never leaves a half-written output.

One module a job: ``table`` (the value and options), ``read`` (the format
dispatch and CSV), ``cells`` (text to numbers), ``columns`` (feature
selection), ``npy``, ``stream`` (stream or load), ``write``, ``atomic``.
"""

from aecli.io.atomic import AtomicFile, check_output, refuse_overwrite, write_bytes_atomic
from aecli.io.npy import NpyRows
from aecli.io.read import iter_table, read_table
from aecli.io.stream import should_stream
from aecli.io.table import CHUNK_ROWS, STDIO, ReadOptions, ReadStats, Table, describe, pick_rows
from aecli.io.write import TableWriter, format_rows, naming_stdout

__all__ = [
    "CHUNK_ROWS",
    "STDIO",
    "AtomicFile",
    "NpyRows",
    "ReadOptions",
    "ReadStats",
    "Table",
    "TableWriter",
    "check_output",
    "describe",
    "format_rows",
    "iter_table",
    "naming_stdout",
    "pick_rows",
    "read_table",
    "refuse_overwrite",
    "should_stream",
    "write_bytes_atomic",
]
