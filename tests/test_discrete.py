"""The anomaly score's discrete term (aecli/discrete.py), against counts made by hand."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from aecli import discrete, modelfile
from tests.conftest import invoke


def by_hand(train: np.ndarray, rows: np.ndarray, a: float = 0.1) -> np.ndarray:
    """Over the columns of 2 to 32 integers: -log((p + a) / (1 + a)), p = k / (n + m), k the
    training rows with the row's value, n the rows, m the values; p = 1 / (n + m + 1) for a
    value never seen. a = 0: -log p, as files before format 11 count it."""
    total = np.zeros(len(rows))
    for column in range(train.shape[1]):
        counts = Counter(train[:, column].tolist())
        if not 2 <= len(counts) <= discrete.LEVELS or any(v != int(v) for v in counts):
            continue
        n, m = len(train), len(counts)
        for i, value in enumerate(rows[:, column].tolist()):
            p = counts[value] / (n + m) if value in counts else 1 / (n + m + 1)
            total[i] += -math.log((p + a) / (1 + a))
    return total


SATURATION = float(np.float32(0.1))  # as the file holds it


@pytest.fixture
def mixed() -> np.ndarray:
    """200 rows: a measurement, a 3-value category, a count, a flag, a constant, 40 integers."""
    rng = np.random.default_rng(0)
    columns = [
        rng.normal(size=200),
        rng.choice([0, 1, 2], size=200, p=[0.7, 0.2, 0.1]),
        rng.poisson(2.0, size=200),
        (rng.random(200) < 0.05).astype(float),
        np.full(200, 7.0),
        rng.integers(0, 40, size=200),
    ]
    return np.stack(columns, 1).astype(np.float32)


def test_the_term_counts_the_values_of_the_discrete_columns(mixed: np.ndarray) -> None:
    counted = discrete.fit(mixed)
    assert counted is not None
    assert counted.columns.tolist() == [1, 2, 3]  # not the measurement, constant, 40 values
    new = mixed[:20].copy()
    new[:5, 1] = 5.0  # a category never seen
    new[5:8, 3] = np.nan  # nothing matches NaN
    assert counted.saturation == SATURATION
    np.testing.assert_allclose(counted.term(mixed), by_hand(mixed, mixed, SATURATION), rtol=1e-12)
    np.testing.assert_allclose(counted.term(new), by_hand(mixed, new, SATURATION), rtol=1e-12)
    before = replace(counted, saturation=0.0)  # a file before format 11: -log p whole
    np.testing.assert_allclose(before.term(new), by_hand(mixed, new, 0.0), rtol=1e-12)


def test_a_rare_value_counts_about_minus_log_a_however_rare() -> None:
    """Why it saturates: counted whole, a value never seen adds log(n + m + 1), which grows
    with the table; saturated, it adds about -log(a / (1 + a)) on any table, so that the
    term counts in how many columns a row is rare."""
    three = np.array([[1.0, 1.0, 1.0]], np.float32)  # a value of 1% of rows, in three columns
    stray = np.array([[5.0, 0.0, 0.0]], np.float32)  # a value never seen, in one
    rare = -math.log(SATURATION / (1 + SATURATION))
    whole = []
    for rows in (1000, 100_000):
        flags = np.zeros((rows, 3), np.float32)
        for column in range(3):
            flags[column * rows // 100 : (column + 1) * rows // 100, column] = 1.0
        counted = discrete.fit(flags)
        assert counted is not None
        assert counted.term(stray)[0] == pytest.approx(rare, abs=0.03)  # + two common values
        one_percent = -math.log((0.01 + SATURATION) / (1 + SATURATION))
        assert counted.term(three)[0] == pytest.approx(3 * one_percent, abs=0.01)
        whole.append(replace(counted, saturation=0.0).term(stray)[0])
    assert whole[1] - whole[0] == pytest.approx(math.log(100), abs=0.01)


def test_a_training_row_scores_as_a_new_copy_of_it(mixed: np.ndarray) -> None:
    """Its own count is among the k: the share it gets is the others' share with one row added
    to each value, so scoring the training file gives what training saw."""
    counted = discrete.fit(mixed)
    assert counted is not None
    flag = mixed[:, 3]
    k = int((flag == 1).sum())
    n, m = len(mixed), 2
    alone = discrete.fit(mixed[:, 3:4])
    assert alone is not None
    row = np.array([[1.0]], np.float32)
    a = SATURATION
    assert alone.term(row)[0] == pytest.approx(-math.log((k / (n + m) + a) / (1 + a)))
    assert alone.term(row)[0] == pytest.approx(
        -math.log(((k - 1 + 1) / (n - 1 + m + 1) + a) / (1 + a))
    )


def test_a_table_of_measurements_has_no_discrete_term(table: np.ndarray) -> None:
    assert discrete.fit(table) is None
    assert discrete.fit(np.round(table * 1000)) is None  # integers, but hundreds of them


def test_a_trained_file_scores_with_the_term(tmp_path: Path, mixed: np.ndarray) -> None:
    from aecli.diagnostics import row_terms

    np.save(tmp_path / "t.npy", mixed)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "2", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    stats = fitted.code_stats
    assert stats is not None and stats.discrete is not None and stats.grids is not None
    assert stats.discrete.columns.dtype == np.int64
    terms = row_terms(fitted, mixed)
    assert stats.discrete.saturation == SATURATION
    np.testing.assert_allclose(terms["discrete"], by_hand(mixed, mixed, SATURATION), rtol=1e-6)
    # the training rows' own terms set the percentiles, each row scored as it is now
    np.testing.assert_allclose(
        stats.grids["discrete"], np.quantile(terms["discrete"], np.linspace(0, 1, 1001)), rtol=1e-5
    )


def _trained(tmp_path: Path, mixed: np.ndarray) -> Path:
    np.save(tmp_path / "t.npy", mixed)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "t.npy", "-o", model, "--epochs", "1", "-q"]).code == 0
    return model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("discrete.counts"), "discrete term's tensors are incomplete"),
        (lambda a: a.update({"discrete.columns": a["discrete.columns"] + 10}), "damaged"),
        (lambda a: a.update({"discrete.columns": a["discrete.columns"] + 0.5}), "does not match"),
        (lambda a: a.update({"discrete.levels": a["discrete.levels"][:, ::-1].copy()}), "damaged"),
        (lambda a: a.update({"discrete.counts": -a["discrete.counts"]}), "damaged"),
        (lambda a: a.update({"discrete.levels": a["discrete.levels"][:1]}), "does not match"),
        (lambda a: a.update({"discrete.saturation": np.array([1.5], np.float32)}), "saturation"),
        (lambda a: a.update({"discrete.saturation": np.array([np.nan], np.float32)}), "saturation"),
        (lambda a: a.update({"discrete.saturation": np.zeros(2, np.float32)}), "saturation"),
    ],
)
def test_a_damaged_discrete_term_is_refused(
    tmp_path: Path, mixed: np.ndarray, change, message: str
) -> None:
    from safetensors.numpy import load_file

    model = _trained(tmp_path, mixed)
    metadata, _, _ = modelfile.read_header(str(model))
    arrays = load_file(str(model))
    change(arrays)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(modelfile.serialize(arrays, metadata))
    result = invoke(["score", damaged, tmp_path / "t.npy"])
    assert result.code != 0 and message in result.stderr and not result.stdout
    assert "Traceback" not in result.stderr and damaged.name in result.stderr


def test_the_onnx_graph_scores_the_term_as_the_cli(tmp_path: Path, mixed: np.ndarray) -> None:
    """Values seen, never seen and NaN, through onnxruntime."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from aecli.diagnostics import row_terms

    model = _trained(tmp_path, mixed)
    graph = tmp_path / "score.onnx"
    assert invoke(["export", model, "--part", "score", "-o", graph]).code == 0
    rows = mixed[:40].copy()
    rows[:10, 1] = 9.0
    rows[10:12, 2] = np.nan
    session = ort.InferenceSession(str(graph))
    scores = session.run(None, {session.get_inputs()[0].name: rows})[0].ravel()
    expected = row_terms(modelfile.load(str(model)), rows)["score"]
    assert np.array_equal(np.isnan(scores), np.isnan(expected)) and np.isnan(scores[10:12]).all()
    # test_export.SCORE_RTOL: a float32 rounding of a term can cross one percentile step
    np.testing.assert_allclose(scores[12:], expected[12:], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores[:10], expected[:10], rtol=1e-4, atol=1e-4)
