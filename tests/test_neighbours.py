"""The anomaly score's neighbour term and tail transform (aecli/neighbours.py), by formula."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import copies, modelfile, neighbours, tails
from tests.conftest import invoke


def _neighbourhood(
    reference: torch.Tensor,
    rows: torch.Tensor,
    reach: torch.Tensor | None = None,
    *,
    graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The nearest distance, the mean distance to the k nearest and, given ``reach``, the
    mean reach around (``reach_around``): what ``neighbour_terms`` builds its terms from."""
    found = neighbours.nearest_k(reference, rows)
    if reach is None:
        return found.near, found.mean, None
    return found.near, found.mean, neighbours.reach_around(reference, found, reach, graph=graph)


def test_nearest_skips_the_row_itself_but_not_a_copy() -> None:
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [10.0, 0.0]])
    rows = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [10.0, 0.0]])
    got = neighbours.nearest(reference, rows).numpy()
    # [0, 0] meets itself, then [3, 4] at 5; [3, 4] meets itself and its copy: 0;
    # [1, 1] is new: sqrt 2 to [0, 0]; [10, 0] meets itself, then [3, 4] at sqrt(65)
    np.testing.assert_allclose(got, [5.0, 0.0, math.sqrt(2), math.sqrt(65)], rtol=1e-6)
    np.testing.assert_allclose(
        neighbours.nearest(reference[:1], torch.tensor([[3.0, 4.0]])).numpy(), [5.0]
    )


def test_the_reference_is_bounded_by_rows_and_values() -> None:
    assert neighbours.reference_size(500, 10) == 500
    assert neighbours.reference_size(50_000, 10) == neighbours.REFERENCE_ROWS
    # 2,000,000 values fit in float32; 10,000 x 500 do not, and float16 holds 8,388 rows
    assert neighbours.reference_size(10_000, 200) == 10_000
    rows = neighbours.reference_size(10_000, 500)
    assert rows == 2 * neighbours.REFERENCE_VALUES // 500 == 8388
    assert rows * 500 * 2 <= 8 * 2**20  # bytes of float16: the bound float32 had


def test_a_reference_is_float16_only_where_float32_would_drop_rows_and_it_fits() -> None:
    width = 1100
    narrow = np.zeros((neighbours.REFERENCE_VALUES // width, width), np.float32)
    assert not neighbours.stored_half(narrow)
    wide = np.zeros((len(narrow) + 1, width), np.float32)
    assert neighbours.stored_half(wide)
    wide[0, 0] = 40_000.0  # a raw 16-bit picture level: float16 would round it to inf
    assert not neighbours.stored_half(wide)


def test_a_wide_table_keeps_every_row_in_a_bounded_model_file(tmp_path: Path) -> None:
    data = tmp_path / "wide.npy"
    np.save(data, np.random.default_rng(0).normal(size=(2500, 1100)).astype(np.float32))
    model = tmp_path / "m.safetensors"
    assert invoke(["train", data, "-o", model, "--epochs", "1", "-q"]).code == 0
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.reference is not None
    # 2,750,000 values: float32's bound held 1,906 of the rows, float16 holds them all
    assert stats.reference.shape == (2500, 1100) and stats.reference.dtype == np.float32
    _, header, _ = modelfile.read_header(str(model))
    assert header["neighbours.reference"]["dtype"] == "F16"
    assert model.stat().st_size < 20 * 2**20


def test_a_float16_reference_scores_the_training_rows_as_training_did(
    tmp_path: Path, table_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terms training reads its percentiles from are those of the rows the file holds
    (rounded to float16 before the reach and the percentiles), so ``score`` of the training
    file flags the share asked for, and a training row still skips itself."""
    monkeypatch.setattr(neighbours, "REFERENCE_VALUES", 256)  # float32 would keep a few rows
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "3", "-q"]).code == 0
    _, header, _ = modelfile.read_header(str(model))
    assert header["neighbours.reference"]["dtype"] == "F16"
    stats = modelfile.load(str(model)).code_stats
    assert stats is not None and stats.reference is not None
    assert stats.reference.shape == (2 * 256 // 10, 10)  # twice float32's 25 rows
    np.testing.assert_array_equal(stats.reference, stats.reference.astype(np.float16))
    result = invoke(["score", model, table_csv, "--contamination", "0.1"])
    flags = np.loadtxt(result.text.splitlines()[1:], delimiter=",")[:, 1]
    assert flags.mean() == pytest.approx(0.1, abs=0.02)


def test_rows_too_large_for_float16_keep_float32s_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw 16-bit picture levels overflow float16: a seeded sample float32 holds instead."""
    monkeypatch.setattr(neighbours, "REFERENCE_VALUES", 64 * 64)  # 64 rows of 8x8 in float32
    rng = np.random.default_rng(0)
    data = tmp_path / "levels.npy"
    np.save(data, rng.integers(0, 60_000, size=(200, 8, 8)).astype(np.float32))
    model = tmp_path / "m.safetensors"
    flags = ["--scale", "none", "--epochs", "2", "--val-fraction", "0", "-q"]
    assert invoke(["train", data, "-o", model, *flags]).code == 0  # the percentiles: its rows
    _, header, _ = modelfile.read_header(str(model))
    assert header["neighbours.reference"]["dtype"] == "F32"
    assert header["neighbours.reference"]["shape"] == [64, 64]
    result = invoke(["score", model, data, "--contamination", "0.1"])
    flags_out = np.loadtxt(result.text.splitlines()[1:], delimiter=",")[:, 1]
    assert flags_out.mean() == pytest.approx(0.1, abs=0.03)


def test_scores_are_calibrated_on_the_rows_trained_on(tmp_path: Path, table_csv: Path) -> None:
    """Rows scored against a reference that holds them would score low and --contamination
    would flag too many new rows: the training percentiles are of rows that skip themselves,
    as every scored row does, so the training file gets the share it asked for."""
    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "5", "-q"]).code == 0
    result = invoke(["score", model, table_csv, "--contamination", "0.1"])
    flags = np.loadtxt(result.text.splitlines()[1:], delimiter=",")[:, 1]
    assert flags.mean() == pytest.approx(0.1, abs=0.02)


def test_one_row_at_a_time_scores_as_all_at_once(tmp_path: Path, table_csv: Path) -> None:
    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "3", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    rows = read_table(str(table_csv)).values[:40]
    together = row_terms(fitted, rows, parts=True)
    alone = [row_terms(fitted, rows[i : i + 1], parts=True) for i in range(40)]
    for key in ("score", "parts"):  # the score and what each term adds to it (--terms)
        np.testing.assert_array_equal(np.concatenate([one[key] for one in alone]), together[key])


def test_the_neighbour_term_is_the_tables_not_the_seeds(tmp_path: Path, table_csv: Path) -> None:
    """Two seeds hold out different rows and train different networks, but the neighbour
    term involves no network: both files keep every row given (held-out ones too) and the
    same leave-one-out distances, so its part of the score cannot move with --seed."""
    from aecli.io import read_table

    kept = []
    for seed in ("0", "1"):
        model = tmp_path / f"m{seed}.safetensors"
        argv = ["train", table_csv, "-o", model, "--epochs", "2", "--seed", seed, "-q"]
        assert invoke(argv).code == 0
        stats = modelfile.load(str(model)).code_stats
        assert stats is not None and stats.reference is not None and stats.grids is not None
        kept.append((stats.reference, stats.grids["neighbour"], stats.grids["residual"]))
    rows = read_table(str(table_csv)).values
    assert len(kept[0][0]) == len(rows)  # the validation rows are in the reference too
    np.testing.assert_array_equal(kept[0][0], kept[1][0])
    np.testing.assert_array_equal(kept[0][1], kept[1][1])
    assert not np.array_equal(kept[0][2], kept[1][2])  # the networks' terms do differ


def test_neighbourhood_averages_the_k_nearest_and_the_reach_of_every_tie() -> None:
    # a line of points 0, 1, ..., 11 (k = 10 of the 11 others); the row at 0 skips itself
    reference = torch.arange(12, dtype=torch.float32)[:, None]
    reach = torch.arange(1, 13, dtype=torch.float32)
    rows = torch.tensor([[0.0], [5.5], [20.0]])
    near, mean, around = _neighbourhood(reference, rows, reach)
    assert around is not None
    np.testing.assert_allclose(near.numpy(), [1.0, 0.5, 9.0], rtol=1e-6)
    # 0: the others 1..10; 20: 19..10 away from 11..2
    assert mean[0].item() == pytest.approx(5.5) and mean[2].item() == pytest.approx(13.5)
    # 5.5 is 0.5, 0.5, 1.5, 1.5, ..., 4.5, 4.5 from its ten nearest (1..10), and 5.5 from
    # both 0 and 11: the tenth distance is 4.5, so rows 1..10 count, not the tied pair
    assert mean[1].item() == pytest.approx(2.5)
    np.testing.assert_allclose(around.numpy(), [6.5, 6.5, 7.5], rtol=1e-6)
    # a tie at the k-th distance counts whole: 5 is 5 from both 0 and 10, its 9th and 10th
    _, _, around = _neighbourhood(reference, torch.tensor([[5.0]]), reach)
    assert around is not None  # rows 1..10 within 5, plus row 0 tied with row 10
    assert around.item() == pytest.approx(float(reach[:11].sum() - reach[5]) / 10)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 0.9])
def test_a_row_just_past_the_kth_counts_in_part_so_its_rounding_moves_little(
    share: float,
) -> None:
    """(5 + e, 0.1) is about 5 - e from (10, 0), its tenth nearest, and 5 + e from (0, 0):
    past the tenth by 20e in squared distance. Within TIE_SHARE of the tenth's it counts the
    more, the nearer it is, so a float32 rounding of either distance (torch against
    onnxruntime) moves the reach by a rounding's worth, not by a whole row's."""
    reference = torch.zeros(12, 2, dtype=torch.float64)
    reference[:, 0] = torch.arange(12)
    reach = torch.arange(1, 13, dtype=torch.float64)  # row i's reach is i + 1
    e = (1.0 - share) * neighbours.TIE_SHARE * 25.0 / 20.0
    row = torch.tensor([[5.0 + e, 0.1]], dtype=torch.float64)
    tenth, past = (5.0 - e) ** 2 + 0.01, (5.0 + e) ** 2 + 0.01
    weight = 1.0 - (past - tenth) / (neighbours.TIE_SHARE * tenth)
    assert weight == pytest.approx(share, abs=2e-3)
    for graph in (False, True):
        around = _neighbourhood(reference, row, reach, graph=graph)[2]
        assert around is not None
        # rows 1..10 (reach 2..11, 65 in all) whole, row 0 (reach 1) by its weight
        assert around.item() == pytest.approx((65.0 + weight) / (10.0 + weight), rel=1e-9)


def test_the_relative_term_sees_a_row_off_a_dense_cluster_that_distance_misses() -> None:
    """The local outlier factor's case: the same distance is ordinary in a sparse cluster
    and unusual beside a dense one."""
    rng = np.random.default_rng(0)
    dense = rng.normal(0.0, 0.1, size=(200, 2))
    sparse = rng.normal(10.0, 2.0, size=(200, 2))
    reference = torch.from_numpy(np.concatenate([dense, sparse]).astype(np.float32))
    means = _neighbourhood(reference, reference)[1]
    reach = neighbours.reaches(means)
    rows = torch.tensor([[0.5, 0.5], [13.0, 13.0]])  # beside the dense one, in the sparse
    near, mean, around = _neighbourhood(reference, rows, reach)
    assert around is not None
    relative = neighbours.relative(mean, around)
    assert near[0] < near[1]  # by distance the first is the less unusual
    assert relative[0] > 3 * relative[1]  # relative to its neighbours it is
    assert 0.5 < relative[1] < 2.0  # a row like its neighbours: about 1


def test_files_before_the_relative_term_keep_their_score(tmp_path: Path, table_csv: Path) -> None:
    from safetensors.numpy import load_file

    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    rows = read_table(str(table_csv)).values
    now = row_terms(modelfile.load(str(model)), rows)
    metadata, _, _ = modelfile.read_header(str(model))
    arrays = load_file(str(model))
    assert arrays["neighbours.reach"].shape == (len(rows),)
    later = ("neighbours.reach", "terms.relative", "terms.density")
    later += ("neighbours.samples", "terms.sampled", "terms.mixture", "terms.marginal")
    kept = {
        k: v
        for k, v in arrays.items()
        if k not in later
        and not k.startswith(("density.", "floor.", "lower.", "mixture.", "span.", "marginal."))
        and not k.startswith("power.")
    }
    before = tmp_path / "before.safetensors"
    before.write_bytes(modelfile.serialize(kept, metadata))
    fitted = modelfile.load(str(before))
    assert fitted.code_stats is not None and fitted.code_stats.grids is not None
    old = row_terms(fitted, rows)
    assert "relative" not in old
    grids = fitted.code_stats.grids
    want = (
        0.5 * tails.tail(old["residual"], grids["residual"])
        + 0.5 * tails.tail(old["distance"], grids["code"])
        + tails.tail(old["neighbour"], grids["neighbour"])
    )
    np.testing.assert_allclose(old["score"], want, rtol=1e-5)
    median = tails.MEDIAN  # today's file counts the autoencoder's terms above their medians
    code = np.maximum(  # the rarer of the code's two readings (format 12)
        tails.tail(now["distance"], grids["code"]),
        tails.tail(now["mixture"], arrays["terms.mixture"]),
    )
    counts = [  # weight, count; each count to the power 1.25 (format 16)
        (0.5, np.maximum(tails.tail(now["residual"], grids["residual"]) - median, 0)),
        (
            0.5,
            np.maximum(code - median, 0) + 0.5 * tails.lower_tail(now["distance"], grids["code"]),
        ),
        (0.25, tails.tail(now["neighbour"], grids["neighbour"])),
        (0.25, tails.tail(now["sampled"], arrays["terms.sampled"])),
        (0.5, tails.tail(now["relative"], arrays["terms.relative"])),
        (0.25, tails.tail(now["density"], arrays["terms.density"])),  # and its second view:
        (
            0.25,
            tails.tail(now["marginal"], arrays["terms.marginal"], None, *arrays["span.marginal"]),
        ),
    ]
    new = sum(weight * count**1.25 for weight, count in counts)
    np.testing.assert_allclose(now["score"], new, rtol=1e-5)


def test_files_before_the_density_term_keep_four_terms(tmp_path: Path, table_csv: Path) -> None:
    from safetensors.numpy import load_file

    from aecli.diagnostics import row_terms
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    rows = read_table(str(table_csv)).values
    metadata, _, _ = modelfile.read_header(str(model))
    arrays = load_file(str(model))
    kept = {
        k: v
        for k, v in arrays.items()
        if k not in ("terms.density", "terms.sampled", "neighbours.samples", "terms.mixture")
        and k != "terms.marginal"
        and "density." not in k
        and not k.startswith(("floor.", "lower.", "mixture.", "span.", "marginal.", "power."))
    }
    # density.{mean,axes,low,step,knots}, terms.density, floor.{residual,code}, lower.code,
    # neighbours.samples, terms.sampled, mixture.{weights,means,precisions,centre,axes},
    # terms.mixture, span.* (one for each of the 8 terms' percentiles), marginal.{low,step,
    # knots}, terms.marginal, and power.* (one for each of the 7 terms the score adds)
    assert len(kept) == len(arrays) - 36
    before = tmp_path / "before.safetensors"
    before.write_bytes(modelfile.serialize(kept, metadata))
    old = row_terms(modelfile.load(str(before)), rows)
    assert "density" not in old and "relative" in old
    four = sum(
        0.5 * tails.tail(old[key], arrays[f"terms.{name}"])
        for key, name in (
            ("residual", "residual"),
            ("distance", "code"),
            ("neighbour", "neighbour"),
            ("relative", "relative"),
        )
    )
    np.testing.assert_allclose(old["score"], four, rtol=1e-5)


def test_a_reach_that_does_not_match_the_reference_is_refused(
    tmp_path: Path, table_csv: Path
) -> None:
    from safetensors.numpy import load_file

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "1", "-q"]).code == 0
    metadata, _, _ = modelfile.read_header(str(model))
    arrays = load_file(str(model))
    arrays["neighbours.reach"] = arrays["neighbours.reach"][:-1]
    model.write_bytes(modelfile.serialize(arrays, metadata))
    result = invoke(["score", model, table_csv])
    assert result.code != 0 and "reach does not match" in result.stderr


def test_the_stored_percentiles_are_the_rows_given_or_the_held_out_ones(
    tmp_path: Path, table_csv: Path
) -> None:
    """The score percentiles are those of every row given (training reuses its reference
    rows' leave-one-out terms: scoring the rows again gives the same), or where higher
    those of the held-out rows, scored with a density fitted without them."""
    from dataclasses import replace

    from aecli import density
    from aecli.config import ROWS_SEED
    from aecli.diagnostics import percentiles, score_quantiles
    from aecli.io import read_table

    model = tmp_path / "m.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--epochs", "2", "-q"]).code == 0
    fitted = modelfile.load(str(model))
    rows = read_table(str(table_csv)).values
    given = score_quantiles(fitted, rows)["score"]
    held = np.zeros(len(rows), dtype=bool)  # the rows training held out (10%, a fixed seed)
    held[np.random.default_rng(ROWS_SEED).choice(len(rows), round(0.1 * len(rows)), False)] = True
    stats = fitted.code_stats
    assert stats is not None and stats.reference is not None and stats.grids is not None
    assert len(stats.reference) == len(rows)  # every row, in order, in the distances' units
    own = density.fit(stats.reference[~held])
    grids = {**stats.grids, "density": percentiles(own.term(stats.reference[~held]))}
    unseen = replace(fitted, code_stats=replace(stats, density=own, grids=grids))
    held_out = score_quantiles(unseen, rows[held])["score"]
    stored = fitted.score_quantiles["score"]
    np.testing.assert_allclose(stored, np.maximum(given, held_out), rtol=1e-6)
    assert (held_out > given).any() and (held_out < given).any()  # each sets some of them


def test_contamination_flags_about_the_share_of_new_rows_on_a_small_table(
    tmp_path: Path,
) -> None:
    """An autoencoder of 64 inputs learns 180 training rows closely, so new rows like them
    score above the training rows' 90th percentile far more often than 10% (137 image
    embeddings of 512: 100%). The held-out rows, scored as new ones, raise the stored
    percentiles there: about the share asked is flagged, not most rows."""
    from aecli.diagnostics import score_quantiles, threshold_for

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 64))
    table = (rng.normal(size=(400, 8)) @ basis + 0.3 * rng.normal(size=(400, 64))).astype("f4")
    train, new = tmp_path / "train.npy", tmp_path / "new.npy"
    np.save(train, table[:200])
    np.save(new, table[200:])
    model = tmp_path / "m.safetensors"
    assert invoke(["train", train, "-o", model, "--epochs", "30", "-q"]).code == 0
    given = score_quantiles(modelfile.load(str(model)), table[:200])["score"]
    result = invoke(["score", model, new, "--contamination", "0.1"])
    assert result.code == 0, result.stderr
    scores = np.loadtxt(result.text.splitlines()[1:], delimiter=",")
    assert np.mean(scores[:, 0] > threshold_for(given, 0.1)) > 0.5  # the rows given: most
    assert 0.02 <= scores[:, 1].mean() <= 0.2


def test_the_unseen_density_is_fitted_without_the_held_out_rows() -> None:
    """The density the held-out rows are scored with, and its terms on the other rows (its
    training distribution); none where no row, or every row, is held out."""
    from aecli import density

    rows = np.random.default_rng(2).normal(size=(30, 3))
    held = np.arange(30) < 5
    unseen = neighbours.unseen_density(rows, held)
    assert unseen is not None
    own, terms = unseen
    alone = density.fit(rows[5:])
    np.testing.assert_array_equal(own.axes, alone.axes)
    np.testing.assert_array_equal(terms, alone.term(rows[5:]))
    assert not np.array_equal(own.axes, density.fit(rows).axes)
    assert neighbours.unseen_density(rows, None) is None
    assert neighbours.unseen_density(rows, np.zeros(30, dtype=bool)) is None
    assert neighbours.unseen_density(rows, np.ones(30, dtype=bool)) is None


def test_copies_among_the_rows_keep_the_relative_term_finite() -> None:
    """Most rows repeated more than k times have no distance to their neighbours: their
    reach is floored at a share of the mean, so a row beside them is far, not infinitely
    far, and a spread-out row among them keeps the copies' reach in its average."""
    copies = np.zeros((60, 2))
    spread = np.array([[1e4, 0.0], [0.0, 1e4], [-1e4, 0.0], [3.0, 4.0]])
    reference = torch.from_numpy(np.concatenate([copies, spread]).astype(np.float32))
    reach = neighbours.reaches(_neighbourhood(reference, reference)[1])
    assert (reach > 0).all()
    rows = torch.cat([reference, torch.tensor([[0.1, 0.0]])])
    _, mean, around = _neighbourhood(reference, rows, reach)
    assert around is not None
    relative = neighbours.relative(mean, around)
    assert torch.isfinite(relative).all() and (around > 0).all()
    assert relative[-1] > relative[0]  # the row beside the copies is the more unusual


def test_a_row_among_copies_reaches_to_the_rows_that_are_not_its_copies() -> None:
    """Breunig et al.'s k-distinct distance: a row's copies are left out of its own k
    nearest, the other rows count as often as they come, rows without copies keep theirs."""
    kinds = [([0.0, 0.0], 3), ([1.0, 0.0], 5), ([4.0, 0.0], 10), ([9.0, 0.0], 1)]
    reference = torch.tensor([row for row, times in kinds for _ in range(times)])
    mean = torch.full((len(reference),), -1.0)
    got = copies.apart_from_copies(reference, mean, 10).numpy()
    # [0, 0]: five [1, 0] at 1 and five of the ten [4, 0] at 4; [1, 0]: three at 1, seven
    # at 3; [4, 0]: all nine others (there are not ten), five at 3, three at 4, one at 5;
    # [9, 0] has no copy and keeps its own
    want = [2.5] * 3 + [2.4] * 5 + [32 / 9] * 10 + [-1.0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    alone = torch.zeros(5, 2)  # every other row is a copy: no distance, the mean stays
    np.testing.assert_array_equal(copies.apart_from_copies(alone, torch.zeros(5), 4), 0.0)
    spread = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])
    own = torch.tensor([1.5, 2.0, 2.5])
    assert copies.apart_from_copies(spread, own, 2) is own  # no copies: untouched


def test_a_row_one_step_off_a_repeated_row_is_not_far_for_where_it_is() -> None:
    """On a table of grades where most rows repeat a few, a new row one grade from them is
    ordinary for the relative term; with the copies' reach at its floor it counted about
    100 times as far off as they are apart, beyond every training row."""
    from aecli import Autoencoder

    rng = np.random.default_rng(0)
    repeated = np.repeat([[1, 1, 1, 1], [1, 2, 1, 1], [2, 1, 1, 1]], [120, 60, 40], axis=0)
    spread = rng.integers(1, 11, size=(100, 4))
    rows = np.concatenate([repeated, spread]).astype(np.float32)
    model = Autoencoder(epochs=3, seed=1).fit(rows)
    # one grade on from [1, 2, 1, 1] and from [2, 1, 1, 1], as they are from [1, 1, 1, 1]
    steps = np.array([[1, 3, 1, 1], [3, 1, 1, 1], [1, 1, 1, 1]], dtype=np.float32)
    relative = model.score_terms(steps)["relative"]
    trained = model.score_terms(rows)["relative"]
    assert relative[2] == 0.0  # a copy of the commonest row
    assert (relative[:2] <= np.quantile(trained, 0.9)).all()  # 5.7 and 4.5 at the floor


def test_the_quick_and_the_graphs_reach_agree_on_ties() -> None:
    """Scoring averages the kept rows' reach and compares every reference row only where a
    tie lies past the k-th; the ONNX graph compares all: on integer rows, where most rows
    tie, both give the same terms."""
    rng = np.random.default_rng(1)
    reference = torch.from_numpy(rng.integers(0, 3, size=(300, 4)).astype(np.float32))
    reach = neighbours.reaches(_neighbourhood(reference, reference)[1])
    rows = torch.cat(
        [reference[:50], torch.from_numpy(rng.normal(1, 1, (50, 4)).astype(np.float32))]
    )
    quick = _neighbourhood(reference, rows, reach)
    graph = _neighbourhood(reference, rows, reach, graph=True)
    for got, want in zip(quick, graph):
        assert got is not None and want is not None
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def _distance_terms(model: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    from aecli.diagnostics import row_terms

    terms = row_terms(modelfile.load(str(model)), rows)
    return {name: terms[name] for name in ("neighbour", "relative", "density")}


def test_a_table_and_its_min_max_copy_have_the_same_distances(
    tmp_path: Path, table: np.ndarray
) -> None:
    """The autoencoder keeps a [0, 1] table's units, but the distances count each column by
    its own robust spread on any table: those of a table and of its min-max normalised copy
    (the commonest preprocessing) are the same, new rows and far ones included."""
    wide = table.astype(np.float64) * np.geomspace(1e-3, 1e3, table.shape[1])
    low, span = wide.min(0), np.ptp(wide, 0)
    unit = (wide - low) / span
    rng = np.random.default_rng(3)
    new = wide[:40] + rng.normal(scale=0.3, size=(40, wide.shape[1])) * wide.std(0)
    new[0] *= 50.0  # beyond the robust clip in some columns
    models = {}
    for name, rows in (("raw", wide), ("unit", unit)):
        data, models[name] = tmp_path / f"{name}.npy", tmp_path / f"{name}.safetensors"
        np.save(data, rows.astype(np.float32))
        assert invoke(["train", data, "-o", models[name], "--epochs", "2", "-q"]).code == 0
    raw, unit_fit = (modelfile.load(str(models[k])) for k in ("raw", "unit"))
    assert raw.scaler.method == "robust" and unit_fit.scaler.method == "none"
    assert raw.code_stats.units is None and unit_fit.code_stats.units is not None
    got = _distance_terms(models["unit"], ((new - low) / span).astype(np.float32))
    want = _distance_terms(models["raw"], new.astype(np.float32))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-4, err_msg=name)


def test_a_flag_outweighs_no_narrow_column_in_the_distances(tmp_path: Path) -> None:
    """In [0, 1] units a share that never leaves [0, 0.02] counts for nothing beside a flag:
    in its own units a share ten spreads out is farther than a flag half set (one spread)."""
    rng = np.random.default_rng(4)
    share = rng.normal(0.01, 0.001, size=(400, 1))
    flags = (rng.uniform(size=(400, 3)) < 0.5).astype(np.float64)
    rows = np.hstack([share, flags]).astype(np.float32)
    data, model = tmp_path / "t.npy", tmp_path / "m.safetensors"
    np.save(data, rows)
    assert invoke(["train", data, "-o", model, "--epochs", "2", "-q"]).code == 0
    probe = rows[:2].copy()
    probe[0, 0] = 0.02  # ten spreads off
    probe[1, 1] = 0.5  # 0.5 off in [0, 1] units, a spread in the flag's own
    terms = _distance_terms(model, probe)
    assert terms["neighbour"][0] > 2 * terms["neighbour"][1]  # 10 spreads (clipped at 5) vs 1
    assert terms["density"][0] > terms["density"][1]


def test_a_damaged_units_tensor_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    rows = np.random.default_rng(5).uniform(size=(60, 3)).astype(np.float32)
    data, model = tmp_path / "t.npy", tmp_path / "m.safetensors"
    np.save(data, rows)
    assert invoke(["train", data, "-o", model, "--epochs", "2", "-q"]).code == 0
    metadata, _, _ = modelfile.read_header(str(model))
    arrays = load_file(str(model))
    for change, said in (
        ({"neighbours.scale": -arrays["neighbours.scale"]}, "not finite and positive"),
        ({"neighbours.offset": arrays["neighbours.offset"][:2]}, "number of inputs"),
        ({"neighbours.scale": None}, "incomplete"),
    ):
        damaged = tmp_path / "d.safetensors"
        changed = {k: v for k, v in {**arrays, **change}.items() if v is not None}
        damaged.write_bytes(modelfile.serialize(changed, metadata))
        result = invoke(["score", damaged, data])
        assert result.code != 0 and said in result.stderr and "Traceback" not in result.stderr
