"""The anomaly score's density term (aecli/density.py), against a histogram built by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from aecli import density, modelfile
from tests.conftest import invoke, rewrite_model


def by_hand(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """HBOS on the principal components, read as a frequency polygon: SVD for the axes,
    numpy's histogram for the counts, numpy's interp between the knots."""
    mean = train.mean(0)
    _, singular, vt = np.linalg.svd(train - mean, full_matrices=False)
    axes = vt[singular > 1e-3 * singular.max()].T
    z_train, z_rows = (train - mean) @ axes, (rows - mean) @ axes
    return sum(_polygon(z_train[:, k], z_rows[:, k]) for k in range(axes.shape[1]))


def _polygon(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One axis's -log share: numpy's histogram for the counts (one row added to each
    bin), knots at the bin centres and an empty bin's share half a bin beyond, interp."""
    n, bins = len(train), density.BINS
    counts, edges = np.histogram(train, bins=bins)
    width = edges[1] - edges[0]
    xs = np.concatenate([[edges[0] - width / 2], (edges[:-1] + edges[1:]) / 2])
    xs = np.append(xs, edges[-1] + width / 2)
    empty = math.log(n + bins)
    ys = np.concatenate([[empty], -np.log((counts + 1) / (n + bins)), [empty]])
    return np.interp(rows, xs, ys)


@pytest.mark.parametrize("shape", [(300, 6), (20, 50)])  # more rows than inputs, and fewer
def test_the_term_is_a_histogram_of_each_principal_component(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=shape[1])
    rows = np.vstack([train[:30], rng.normal(size=(30, shape[1])) * 2.0])
    fitted = density.fit(train.astype(np.float32))
    assert fitted.axes.shape == (shape[1], min(shape[0] - 1, shape[1]))
    want = by_hand(train.astype(np.float32).astype(np.float64), rows.astype(np.float32))
    np.testing.assert_allclose(fitted.term(rows.astype(np.float32)), want, rtol=1e-4)


def test_rotating_the_columns_leaves_the_term_as_it_was() -> None:
    """Components, not columns: an embedding's 512 coordinates in another basis (or a table's
    correlated columns) give the same term, which per-column histograms would not."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    rows = rng.normal(size=(50, 5)) * 1.5
    turn, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    plain = density.fit(train.astype(np.float32)).term(rows.astype(np.float32))
    turned = density.fit((train @ turn).astype(np.float32)).term((rows @ turn).astype(np.float32))
    np.testing.assert_allclose(turned, plain, rtol=1e-4)


def test_the_term_is_continuous_and_flat_beyond_the_range() -> None:
    train = np.linspace(0.0, 10.0, 101, dtype=np.float32)[:, None]
    fitted = density.fit(train)
    edge = float(fitted.low[0] + fitted.step[0] * 3.5)  # between two bins: HBOS steps there
    for x in (edge, float(fitted.low[0] + fitted.step[0] * 4), 0.0):  # a knot, the minimum
        below, above = fitted.term(np.array([[x - 1e-4], [x + 1e-4]], dtype=np.float32))
        assert abs(above - below) < 1e-3
    far = fitted.term(np.array([[-50.0], [-500.0], [60.0]], dtype=np.float32))
    np.testing.assert_allclose(far, math.log(101 + density.BINS))  # an empty bin's share
    middle = fitted.term(np.array([[5.0]], dtype=np.float32))
    assert middle[0] < far[0]
    assert np.isnan(fitted.term(np.array([[np.nan]], dtype=np.float32))[0])  # undefined stays so


def test_a_constant_column_adds_no_component() -> None:
    rng = np.random.default_rng(2)
    train = np.hstack([rng.normal(size=(200, 3)), np.full((200, 1), 7.0)]).astype(np.float32)
    fitted = density.fit(train)
    assert fitted.axes.shape == (4, 3)
    rows = train[:5].copy()
    moved = rows.copy()
    moved[:, 3] = 7.0 + 1e-3  # off the constant, within what float32 means there
    assert np.all(np.isfinite(fitted.term(moved)))


def test_a_single_row_has_no_component() -> None:
    """One row does not vary, so it has no component and the term is 0 for any row. The
    row's Gram matrix is 1 x 1, whose reversed eigenvectors numpy calls contiguous with a
    negative stride: torch refused them (two rows trained with half held out)."""
    one = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    fitted = density.fit(one)
    assert fitted.axes.shape == (4, 0)
    np.testing.assert_array_equal(fitted.term(np.vstack([one, one + 5.0])), [0.0, 0.0])


def test_two_rows_train_with_one_held_out(tmp_path: Path) -> None:
    """The held-out row is scored with a density of the one row left: train and score work."""
    data = tmp_path / "two.csv"
    rows = [[0.1, 0.5, 0.2, 0.9], [0.4, 0.3, 0.8, 0.1]]
    np.savetxt(data, rows, delimiter=",", header="a,b,c,d", comments="")
    model = tmp_path / "m.safetensors"
    flags = ["--epochs", "2", "--val-fraction", "0.5", "-q"]
    result = invoke(["train", data, "-o", model, *flags])
    assert result.code == 0, result.stderr
    scored = invoke(["score", model, data, "--contamination", "0.5"])
    assert scored.code == 0 and len(scored.text.splitlines()) == 3


def test_the_axes_stay_within_their_bound() -> None:
    rows = np.random.default_rng(3).normal(size=(1200, 1100)).astype(np.float32)
    fitted = density.fit(rows)
    assert fitted.axes.size <= density.AXES_VALUES
    assert fitted.axes.shape == (1100, density.AXES_VALUES // 1100)


def test_a_trained_file_scores_with_the_term(tmp_path: Path, table_csv: Path) -> None:
    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    stats = fitted.code_stats
    assert stats is not None and stats.density is not None and stats.grids is not None
    rows = read_table(str(table_csv)).values
    terms = row_terms(fitted, rows)
    scaled = fitted.scaler.transform(rows)
    np.testing.assert_allclose(terms["density"], stats.density.term(scaled), rtol=1e-6)
    assert "density" in stats.grids and len(stats.grids["density"]) == 1001


def columns_by_hand(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """HBOS on the columns themselves (the marginal term, format 15): ``by_hand`` with the
    identity for axes; a column that does not vary adds its one full bin's share."""
    full = -math.log((len(train) + 1) / (len(train) + density.BINS))  # a flat column
    return sum(
        np.full(len(rows), full) if np.ptp(train[:, k]) == 0 else _polygon(train[:, k], rows[:, k])
        for k in range(train.shape[1])
    )


def test_the_marginal_term_is_a_histogram_of_each_column() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 6)) * rng.uniform(0.5, 3.0, size=6)
    train[:, 4] = 2.5  # a column that does not vary
    rows = np.vstack([train[:30], rng.normal(size=(30, 6)) * 4.0]).astype(np.float32)
    fitted = density.fit_columns(train.astype(np.float32))
    assert fitted.mean is None and fitted.axes is None and fitted.knots.shape == (6, 12)
    want = columns_by_hand(train.astype(np.float32).astype(np.float64), rows)
    np.testing.assert_allclose(fitted.term(rows), want, rtol=1e-4)


def test_the_marginal_term_leaves_the_discrete_columns_to_their_own_term() -> None:
    """A column the discrete term counts value by value (as HBOS counts a categorical
    column's) is not counted again by its histogram; with no other column there is none."""
    rng = np.random.default_rng(4)
    train = np.c_[rng.normal(size=(300, 2)), rng.integers(0, 3, size=(300, 2))]
    rows = np.c_[rng.normal(size=(40, 2)) * 3, rng.integers(0, 9, size=(40, 2))]
    train, rows = train.astype(np.float32), rows.astype(np.float32)
    fitted = density.fit_columns(train, np.array([2, 3]))
    assert fitted is not None
    want = columns_by_hand(train[:, :2].astype(np.float64), rows[:, :2])
    added = fitted.term(rows) - want  # the columns left add the same to every row
    np.testing.assert_allclose(added, added[0], rtol=1e-5)
    assert density.fit_columns(train, np.arange(4)) is None
    assert density.fit_columns(np.ones((5, 3), np.float32)) is None  # nothing varies


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("density.knots"), "density term's tensors are incomplete"),
        (lambda a: a.update({"density.low": a["density.low"][:-1]}), "does not match"),
        (lambda a: a.update({"density.step": 0 * a["density.step"]}), "a bin has no width"),
        (lambda a: a.pop("marginal.step"), "marginal term's tensors are incomplete"),
        (lambda a: a.update({"marginal.knots": a["marginal.knots"][1:]}), "does not match"),
        (lambda a: a.update({"marginal.step": -a["marginal.step"]}), "a bin has no width"),
        (lambda a: a.update({"marginal.low": a["marginal.low"] * np.nan}), "not finite"),
        (
            lambda a: [a.pop(k) for k in [k for k in a if k.startswith("density.")]],
            "a marginal term without the density term before it",
        ),
    ],
)
def test_a_damaged_density_term_is_refused(
    tmp_path: Path, table_csv: Path, change, message: str
) -> None:
    model, damaged = tmp_path / "m.safetensors", tmp_path / "damaged.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "1", "-q"]).code == 0
    rewrite_model(model, damaged, change)
    result = invoke(["score", damaged, table_csv])
    assert result.code != 0 and message in result.stderr and not result.stdout
    assert "Traceback" not in result.stderr and damaged.name in result.stderr
