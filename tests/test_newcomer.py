"""A newcomer's second hour (issue 36): each friction a user met, with the fix they expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aecli import modelfile
from tests.conftest import invoke

QUIET = ["--epochs", "1", "-q"]


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """An id, five features and a 0/1 label, as a user's table has them."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cardio.csv"
    with open(path, "w") as out:
        out.write("record_id,f0,f1,f2,f3,f4,label\n")
        for i, row in enumerate(rng.normal(size=(120, 5))):
            out.write(f"c{i:05d}," + ",".join(f"{v:.5f}" for v in row) + f",{i % 2}\n")
    return path


# 1. Leaving a label out: --exclude, and ranges and globs in --columns ----------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--id-column", "record_id", "--exclude", "label"],
        ["--id-column", "record_id", "--exclude", "6"],
        ["--columns", "1-5"],
        ["--columns", "1:6"],
        ["--columns", "f*"],
        ["--columns", "f[0-4]"],
        ["--exclude", "record_id,label"],
        ["--columns", "1-5", "--exclude", "f2", "--id-column", "record_id"],
    ],
)
def test_columns_by_range_glob_and_exclusion(tmp_path: Path, labelled: Path, flags) -> None:
    model = tmp_path / "m.safetensors"
    result = invoke(["train", labelled, "-o", model, *QUIET, *flags])
    assert result.code == 0, result.stderr
    expected = [f"f{i}" for i in range(5) if not ("f2" in flags and i == 2)]
    assert modelfile.load(str(model)).columns == expected  # the model records what it used


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--columns", "1-9"], "column range '1-9' is not within 0..6 (--columns)"),
        (["--columns", "5-2"], "(A comes before B)"),
        (["--columns", "z*"], "no column matches 'z*' (--columns); its columns are record_id"),
        (["--exclude", "nope", "--id-column", "record_id"], "no column named 'nope' (--exclude)"),
    ],
)
def test_column_patterns_that_match_nothing_say_so(
    tmp_path: Path, labelled: Path, flags: list[str], says: str
) -> None:
    result = invoke(["train", labelled, "-o", tmp_path / "m.safetensors", *QUIET, *flags])
    assert result.code == 1 and says in result.stderr, result.stderr


def test_a_text_label_points_at_exclude(tmp_path: Path, labelled: Path) -> None:
    text = tmp_path / "text.csv"
    text.write_text(labelled.read_text().replace(",0\n", ",no\n").replace(",1\n", ",yes\n"))
    result = invoke(["train", text, "--id-column", "record_id", "-o", tmp_path / "m.st", *QUIET])
    assert result.code == 1
    assert result.stderr.endswith(
        "'no' is not a number ('label'); a column of text, such as ids or labels? carry it "
        "with --id-column label, or leave it out with --exclude label\n"
    )


READERS = [
    ["score"],
    ["encode"],
    ["reconstruct"],
    ["evaluate"],
    ["interpolate", "--rows", "0,1", "--steps", "2"],
]


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_every_reader_takes_the_flags_its_text_hint_names(
    tmp_path: Path, labelled: Path, command: list[str]
) -> None:
    """A model trained on bare numbers, then a table with its ids: the error names two flags,
    and each works on the command that named it, not on `train` alone."""
    rows = np.loadtxt(labelled, delimiter=",", skiprows=1, usecols=range(1, 6))
    np.save(tmp_path / "rows.npy", rows.astype(np.float32))
    model = tmp_path / "m.safetensors"
    assert invoke(["train", tmp_path / "rows.npy", "-o", model, *QUIET]).code == 0
    table = tmp_path / "table.csv"
    table.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in labelled.open()))
    refused = invoke([command[0], model, table, *command[1:]])
    assert refused.code == 1
    assert refused.stderr.endswith(
        "carry it with --id-column record_id, or leave it out with --exclude record_id\n"
    ), refused.stderr
    outputs = []
    for flag in ("--id-column", "--exclude"):
        taken = invoke([command[0], model, table, *command[1:], flag, "record_id"])
        assert taken.code == 0, taken.stderr
        outputs.append(taken.stdout.decode())
    plain = invoke([command[0], model, tmp_path / "rows.npy", *command[1:]]).stdout.decode()
    carried, left_out = outputs
    if command[0] in ("score", "encode", "reconstruct"):  # the ids lead each output row
        assert carried.splitlines()[1].startswith("c00000,")
        without_ids = [line.split(",", 1)[1] for line in carried.splitlines()[1:]]
        assert left_out.splitlines()[1:] == without_ids
    else:
        assert carried == left_out
    assert left_out.splitlines()[1:] == plain.splitlines()[1:]  # the same rows, read right


# 2. Another delimiter, or decimal commas: named, never guessed ----------------------------


@pytest.mark.parametrize(
    ("text", "flags", "says"),
    [
        ("id;a;b\nr1;1.5;2\n", ["--id-column", "id"], "looks ';'-separated: try --delimiter ';'"),
        ("a;b\n1.5;2\n2;3\n", [], "looks ';'-separated: try --delimiter ';'"),
        ("a|b\n1.5|2\n2|3\n", [], "looks '|'-separated: try --delimiter '|'"),
        ("a\tb\n1.5\t2\n", [], "looks tab-separated: try --delimiter '\\t'"),
        ("a;b\n1,5;2\n", ["--delimiter", ";"], "a decimal comma? aecli reads 1.5, not 1,5"),
    ],
)
def test_other_delimiters_are_named(tmp_path: Path, text: str, flags: list, says: str) -> None:
    data = tmp_path / "semi.csv"
    data.write_text(text)
    result = invoke(["train", data, "-o", tmp_path / "m.safetensors", *QUIET, *flags])
    assert result.code == 1 and says in result.stderr, result.stderr


# 7. Python errors in Python's words --------------------------------------------------------


def test_the_estimator_names_text_columns_and_its_own_arguments(labelled: Path) -> None:
    pd = pytest.importorskip("pandas")
    from aecli import Autoencoder

    frame = pd.read_csv(labelled).assign(label=lambda f: f["label"].map({0: "no", 1: "yes"}))
    with pytest.raises(ValueError, match=r"columns 'record_id', 'label' hold text, not numbers"):
        Autoencoder(epochs=1).fit(frame)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"use device='cpu'$"):
            Autoencoder(epochs=1, device="cuda").fit(frame[["f0", "f1"]])


# 8. Small ones ---------------------------------------------------------------------------


def test_choices_are_case_insensitive(tmp_path: Path, labelled: Path) -> None:
    model = tmp_path / "m.safetensors"
    flags = ["--kind", "VAE", "--loss", "MSE", "--exclude", "record_id,label"]
    result = invoke(["train", labelled, "-o", model, *QUIET, *flags])
    assert result.code == 0, result.stderr
    assert modelfile.load(str(model)).config.kind == "vae"


# 4. A blown-up loss is a warning, in the summary, the log and info -------------------------


def test_a_diverged_run_says_so_everywhere(tmp_path: Path, table_csv: Path) -> None:
    import json

    model, log = tmp_path / "m.safetensors", tmp_path / "log.jsonl"
    result = invoke(["train", table_csv, "-o", model, "--lr", "100", "--log", log, "-q"])
    assert result.code == 0  # a model all the same: the user decides
    assert result.stderr.startswith("aecli: warning: training diverged: its reconstruction")
    assert result.stderr.rstrip().endswith("try a smaller --lr (this run: 100)")
    assert modelfile.load(str(model)).summary["diverged"] is True
    assert json.loads(log.read_text().splitlines()[-1])["diverged"] is True
    assert "diverged      yes" in invoke(["info", model]).text
    assert invoke(["curves", log, "-o", tmp_path / "c.png"]).code == 0  # read back


@pytest.mark.parametrize("kind", ["basic", "vae", "sparse", "denoise"])
def test_a_run_that_learns_is_not_called_diverged(tmp_path: Path, table_csv: Path, kind: str):
    model = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", model, "--kind", kind, "--epochs", "20"])
    assert result.code == 0 and "warning" not in result.stderr, result.stderr
    assert "diverged" not in modelfile.load(str(model)).summary


@pytest.mark.parametrize(
    ("text", "said"),
    [("a,b,c\n1,2,3\n", "1 row (1 sample)"), ("a,b\n1,2\n1,2\n1,2\n", "all 3 rows are the same")],
)
def test_rows_that_never_differ_are_refused(tmp_path: Path, text: str, said: str) -> None:
    """Nothing to learn, and a score whose statistics have no spread: a clear refusal, not
    a model that calls a rounding's worth of difference a score of a million."""
    data, model = tmp_path / "one.csv", tmp_path / "m.safetensors"
    data.write_text(text)
    result = invoke(["train", data, "-o", model, *QUIET])
    assert result.code == 1 and not model.exists()
    assert result.stderr == f"aecli: error: {data}: {said}: an autoencoder needs rows that differ\n"


def test_the_estimator_refuses_one_sample_as_scikit_learn_asks() -> None:
    from aecli import Autoencoder

    with pytest.raises(ValueError, match="1 sample"):
        Autoencoder(epochs=1).fit(np.ones((1, 4)))


def test_a_few_slow_epochs_are_not_called_diverged() -> None:
    """An untrained random network on data in [0, 1] is several times the column means'
    error; three epochs that bring it down have not reached the means yet, but they did not
    blow up (scikit-learn's estimator checks fit so: they warned that training diverged).
    Two hidden layers, since the default shape starts from the components, near PCA."""
    import warnings

    from aecli import Autoencoder

    rows = np.random.default_rng(0).uniform(size=(10, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Autoencoder(epochs=3, seed=1, hidden=(6, 4)).fit(rows)
    errors = np.square(model.reconstruct(rows) - rows).mean()
    assert errors > 2 * rows.var(0).mean()  # the case: still worse than the means


def test_the_estimator_warns_of_divergence(table: np.ndarray) -> None:
    from aecli import Autoencoder

    with pytest.warns(RuntimeWarning, match="training diverged"):
        Autoencoder(epochs=10, lr=100.0).fit(table)


# 3. Notebooks: progress and the summary survive execution and static viewers --------------


def test_an_executed_notebook_keeps_progress_lines_and_the_summary(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    code = (
        "import numpy as np\n"
        "from aecli import Autoencoder\n"
        "X = np.random.default_rng(0).normal(size=(200, 6)).astype('float32')\n"
        "ae = Autoencoder(epochs=30, verbose=True).fit(X)"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    saved = tmp_path / "run.ipynb"
    nbformat.write(notebook, saved)  # what nbconvert --execute leaves, and a viewer shows
    outputs = nbformat.read(saved, as_version=4).cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    lines = text.splitlines()
    assert lines[0].startswith("epoch  3/30 loss ") and lines[-2].startswith("epoch 30/30 ")
    assert len(lines) == 11 and lines[-1].startswith("trained basic 6-")
    assert "ipywidgets" not in text and "error" not in [o.get("output_type") for o in outputs]


# 8. Small ones: a long read is announced; bf16 that ran in fp32 says so -----------------


def test_a_large_file_is_announced_before_it_is_read(tmp_path: Path, table_csv: Path, monkeypatch):
    from aecli.cli import training

    monkeypatch.setattr(training, "READING_NOTE_BYTES", 1000)
    result = invoke(["train", table_csv, "-o", tmp_path / "m.safetensors", "--epochs", "1"])
    assert result.stderr.startswith(f"aecli: reading {table_csv} (0 MB)...\n"), result.stderr
    quiet = invoke(["train", table_csv, "-o", tmp_path / "m.safetensors", *QUIET])
    assert quiet.stderr == ""


def test_bf16_on_layers_too_small_for_it_says_it_ran_in_fp32(tmp_path: Path, table_csv: Path):
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bf16")
    model = tmp_path / "m.safetensors"
    result = invoke(["train", table_csv, "-o", model, "--precision", "bf16", "--epochs", "1"])
    assert result.code == 0 and "(cpu, bf16 asked: every layer ran in fp32)" in result.stderr
    assert "bf16 asked; every layer ran in fp32" in invoke(["info", model]).text


# 5. Pictures for tables -------------------------------------------------------------------


def _png(path: Path) -> tuple[int, ...]:
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(path).shape


def test_score_draws_the_histogram_and_the_top_rows_errors(tmp_path: Path, labelled: Path):
    pytest.importorskip("matplotlib")
    model, picture = tmp_path / "m.safetensors", tmp_path / "scores.png"
    flags = ["--id-column", "record_id", "--exclude", "label"]
    assert invoke(["train", labelled, "-o", model, *QUIET, *flags]).code == 0
    plain = invoke(["score", model, labelled, "--contamination", "0.1"])
    drawn = invoke(["score", model, labelled, "--contamination", "0.1", "--hist", picture])
    assert drawn.code == 0, drawn.stderr
    assert drawn.stdout == plain.stdout  # the picture changes no score
    assert _png(picture)[:2] == (420, 1100)
    from aecli.scoring import ScoreTable, TopRows

    fitted = modelfile.load(str(model))
    values = np.loadtxt(labelled, delimiter=",", skiprows=1, usecols=range(1, 6), dtype="f4")
    top = TopRows(fitted, keep=3)
    scores = ScoreTable.make(fitted).rows(values)[:, 0]
    for start in range(0, len(values), 50):  # chunked, as score streams
        top.add(values[start : start + 50], scores[start : start + 50])
    assert [t[0] for t in top.top] == sorted(scores.tolist(), reverse=True)[:3]
    assert top.top[0][1] == f"row {int(np.argmax(scores))}"
    np.testing.assert_array_equal(top.all_scores(), scores)
    not_png = invoke(["score", model, labelled, "--hist", tmp_path / "s.jpg"])
    assert not_png.code == 2 and not_png.stdout == b""  # refused before any row is scored


def test_the_reconstruction_grid_labels_its_rows(tmp_path: Path, digits: np.ndarray) -> None:
    pytest.importorskip("matplotlib")
    from aecli import pictures

    images = digits[:20].reshape(-1, 8, 8)
    plain, labelled = tmp_path / "plain.png", tmp_path / "labelled.png"
    pictures.save_grid(str(plain), pictures.pairs(images[:10], images[10:]), 10)
    labels = ("original", "reconstruction")
    pictures.save_grid(
        str(labelled), pictures.pairs(images[:10], images[10:]), 10, row_labels=labels
    )
    (h1, w1), (h2, w2) = _png(plain)[:2], _png(labelled)[:2]
    assert h2 == h1 and w2 == w1 + 110  # the same tiles, with a margin for the labels


def test_curves_draw_the_loss_once_and_skip_flags(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from aecli import pictures

    drawn: list[str] = []
    original = Figure.add_subplot

    def spying(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        axes = original(self, *args, **kwargs)
        plot = axes.plot
        axes.plot = lambda x, y, style, label: drawn.append(label) or plot(x, y, style, label=label)
        return axes

    records = [
        {"epoch": e, "loss": 1.0 / e, "reconstruction": 1.0 / e, "val_loss": 1.1 / e}
        for e in (1, 2, 3)
    ]
    records[-1]["diverged"] = True
    Figure.add_subplot = spying  # type: ignore[method-assign]
    try:
        pictures.save_curves(str(tmp_path / "c.png"), records)
    finally:
        Figure.add_subplot = original  # type: ignore[method-assign]
    assert drawn == ["loss", "val loss"]
