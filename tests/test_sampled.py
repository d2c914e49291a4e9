"""The score's sampled-neighbour term (aecli/sampled.py): by formula, and what it is for."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import modelfile, neighbours, sampled, tails
from tests.conftest import invoke, rewrite_model

LATER = ("neighbours.samples", "terms.sampled")  # format 10's tensors


def test_samples_are_distinct_rows_drawn_by_a_fixed_seed() -> None:
    drawn = sampled.draw(1000)
    assert drawn.shape == (sampled.SAMPLES, sampled.SAMPLE_ROWS)
    assert all(len(set(row)) == len(row) for row in drawn.tolist())
    assert drawn.min() >= 0 and drawn.max() < 1000 and (np.diff(drawn, axis=1) > 0).all()
    np.testing.assert_array_equal(drawn, sampled.draw(1000))  # the rows' count alone sets them
    assert len({tuple(row) for row in drawn.tolist()}) == sampled.SAMPLES  # not one sample
    # a smaller reference: all rows but one in each sample; one row: itself
    assert sampled.draw(10).shape == (sampled.SAMPLES, 9)
    assert sampled.draw(1).shape == (sampled.SAMPLES, 1)


@pytest.mark.parametrize("graph", [False, True])
def test_the_term_is_the_mean_distance_to_each_samples_nearest_row_but_itself(graph: bool) -> None:
    """By formula, as eager code computes it and as the ONNX export traces it."""
    reference = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    samples = torch.tensor([[0, 2], [1, 3], [3, 4]])
    rows = torch.tensor([[0.0], [2.0], [15.0], [20.0]])
    found = neighbours.nearest_k(reference, rows)
    got = neighbours.sampled_term(found, samples, graph=graph).numpy()
    want = [
        (3 + 1 + 7) / 3,  # [0] is reference row 0: the first sample's nearest other is 3
        (1 + 1 + 5) / 3,  # [2] is new: 1 from 3, 1 from 1, 5 from 7
        (12 + 8 + 8) / 3,  # [15] is row 4: the third sample's nearest other is 7, 8 away
        (17 + 13 + 5) / 3,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # a sample of the row itself alone counts its nearest other row instead
    alone = neighbours.sampled_term(found, torch.tensor([[0], [4]]), graph=graph).numpy()
    np.testing.assert_allclose(alone[0], (1 + 15) / 2, rtol=1e-6)


@pytest.mark.parametrize("rows", [2, 3, 40, 300])
def test_eager_code_leaves_each_row_out_as_the_graphs_mask_does(rows: int) -> None:
    """Eager code sets a row's own places in the samples apart by a lookup, where the
    graph masks every sample: the same bytes, for reference rows (copies among them) and
    new rows, in references smaller and larger than a sample."""
    rng = np.random.default_rng(rows)
    reference = torch.from_numpy(rng.normal(size=(rows, 3)).astype(np.float32))
    reference[-1] = reference[0]  # a copy: its nearest other row is at 0
    rows_given = torch.cat(
        [reference, torch.from_numpy(rng.normal(size=(7, 3)).astype(np.float32))]
    )
    samples = torch.from_numpy(sampled.draw(rows))
    found = neighbours.nearest_k(reference, rows_given)
    assert found.itself[:rows].any() and not found.itself[rows:].any()
    eager = neighbours.sampled_term(found, samples)
    assert torch.equal(eager, neighbours.sampled_term(found, samples, graph=True))


def test_a_group_among_the_training_rows_is_far_from_most_samples() -> None:
    """Why the term is there: ten copies-to-be of one anomaly among 2,000 normal rows are
    each other's nearest rows (the neighbour distance calls them the most normal of all),
    but most samples of 64 rows hold none of them."""
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(2000, 4))
    group = 6.0 + 0.01 * rng.normal(size=(10, 4))
    reference = torch.from_numpy(np.vstack([normal, group]))
    drawn = torch.from_numpy(sampled.draw(len(reference)))
    found = neighbours.nearest_k(reference, reference)
    far = neighbours.sampled_term(found, drawn).numpy()
    near = found.near.numpy()
    assert near[2000:].max() < np.quantile(near[:2000], 0.01)
    assert far[2000:].min() > np.quantile(far[:2000], 0.99)


def test_training_reads_the_term_on_the_reference_rows_as_score_does(
    tmp_path: Path, table_csv: Path
) -> None:
    """The stored percentiles are of the reference rows' own terms: scoring the training
    rows again gives them, and two seeds keep the same samples."""
    from aecli.diagnostics import percentiles, row_terms
    from aecli.io import read_table

    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path, seed in ((first, "0"), (second, "1")):
        assert invoke(["train", table_csv, "-o", path, "--epochs", "2", "--seed", seed]).code == 0
    fitted = modelfile.load(str(first))
    stats = fitted.code_stats
    assert stats is not None and stats.grids is not None and stats.samples is not None
    again = row_terms(fitted, read_table(str(table_csv)).values)["sampled"]
    np.testing.assert_allclose(percentiles(again), stats.grids["sampled"], rtol=1e-5)
    other = modelfile.load(str(second)).code_stats
    assert other is not None and other.samples is not None
    np.testing.assert_array_equal(stats.samples, other.samples)


def test_files_before_the_sampled_term_keep_their_score(tmp_path: Path, table_csv: Path) -> None:
    """Format 9 files: the distance to the nearest row counts half, and no sampled term
    (against a file of today without its tails' spans and its marginal term, which format 9
    did not have either)."""
    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model, before = tmp_path / "m.safetensors", tmp_path / "before.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    rows = read_table(str(table_csv)).values
    thirteen = tmp_path / "thirteen.safetensors"
    rewrite_model(model, thirteen, _as_format_13)
    now = row_terms(modelfile.load(str(thirteen)), rows)
    arrays = rewrite_model(thirteen, before, _without_the_sampled_term)
    old = row_terms(modelfile.load(str(before)), rows)
    assert "sampled" not in old and "sampled" in now
    nearest = tails.tail(now["neighbour"], arrays["terms.neighbour"])
    far = tails.tail(now["sampled"], arrays["terms.sampled"])
    np.testing.assert_allclose(old["neighbour"], now["neighbour"])
    np.testing.assert_allclose(
        old["score"], now["score"] + 0.25 * nearest - 0.25 * far, rtol=1e-5, atol=1e-5
    )


def _without_the_sampled_term(arrays: dict[str, np.ndarray]) -> None:
    for name in LATER:
        del arrays[name]


def _as_format_13(arrays: dict[str, np.ndarray]) -> None:
    later = ("span.", "marginal.", "terms.marginal", "power.")  # formats 14, 15 and 16
    for name in [name for name in arrays if name.startswith(later)]:
        del arrays[name]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s[:, :0], "samples do not match the neighbour rows"),
        (lambda s: s + 0.5, "samples are not row numbers"),
        (lambda s: s * 1000, "samples are not distinct neighbour rows"),
        (lambda s: s[:, ::-1].copy(), "samples are not distinct neighbour rows"),
    ],
)
def test_samples_that_are_not_reference_rows_are_refused(
    tmp_path: Path, table_csv: Path, change, says: str
) -> None:
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "1", "-q"]).code == 0

    def damage(arrays: dict[str, np.ndarray]) -> None:
        arrays["neighbours.samples"] = change(arrays["neighbours.samples"]).astype(np.float32)

    rewrite_model(model, model, damage)
    result = invoke(["score", model, table_csv])
    assert result.code != 0 and says in result.stderr
    assert "Traceback" not in result.stderr and not result.text


def test_the_weights_split_the_nearest_distance_between_its_two_readings() -> None:
    grids = {name: np.zeros(3) for name in tails.WEIGHTS}
    weights = tails.weights(grids)
    assert weights["neighbour"] == weights["sampled"] == 0.25
    assert math.isclose(weights["neighbour"] + weights["sampled"], weights["relative"])
    del grids["sampled"]
    assert tails.weights(grids)["neighbour"] == 0.5 and "sampled" not in tails.weights(grids)
