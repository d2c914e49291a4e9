"""aecli.Autoencoder: scikit-learn's own estimator checks, and the same file as the CLI."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from aecli import Autoencoder  # noqa: E402
from aecli.config import TrainConfig  # noqa: E402


@parametrize_with_checks([Autoencoder(epochs=3, seed=1)])
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)


FAST_API = {"epochs": 3, "seed": 1}


def _csv_rows(text: str):
    import numpy as np

    return np.loadtxt(text.splitlines()[1:], delimiter=",", ndmin=2)


@pytest.mark.determinism
def test_the_same_model_file_as_the_cli(tmp_path, digits, digits_csv) -> None:
    """Same data, flags and seed: fit + save writes the bytes 'aecli train' writes."""
    import pandas as pd

    from tests.conftest import invoke

    cli_model = tmp_path / "cli.safetensors"
    args = ["train", digits_csv, "-o", cli_model, "--epochs", "3", "--seed", "1", "-q"]
    assert invoke([*args, "--kind", "sparse"]).code == 0
    frame = pd.DataFrame(digits[:400], columns=[f"p{i}" for i in range(64)])
    api_model = tmp_path / "api.safetensors"
    Autoencoder(kind="sparse", **FAST_API).fit(frame).save(api_model)
    assert api_model.read_bytes() == cli_model.read_bytes()


def test_shell_and_notebook_use_each_others_files(tmp_path, digits, digits_csv) -> None:
    import numpy as np

    from tests.conftest import invoke

    rows = digits[:400]
    estimator = Autoencoder(kind="vae", loss="mse", **FAST_API).fit(rows)
    path = tmp_path / "m.safetensors"
    estimator.save(path)
    codes = _csv_rows(invoke(["encode", path, digits_csv]).text)
    np.testing.assert_allclose(estimator.transform(rows), codes, rtol=1e-6, atol=1e-6)
    scores = _csv_rows(invoke(["score", path, digits_csv]).text)[:, 0]
    np.testing.assert_allclose(-estimator.score_samples(rows), scores, rtol=1e-6)
    result = invoke(["score", path, digits_csv, "--terms"])
    parts = estimator.score_terms(rows)  # by name, as the CLI heads its columns
    assert [f"score.{name}" for name in parts] == result.text.splitlines()[0].split(",")[1:]
    np.testing.assert_allclose(np.stack(list(parts.values()), 1), _csv_rows(result.text)[:, 1:],
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(sum(parts.values()), scores, rtol=1e-6, atol=1e-6)
    sampled = _csv_rows(invoke(["sample", path, "-n", "5", "--seed", "4"]).text)
    np.testing.assert_allclose(estimator.sample(5, seed=4), sampled, rtol=1e-5, atol=1e-5)
    report = invoke(["evaluate", path, digits_csv, "--json", "--baseline", "pca"])
    import json

    expected = json.loads(report.text)
    got = estimator.evaluate(rows, baseline="pca")
    assert set(got) == set(expected)
    assert got["mse"] == pytest.approx(expected["mse"], rel=1e-6)
    # ... and a file from the shell, in the notebook.
    again = Autoencoder.load(path)
    assert again.kind == "vae" and again.n_features_in_ == 64
    np.testing.assert_array_equal(again.transform(rows), estimator.transform(rows))
    recon = _csv_rows(invoke(["reconstruct", path, digits_csv]).text)
    np.testing.assert_allclose(again.reconstruct(rows), recon, rtol=1e-5, atol=1e-4)
    decoded = again.inverse_transform(again.transform(rows))
    np.testing.assert_allclose(decoded, recon, rtol=1e-5, atol=1e-4)


def test_outlier_convention_and_contamination(digits) -> None:
    import numpy as np

    rows = digits[:400]
    estimator = Autoencoder(contamination=0.05, **FAST_API).fit(rows)
    flags = estimator.predict(rows)
    assert set(np.unique(flags)) == {-1, 1}
    # the share asked of the training rows, or fewer where the held-out rows score higher
    # (``baselines.calibrated``): never more
    assert 0.025 <= (flags == -1).mean() <= 0.055
    np.testing.assert_allclose(
        estimator.decision_function(rows), estimator.score_samples(rows) - estimator.offset_
    )
    shuffled = np.random.default_rng(0).permuted(rows, axis=1)  # same pixels, wrong places
    assert estimator.score_samples(shuffled).mean() < estimator.score_samples(rows).mean()


def test_pipeline_clone_and_feature_names(digits) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame = pd.DataFrame(digits[:400], columns=[f"p{i}" for i in range(64)])
    target = (digits[:400, 36] > 8).astype(int)  # is the centre pixel inked?
    pipe = make_pipeline(Autoencoder(latent=8, **FAST_API), LogisticRegression(max_iter=200))
    pipe.fit(frame, target)
    assert pipe.score(frame, target) > 0.5
    ae = pipe[0]
    assert list(ae.feature_names_in_[:2]) == ["p0", "p1"]
    assert list(ae.get_feature_names_out()) == [f"z{i}" for i in range(8)]
    twin = clone(ae)
    assert twin.get_params() == ae.get_params() and not hasattr(twin, "fitted_")
    np.testing.assert_array_equal(twin.fit(frame).transform(frame), ae.transform(frame))


def test_bad_values_are_value_errors_naming_the_argument(digits) -> None:
    with pytest.raises(ValueError, match="noise_std: must be a finite number"):
        Autoencoder(kind="denoise", noise_std=float("inf"), **FAST_API).fit(digits[:50])
    with pytest.raises(ValueError, match="kind: unknown kind 'deep'"):
        Autoencoder(kind="deep", **FAST_API).fit(digits[:50])
    with pytest.raises(ValueError, match="sampling needs a vae"):
        Autoencoder(**FAST_API).fit(digits[:50]).sample(3)


def test_defaults_are_the_clis() -> None:
    """One place for defaults: the estimator's are the config dataclasses' and the CLI's."""
    import inspect

    from aecli.cli.training import train

    cli = {
        name: p.default
        for name, p in inspect.signature(train).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for name, value in Autoencoder().get_params().items():
        if name in cli:
            default = cli[name]
            if default is None and value is not None:  # the flag's None is the config's own
                default = getattr(TrainConfig(), name)  # (--batch-size: 0, chosen per table)
            if isinstance(value, tuple):  # --channels 32,64
                value = ",".join(map(str, value))
            assert value == default, name


def test_without_scikit_learn_the_import_says_how_to_get_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "try:\n    from aecli import Autoencoder\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install '.[sklearn]'" in out.stdout


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_sample_needs_one_row_or_more(n: object) -> None:
    """F3-12: sample(0) and sample(-1) returned empty arrays; the CLI refuses -n 0."""
    rows = np.random.default_rng(1).normal(size=(80, 6)).astype(np.float32)
    vae = Autoencoder(kind="vae", epochs=1, seed=0).fit(rows)
    with pytest.raises(ValueError, match=r"^n: "):
        vae.sample(n)  # type: ignore[arg-type]
    assert vae.sample(2).shape == (2, 6)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"epochs": 2.5}, "epochs"), ({"seed": None}, "seed"), ({"contamination": "auto"},
     "contamination"), ({"hidden": [True]}, "hidden"), ({"latent": "8"}, "latent")],
)  # fmt: skip
def test_an_argument_of_the_wrong_type_is_a_value_error_naming_it(
    arguments: dict[str, object], named: str
) -> None:
    """F3-10: these were TypeErrors naming nothing, some after scaling had started."""
    rows = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"^{named}: "):
        Autoencoder(**arguments).fit(rows)  # type: ignore[arg-type]


def test_hidden_may_be_one_number() -> None:
    rows = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    assert Autoencoder(hidden=5, epochs=1).fit(rows).fitted_.config.hidden == (5,)


def test_save_and_load_fail_with_pythons_own_errors(tmp_path) -> None:
    """F3-11: UsageError '-o: ... is a directory' (a flag the API does not have), ModelFileError."""
    rows = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    ae = Autoencoder(epochs=1).fit(rows)
    with pytest.raises(IsADirectoryError) as directory:
        ae.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist") as no_folder:
        ae.save(tmp_path / "none" / "m.safetensors")
    assert "-o:" not in str(directory.value) + str(no_folder.value)
    with pytest.raises(FileNotFoundError, match="no such model file") as missing:
        Autoencoder.load(tmp_path / "m.safetensors")
    assert missing.value.filename == str(tmp_path / "m.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a safetensors model file"):
        Autoencoder.load(tmp_path / "junk.safetensors")


def test_history_has_a_row_per_epoch_and_verbose_shows_progress(capsys) -> None:
    """Issue 30 item 3: a notebook got no feedback, and history_ held only a summary."""
    rows = np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32)
    ae = Autoencoder(epochs=4, verbose=True, seed=0).fit(rows)
    assert [row["epoch"] for row in ae.history_] == [1, 2, 3, 4]
    assert {"loss", "reconstruction", "val_loss", "seconds"} <= ae.history_[0].keys()
    assert "epoch 4/4" in capsys.readouterr().err  # the bar's last frame stays
    Autoencoder(epochs=2, seed=0).fit(rows)
    assert capsys.readouterr().err == ""  # quiet by default
    assert ae.summary_["kept_epoch"] == 4


def test_pyod_attributes_and_a_score_gridsearch_can_use() -> None:
    """Issue 30 item 8: no score method (GridSearchCV's default failed), no decision_scores_."""
    from sklearn.model_selection import GridSearchCV

    rows = np.random.default_rng(1).normal(size=(150, 6)).astype(np.float32)
    ae = Autoencoder(epochs=2, seed=0).fit(rows)
    np.testing.assert_allclose(ae.decision_scores_, -ae.score_samples(rows))
    assert ae.threshold_ == -ae.offset_
    np.testing.assert_array_equal(ae.labels_, (ae.predict(rows) == -1).astype(int))
    assert ae.score(rows) == -ae.evaluate(rows)["mse_scaled"]
    search = GridSearchCV(Autoencoder(epochs=2, seed=0), {"latent": [1, 3]}, cv=2).fit(rows)
    assert search.best_params_["latent"] in (1, 3)
    with pytest.raises(ValueError, match=r"^sample: sampling needs a vae \(kind='vae'\)"):
        ae.sample(3)


def test_predict_survives_save_and_load_and_agrees_with_the_cli(tmp_path) -> None:
    """F3-5: 3 of 300 rows flipped after save + load, and the CLI flagged 27, not 30."""
    from tests.conftest import invoke

    rows = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", rows)
    ae = Autoencoder(epochs=2, seed=0).fit(rows)
    ae.save(tmp_path / "m.safetensors")
    loaded = Autoencoder.load(tmp_path / "m.safetensors")
    assert loaded.offset_ == ae.offset_
    np.testing.assert_array_equal(loaded.predict(rows), ae.predict(rows))
    result = invoke(["score", tmp_path / "m.safetensors", tmp_path / "x.npy",
                     "--contamination", "0.1"])  # fmt: skip
    flags = [float(line.split(",")[1]) for line in result.text.splitlines()[1:]]
    np.testing.assert_array_equal(np.array(flags) == 1, ae.predict(rows) == -1)
    # the contamination share of the rows given to fit, or fewer where the held-out rows'
    # percentiles are higher (``baselines.calibrated``): at most the share asked
    assert 24 <= int(sum(flags)) <= 30
