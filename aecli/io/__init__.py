"""Read and write tables: CSV/TSV (optionally gzipped), NPY, Parquet and Arrow, files or stdio.

Reading yields float32 chunks so that encode and reconstruct can stream;
every failure is a DataError naming the file, line and column. Writing goes
through an atomic file that appears only when every row is written, so a
failure never leaves a half-written output.

One module a job: ``table`` (the value and options), ``read`` (the format
dispatch and CSV), ``cells`` (text to numbers), ``columns`` (feature
selection), ``npy``, ``arrow`` (Parquet and Arrow), ``stream`` (stream or load), ``write``,
``atomic``; ``ids`` (an id column as it was read); ``spool`` (streamed Parquet); ``jsonl``;
``live`` (a pipe read row by row).
"""

from aecli.io.atomic import AtomicFile, check_output, refuse_overwrite, write_bytes_atomic
from aecli.io.npy import NpyRows
from aecli.io.read import iter_table, read_table
from aecli.io.spool import ParquetRows
from aecli.io.stream import disk_rows, should_stream
from aecli.io.table import CHUNK_ROWS, STDIO, ReadOptions, ReadStats, Table, describe, pick_rows
from aecli.io.write import TableWriter, format_rows, naming_stdout

ON_DISK = (NpyRows, ParquetRows)  # tables served by row range from disk, never loaded whole

__all__ = [
    "CHUNK_ROWS",
    "ON_DISK",
    "STDIO",
    "AtomicFile",
    "NpyRows",
    "ParquetRows",
    "ReadOptions",
    "ReadStats",
    "Table",
    "TableWriter",
    "check_output",
    "describe",
    "disk_rows",
    "format_rows",
    "iter_table",
    "naming_stdout",
    "pick_rows",
    "read_table",
    "refuse_overwrite",
    "should_stream",
    "write_bytes_atomic",
]
