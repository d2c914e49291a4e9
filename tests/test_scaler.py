"""Scaling: what --scale auto chooses and why, the robust scaler's formulas, old files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aecli import modelfile
from aecli.scaler import IQR_SIGMA, ROBUST_CLIP, Scaler, choose
from tests.conftest import FAST, assert_same_table, invoke

DATA = Path(__file__).parent / "data"


def test_auto_keeps_unit_data_gives_images_one_range_and_tables_robust() -> None:
    low, high = np.zeros(4), np.ones(4)
    assert choose(low, high, (4,), False)[0] == "none"
    assert choose(low, 16 * high, (2, 2), False)[0] == "global"
    assert choose(low, 16 * high, (4,), False)[0] == "robust"
    assert choose(low, 16 * high, (4,), True)[0] == "minmax"  # bce needs [0, 1]


def test_robust_scaler_is_median_and_the_smaller_of_iqr_and_std() -> None:
    """The spread is the smaller of two estimates of a normal column's sigma: the
    interquartile one for a heavy-tailed column, the deviation for a light-tailed one (two
    modes) and for a column with no interquartile spread (a flag that is mostly 0)."""
    rng = np.random.default_rng(0)
    values = np.column_stack(
        [
            rng.normal(3, 2, 1000),
            rng.standard_cauchy(1000),
            (rng.random(1000) < 0.05) * 1.0,
            (rng.random(1000) < 0.5) * 16.0,  # a pixel on or off
        ]
    ).astype(np.float32)
    scaler = Scaler.fit(values, "auto", row_shape=(4,))
    assert scaler.method == "robust" and scaler.clip == ROBUST_CLIP and "median" in scaler.reason
    data = values.astype(np.float64)
    q1, mid, q3 = np.quantile(data, [0.25, 0.5, 0.75], axis=0)
    iqr, std = (q3 - q1) / IQR_SIGMA, data.std(0)
    np.testing.assert_allclose(scaler.offset, mid, rtol=1e-6)
    np.testing.assert_allclose(scaler.scale[:2], np.minimum(iqr, std)[:2], rtol=1e-6)
    assert scaler.scale[1] == pytest.approx(iqr[1], rel=1e-6)  # the Cauchy column: its IQR
    assert std[1] > 10 * iqr[1]
    assert scaler.scale[2] == pytest.approx(std[2], rel=1e-5)  # no interquartile spread
    assert iqr[3] > 1.4 * std[3] and scaler.scale[3] == pytest.approx(std[3], rel=1e-5)
    scaled = scaler.transform(values)
    assert scaled.min() >= -ROBUST_CLIP and scaled.max() <= ROBUST_CLIP
    assert np.abs(scaler.transform(values, clip=False)).max() > 100  # the Cauchy tail
    # The normal column is barely touched by the clip, and round-trips.
    inside = np.abs(scaled[:, 0]) < ROBUST_CLIP
    np.testing.assert_allclose(scaler.inverse(scaled)[inside, 0], values[inside, 0], atol=1e-5)


def test_streamed_fit_matches_in_memory_fit() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=(500, 3)).astype(np.float32)
    whole = Scaler.fit(values, "auto", row_shape=(3,))
    chunks = Scaler.fit_chunks(np.array_split(values, 4), "auto", row_shape=(3,), sample=values)
    np.testing.assert_allclose(chunks.offset, whole.offset)
    np.testing.assert_allclose(chunks.scale[:2], whole.scale[:2], rtol=1e-5)
    for method in ("minmax", "standard", "global", "none"):
        a = Scaler.fit(values, method)
        b = Scaler.fit_chunks(np.array_split(values, 3), method)
        np.testing.assert_allclose(a.offset, b.offset, rtol=1e-5)
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-5)


def test_image_npy_and_unit_csv_keep_their_units(tmp_path: Path, digits: np.ndarray) -> None:
    np.save(tmp_path / "d.npy", digits[:200].reshape(-1, 8, 8))
    unit = tmp_path / "unit.csv"
    np.savetxt(unit, digits[:200] / 16, delimiter=",", fmt="%.5f")
    for data, method in ((tmp_path / "d.npy", "global"), (unit, "none")):
        model = tmp_path / f"{method}.safetensors"
        result = invoke(["train", data, "-o", model, "--kind", "vae", *FAST])
        assert result.code == 0, result.stderr
        fitted = modelfile.load(str(model))
        assert fitted.scaler.method == method
        assert fitted.config.loss == "bce"  # a Bernoulli decoder on [0, 1] data
        info = invoke(["info", model]).text
        assert f"scaling       {method} (auto: " in info
    fitted = modelfile.load(str(tmp_path / "global.safetensors"))
    assert set(fitted.scaler.offset.tolist()) == {0.0} and set(fitted.scaler.scale) == {16.0}


def test_vae_on_a_table_gets_a_gaussian_decoder(tmp_path: Path, table_csv: Path) -> None:
    model = tmp_path / "v.safetensors"
    assert invoke(["train", table_csv, "-o", model, "--kind", "vae", *FAST]).code == 0
    fitted = modelfile.load(str(model))
    assert fitted.scaler.method == "robust" and fitted.config.loss == "mse"
    # Asking for bce makes auto give each column its [0, 1] range instead.
    args = ["train", table_csv, "-o", model, "--kind", "vae", "--loss", "bce", *FAST]
    assert invoke(args).code == 0
    fitted = modelfile.load(str(model))
    assert fitted.scaler.method == "minmax" and fitted.config.loss == "bce"
    refused = invoke([*args, "--scale", "standard"])
    assert refused.code == 2 and "cross-entropy needs inputs in [0, 1]" in refused.stderr


@pytest.mark.determinism
@pytest.mark.parametrize("kind", ["basic", "vae"])
def test_files_written_before_auto_scaling_behave_as_before(tmp_path: Path, kind: str) -> None:
    """Golden files from format 1 before this change, with the outputs that aecli gave then."""
    model = DATA / f"format1-{kind}.safetensors"
    rows = DATA / "format1-rows.csv"
    meta = modelfile.read_metadata(str(model))
    assert meta["aecli.train"]["scale"] == "minmax" and "scale_clip" not in meta["aecli.data"]
    for command, name in (("encode", "codes"), ("reconstruct", "recon"), ("score", "scores")):
        result = invoke([command, model, rows])
        assert result.code == 0, result.stderr
        assert_same_table(result.text, (DATA / f"format1-{kind}-{name}.csv").read_text())
    info = json.loads(invoke(["info", model, "--json"]).text)
    assert info["data"]["scale"] == "minmax"
    resumed = tmp_path / "r.safetensors"
    result = invoke(["train", rows, "--resume", model, "-o", resumed, "--epochs", "3", "-q"])
    assert result.code == 0, result.stderr
    assert modelfile.load(str(resumed)).scaler.method == "minmax"


@pytest.mark.determinism
def test_files_written_before_the_residual_score_behave_as_before() -> None:
    """A golden file with code statistics but no residual ones (aecli 0.1.0 of 2026-11-21)."""
    model = DATA / "format1-robust.safetensors"
    rows = DATA / "format1-rows.csv"
    fitted = modelfile.load(str(model))
    assert fitted.code_stats is not None and fitted.code_stats.residual_mean is None
    for command, name in (("encode", "codes"), ("reconstruct", "recon"), ("score", "scores")):
        result = invoke([command, model, rows])
        assert result.code == 0, result.stderr
        assert_same_table(result.text, (DATA / f"format1-robust-{name}.csv").read_text())


def test_injected_outliers_rank_on_top_with_default_flags(tmp_path: Path) -> None:
    """A loose, fast version of benchmarks/anomaly.py: rows off a 3-d structure stand out."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 12))
    normal = rng.normal(size=(600, 3)) @ mixing + 0.1 * rng.normal(size=(600, 12))
    normal[:, 0] = np.exp(normal[:, 0])  # a heavy-tailed column
    outliers = rng.normal(size=(30, 12)) * normal.std(0) + np.median(normal, 0)
    train = np.vstack([normal[:500], outliers[:10]]).astype(np.float32)  # contaminated
    test = np.vstack([normal[500:], outliers[10:]]).astype(np.float32)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "train.npy", "-o", model, "-q", "--epochs", "20"]).code == 0
    result = invoke(["score", model, tmp_path / "test.npy"])
    scores = np.loadtxt(result.text.splitlines()[1:])
    labels = np.r_[np.zeros(100), np.ones(20)]
    ranks = scores.argsort().argsort() + 1.0
    auroc = (ranks[labels == 1].sum() - 20 * 21 / 2) / (20 * 100)
    assert auroc >= 0.9


def test_image_shape_on_a_csv_makes_it_images(tmp_path: Path, digits_csv: Path) -> None:
    model = tmp_path / "m.safetensors"
    result = invoke(["train", digits_csv, "--image-shape", "8x8", "-o", model, *FAST])
    assert result.code == 0, result.stderr
    fitted = modelfile.load(str(model))
    assert fitted.scaler.method == "global" and fitted.row_shape == (8, 8)
    wrong = invoke(["train", digits_csv, "--image-shape", "8x9", "-o", model, *FAST])
    assert wrong.code == 2 and "--image-shape" in wrong.stderr and "72 values" in wrong.stderr
