"""Datasets that ship inside the package, so examples and tests work offline."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aecli.errors import UsageError
from aecli.io import Table, read_table


@dataclass(frozen=True)
class Dataset:
    name: str
    filename: str
    row_shape: tuple[int, ...]
    description: str


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(
        "digits",
        "digits.csv.gz",
        (8, 8),
        "1797 handwritten digits, 8x8 pixels valued 0..16 (UCI, CC BY 4.0)",
    ),
}


def load(name: str) -> Table:
    """The named dataset as a table whose rows keep their image shape."""
    try:
        dataset = DATASETS[name]
    except KeyError:
        valid = ", ".join(DATASETS)
        raise UsageError(f"unknown dataset {name!r}; available: {valid}", flag="NAME") from None
    with resources.as_file(resources.files(__name__) / dataset.filename) as path:
        table = read_table(str(path))
    table.row_shape = dataset.row_shape
    return table
