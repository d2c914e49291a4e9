"""The one order training takes rows in, whether they sit in memory or stream from disk.

Rows are numbered 0..N-1 after ``--allow-nan`` dropped any. A seeded sample of them is
held out; the rest train in chunks of consecutive rows (``--chunk-rows``, else CHUNK_VALUES
values, at least MIN_CHUNK_ROWS rows). Each epoch visits the chunks in an order drawn from
(seed, epoch), and the trainer shuffles the rows of each chunk with torch's generator,
seeded from (seed, epoch) too. So the steps are a function of the seed, the epoch, N and
the row width only: loading a table or streaming it (a memory decision), and splitting
every batch over torchrun processes, give the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from aecli.config import ROWS_SEED, TrainConfig
from aecli.io import ON_DISK, NpyRows, ParquetRows, Table
from aecli.scaler import Scaler
from aecli.training._distributed import World
from aecli.training._loop import Sharded, epoch_seed

CHUNK_VALUES = 2**24  # 64 MiB of float32 a chunk: what a streamed epoch holds at once
MIN_CHUNK_ROWS = 65_536  # wide rows still shuffle over this many rows
VAL_ROWS_MAX = 50_000  # held-out rows (kept in memory)
SAMPLE_ROWS = 100_000  # training rows whose codes and scores give the stored statistics
QUANTILE_ROWS = 100_000  # rows robust scaling takes its quantiles from


def shuffle_rows(config: TrainConfig, width: int) -> int:
    """Rows a shuffled chunk holds: derived, never chosen by the machine or the memory.

    ``--chunk-rows`` says how many rows a run holds at a time, and the shuffle takes
    chunks of that many, whether the rows stream or sit in memory, so that both give the
    same model; without it, a size fixed by the row width. Whether rows stream is the
    memory's decision (aecli/training/_pipeline.py's ``_streamed``), made once.
    """
    return config.chunk_rows or max(MIN_CHUNK_ROWS, CHUNK_VALUES // max(width, 1))


def skip(excluded: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The row numbers of the ``positions``-th rows left once the (sorted) ``excluded`` go."""
    if not len(excluded):
        return positions
    gaps = excluded - np.arange(len(excluded))
    return positions + np.searchsorted(gaps, positions, side="right")


def seeded_sample(rows: int, size: int, seed: int) -> np.ndarray:
    """``size`` row numbers of ``rows`` drawn without replacement from ``seed``, sorted."""
    size = min(rows, size)
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))


class Source(Protocol):
    """Rows 0..rows-1 of a table, however they are stored."""

    columns: list[str] | None
    row_shape: tuple[int, ...]

    @property
    def rows(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    def scan(self, size: int) -> Iterator[np.ndarray]:
        """Every row, in blocks of ``size`` (the pass that checks the values and counts drops)."""
        ...

    def block(self, lo: int, hi: int) -> np.ndarray: ...

    def at(self, indices: np.ndarray) -> np.ndarray: ...


class InMemory:
    """A table read whole."""

    def __init__(self, table: Table) -> None:
        self.values = table.values
        self.columns, self.row_shape = table.columns, table.row_shape

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def scan(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.rows, size):
            yield self.values[start : start + size]

    def block(self, lo: int, hi: int) -> np.ndarray:
        return self.values[lo:hi]

    def at(self, indices: np.ndarray) -> np.ndarray:
        return self.values[indices]


class OnDisk:
    """A .npy or Parquet file read in blocks from disk; rows ``--allow-nan`` dropped are skipped
    by number."""

    def __init__(self, npy: NpyRows | ParquetRows) -> None:
        self.npy = npy
        self.columns, self.row_shape = npy.columns, npy.row_shape
        self._dropped: np.ndarray | None = None

    @property
    def dropped(self) -> np.ndarray:
        """The file's row numbers that --allow-nan dropped (sorted), counted once."""
        if not self.npy.scanned:  # no scan yet (a resumed run fits no scaler): count now
            for _ in self.scan(MIN_CHUNK_ROWS):
                pass
        if self._dropped is None:  # read at every block: converted once, not each time
            self._dropped = np.asarray(self.npy.stats.dropped_rows, dtype=np.int64)
        return self._dropped

    @property
    def rows(self) -> int:
        return self.npy.rows - len(self.dropped)

    @property
    def n_features(self) -> int:
        return self.npy.n_features

    def scan(self, size: int) -> Iterator[np.ndarray]:
        self.npy.stats.dropped, self.npy.stats.dropped_rows = 0, []
        self._dropped = None
        yield from self.npy.chunks(size, count_dropped=True)
        self.npy.scanned = True

    def block(self, lo: int, hi: int) -> np.ndarray:
        if hi <= lo:
            return np.zeros((0, self.n_features), np.float32)
        first, last = skip(self.dropped, np.array([lo, hi - 1]))
        return self.npy.chunk(int(first), int(last) + 1)  # drops the dropped rows again

    def at(self, indices: np.ndarray) -> np.ndarray:
        return self.npy.rows_at(skip(self.dropped, np.asarray(indices, dtype=np.int64)))


def source_of(table: Table | NpyRows | ParquetRows) -> Source:
    return OnDisk(table) if isinstance(table, ON_DISK) else InMemory(table)


def fit_scaler(source: Source, config: TrainConfig, unit_range: bool) -> Scaler:
    """The scaling ``config.scale`` asks for, fitted on every row in one pass of blocks.

    Robust quantiles come from a seeded sample of QUANTILE_ROWS rows (every row of a
    smaller table), drawn after the pass has counted the rows.
    """
    size = shuffle_rows(config, source.n_features)

    def sample() -> np.ndarray:
        return source.at(seeded_sample(source.rows, QUANTILE_ROWS, ROWS_SEED + 2))

    return Scaler.fit_chunks(
        source.scan(size),
        config.scale,
        row_shape=source.row_shape,
        unit_range=unit_range,
        sample=sample,
    )


@dataclass
class Order:
    """Which rows are held out, and the chunks the others train in."""

    rows: int
    size: int
    held_out: np.ndarray  # sorted row numbers

    @classmethod
    def of(cls, rows: int, config: TrainConfig, width: int) -> Order:
        n_val = max(0, min(round(rows * config.val_fraction), rows - 1, VAL_ROWS_MAX))
        return cls(rows, shuffle_rows(config, width), seeded_sample(rows, n_val, ROWS_SEED))

    @property
    def n_train(self) -> int:
        return self.rows - len(self.held_out)

    @property
    def n_chunks(self) -> int:
        return -(-self.rows // self.size)

    def span(self, chunk: int) -> tuple[int, int]:
        """Chunk ``chunk``'s training rows, as positions among all training rows."""
        lo, hi = chunk * self.size, min((chunk + 1) * self.size, self.rows)
        before = np.searchsorted(self.held_out, [lo, hi])
        return lo - int(before[0]), hi - int(before[1])

    def chunks(self, seed: int, epoch: int) -> list[int]:
        return np.random.default_rng(epoch_seed(seed, epoch)).permutation(self.n_chunks).tolist()

    def train_block(self, source: Source, chunk: int) -> np.ndarray:
        """Chunk ``chunk``'s training rows, raw, in row order."""
        lo, hi = chunk * self.size, min((chunk + 1) * self.size, self.rows)
        values = source.block(lo, hi)
        a, b = np.searchsorted(self.held_out, [lo, hi])
        return np.delete(values, self.held_out[a:b] - lo, axis=0) if b > a else values

    def train_blocks(self, source: Source) -> Callable[[], Iterator[np.ndarray]]:
        return lambda: (self.train_block(source, c) for c in range(self.n_chunks))

    def train_sample(self, source: Source, size: int, seed: int) -> np.ndarray:
        """A seeded sample of at most ``size`` training rows, raw, in row order."""
        positions = seeded_sample(self.n_train, size, seed)
        return source.at(skip(self.held_out, positions))


class TrainingRows:
    """The training rows served chunk by chunk in the epoch's order (the loop's ChunkedRows).

    ``in_memory``: the scaled rows are one tensor on the device and a chunk is a view of
    it; else each chunk is read from disk when its turn comes, and under torchrun each
    process reads only its share of every batch.
    """

    def __init__(
        self,
        source: Source,
        order: Order,
        scaler: Scaler,
        config: TrainConfig,
        device: torch.device,
        world: World,
        in_memory: bool,
    ) -> None:
        self.source, self.order, self.scaler = source, order, scaler
        self.seed, self.batch_size = config.seed, config.batch_size
        self.device, self.world = device, world
        self.tensor: torch.Tensor | None = None
        if in_memory:
            blocks = [order.train_block(source, c) for c in range(order.n_chunks)]
            raw = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)  # one copy, not two
            self.tensor = torch.from_numpy(scaler.transform(raw)).to(device)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor | Sharded]:
        for chunk in self.order.chunks(self.seed, epoch):
            if self.tensor is not None:
                a, b = self.order.span(chunk)
                yield self.tensor[a:b]
            elif self.world.many:
                yield self._share(chunk)
            else:
                values = self.scaler.transform(self.order.train_block(self.source, chunk))
                yield torch.from_numpy(values).to(self.device)

    def _share(self, chunk: int) -> Sharded:
        """This rank's rows of one chunk, read by number: its share of every batch.

        The chunk's permutation is drawn here, as the trainer draws it for a whole chunk,
        so the steps are those of one process reading every row.
        """
        a, b = self.order.span(chunk)
        rows = skip(self.order.held_out, np.arange(a, b))
        n = len(rows)
        order = torch.randperm(n, device=self.device).cpu().numpy()
        mine = []
        for first in range(0, n, self.batch_size):
            lo, hi = self.world.share(min(self.batch_size, n - first))
            mine.append(order[first + lo : first + hi])
        wanted = rows[np.concatenate(mine)] if mine else rows[:0]
        values = self.scaler.transform(self.source.at(wanted))
        return Sharded(torch.from_numpy(values).to(self.device), n)
