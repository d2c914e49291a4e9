"""Real processes: pipelines, exit codes, quiet broken pipes, a light --help."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

AECLI = [sys.executable, "-m", "aecli"]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*AECLI, *map(str, args)], capture_output=True, **kw)


def test_help_does_not_import_torch_or_numpy() -> None:
    code = (
        "import sys; from aecli.cli import main; rc = main(['--help']); "
        "heavy = [m for m in ('torch', 'numpy', 'safetensors', 'pydantic') if m in sys.modules]; "
        "assert rc == 0 and not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"], ["--version"]])
@pytest.mark.parametrize("columns", [None, "80", "200", "60"])
def test_root_help_and_version_are_typers_without_typer(
    args: list[str], columns: str | None
) -> None:
    """The stored root help (aecli/helptext.py) is byte for byte what typer prints."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    typer_main = "import sys; from aecli.cli import main; sys.exit(main(sys.argv[1:]))"
    by_typer = subprocess.run(
        [sys.executable, "-c", typer_main, *args], capture_output=True, env=env
    )
    ours = subprocess.run([*AECLI, *args], capture_output=True, env=env)
    assert ours.returncode == by_typer.returncode == 0
    assert ours.stdout == by_typer.stdout and ours.stderr == by_typer.stderr == b""
    code = (
        "import sys; from aecli.__main__ import run; sys.argv[1:] = sys.argv[2:]; rc = run(); "
        "assert rc == 0 and ('typer' in sys.modules) == (sys.argv[1:] != ['--version'] and "
        f"{columns == '60'}), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code, "aecli", *args], check=True, env=env)


def test_root_help_into_head_or_a_full_disk() -> None:
    head = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{shlex.join(AECLI)} --help | head -1"],
        capture_output=True,
    )
    assert head.returncode == 0 and head.stdout.startswith(b"Usage: aecli") and not head.stderr
    if Path("/dev/full").exists():
        with open("/dev/full", "wb") as full:
            done = subprocess.run([*AECLI, "--help"], stdout=full, stderr=subprocess.PIPE)
        assert done.returncode == 1
        assert done.stderr == b"aecli: error: stdout: No space left on device\n"


def test_usage_error_does_not_import_torch() -> None:
    code = (
        "import sys; from aecli.cli import main; rc = main(['train', 'x.csv', '-o', 'm', "
        "'--epochs', '0']); assert rc == 2 and 'torch' not in sys.modules, 'torch'; "
        "assert 'pydantic' not in sys.modules, 'pydantic: typer>=0.29 coerces through it'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_example_train_encode_pipeline(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    with subprocess.Popen([*AECLI, "example", "digits"], stdout=subprocess.PIPE) as example:
        train = run(["train", "-", "-o", model, "--epochs", "2"], stdin=example.stdout)
    assert train.returncode == 0, train.stderr
    assert train.stdout == b"" and b"trained basic" in train.stderr
    encoded = run(["encode", model, "-"], input=run(["example"]).stdout)
    assert encoded.returncode == 0 and encoded.stderr == b""
    lines = encoded.stdout.decode().splitlines()
    assert lines[0].startswith("z0,") and len(lines) == 1798


def test_sample_into_head_exits_quietly(vae_model: Path) -> None:
    shell = f"{sys.executable} -m aecli sample {vae_model} -n 200000 | head -n 2"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True)
    assert result.stderr == b""
    assert result.returncode == 0
    assert len(result.stdout.decode().splitlines()) == 2


def test_exit_codes_and_one_line_errors(tmp_path: Path, basic_model: Path) -> None:
    usage = run(["train", "missing.csv", "-o", tmp_path / "m.safetensors", "--batch-size", "0"])
    data = run(["encode", basic_model, tmp_path / "missing.csv"])
    assert (usage.returncode, data.returncode) == (2, 1)
    for result in (usage, data):
        assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def test_reconstruct_to_npy_round_trip(
    tmp_path: Path, basic_model: Path, digits: np.ndarray
) -> None:
    np.save(tmp_path / "d.npy", digits[:10])
    out = tmp_path / "r.npy"
    assert run(["reconstruct", basic_model, tmp_path / "d.npy", "-o", out]).returncode == 0
    assert np.load(out).shape == (10, 64)


torch = pytest.importorskip("torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_and_loads_on_cpu(tmp_path: Path, digits_csv: Path) -> None:
    out = tmp_path / "gpu.safetensors"
    result = run(
        ["train", digits_csv, "-o", out, "--device", "cuda", "--kind", "vae", "--epochs", "2"]
    )
    assert result.returncode == 0, result.stderr
    assert b"(cuda)" in result.stderr
    encoded = run(["encode", out, digits_csv], env=_env() | {"CUDA_VISIBLE_DEVICES": ""})
    assert encoded.returncode == 0, encoded.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_openmp_waits_briefly_unless_the_user_chose() -> None:
    """A short OpenMP spin keeps training from collapsing next to a busy program."""
    code = (
        "import os; from aecli.cli import main; main(['--version']);"
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('KMP_BLOCKTIME'))"
    )
    env = {k: v for k, v in _env().items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split()[-2:] == ["1000", "1"]
    chosen = {**env, "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=chosen)
    assert out.stdout.split()[-2:] == ["None", "None"]


@pytest.mark.parametrize("lines", [1, 2, 100])
def test_any_head_exits_0_quietly(tmp_path: Path, basic_model: Path, vae_model: Path,
                                  lines: int) -> None:  # fmt: skip
    """F19: typer turned a broken pipe inside a command into exit 1; aecli decides now."""
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(0).normal(size=(60000, 64)).astype(np.float32))
    for command in (
        f"encode {basic_model} {big}",
        f"sample {vae_model} -n 20000",
        "example digits",
    ):
        shell = f"{sys.executable} -m aecli {command} | head -n {lines} > /dev/null"
        result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True)
        assert (result.returncode, result.stderr) == (0, b""), command


def test_sample_streams_so_a_huge_n_into_head_is_instant(vae_model: Path) -> None:
    """F11: -n 1e9 drew and formatted every row before the first one was written."""
    shell = (
        f"ulimit -v 4000000; {sys.executable} -m aecli sample {vae_model} -n 1000000000 | head -n 3"
    )
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, timeout=120
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert len(result.stdout.splitlines()) == 3


def test_sample_blocks_are_the_same_rows_however_they_are_read(
    tmp_path: Path, vae_model: Path
) -> None:
    from aecli import fitted, modelfile

    model = modelfile.load(str(vae_model))
    n = fitted.SAMPLE_BLOCK + 10
    whole = model.sample(n, seed=3)
    again = np.concatenate(list(model.sample_blocks(n, seed=3)))
    np.testing.assert_array_equal(whole, again)
    head = run(["sample", vae_model, "-n", 5, "--seed", 3]).stdout.decode().splitlines()[1:]
    np.testing.assert_allclose(
        np.loadtxt(head, delimiter=","), model.sample(5, seed=3), rtol=1e-6, atol=1e-6
    )


def _wait_until_torch_is_loaded(pid: int, limit: float = 60) -> None:
    """The command is past Python's start once torch's library is mapped (Linux), else 2.5 s."""
    import time

    maps = Path(f"/proc/{pid}/maps")
    if not maps.exists():
        time.sleep(2.5)
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if "libtorch" in maps.read_text():
                return
        except OSError:  # the process ended
            return
        time.sleep(0.05)


def test_ctrl_c_outside_training_says_so_and_exits_130(tmp_path: Path, basic_model: Path) -> None:
    """F20: typer swallowed KeyboardInterrupt into a silent 130."""
    import signal
    import time

    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(0).normal(size=(400000, 64)).astype(np.float32))
    out = tmp_path / "r.csv"
    process = subprocess.Popen(
        [*AECLI, "reconstruct", basic_model, big, "-o", out], stderr=subprocess.PIPE
    )
    _wait_until_torch_is_loaded(process.pid)  # on a loaded machine 2.5 s was still start-up
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("finished before the signal")
    assert process.returncode == 130, err.decode()[:1500] + " ... " + err.decode()[-1500:]
    assert err.decode().strip() == "aecli: interrupted"
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        ("encode {basic} - <&-", 1, "aecli: error: <stdin>: stdin is closed"),  # F16
        ("encode {basic} {data} >&-", 1, "aecli: error: stdout is closed"),
        ("train {data} -o - --epochs 1 >&-", 2, "aecli: error: -o: stdout is closed"),
        ("encode {basic} {gz}", 1, "not valid gzip data"),  # F14
        ("encode {basic} - < {gz}", 1, "<stdin>: not valid gzip data"),
    ],
)
def test_closed_streams_and_damaged_gzip_are_one_line(
    tmp_path: Path, basic_model: Path, digits_csv: Path, command: str, code: int, message: str
) -> None:
    import gzip

    damaged = bytearray(gzip.compress(digits_csv.read_bytes(), mtime=0))
    damaged[200:220] = bytes(b ^ 0xFF for b in damaged[200:220])
    (tmp_path / "bad.csv.gz").write_bytes(bytes(damaged))
    line = command.format(basic=basic_model, data=digits_csv, gz=tmp_path / "bad.csv.gz")
    shell = f"{sys.executable} -m aecli {line}"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    err = result.stderr.decode().strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_closed_stderr_does_not_fail_a_good_run(tmp_path: Path, digits_csv: Path) -> None:
    """F24: with fd 2 closed (cron, daemons) a good run exits 0 and a usage error 2."""
    out = tmp_path / "m.safetensors"
    good = f"{sys.executable} -m aecli train {digits_csv} -o {out} --epochs 2 2>&-"
    assert subprocess.run(["bash", "-c", good]).returncode == 0 and out.exists()
    bad = f"{sys.executable} -m aecli train {digits_csv} -o {out} --epochs 0 2>&-"
    assert subprocess.run(["bash", "-c", bad]).returncode == 2


def test_a_model_arrives_on_stdin(basic_model: Path, digits_csv: Path) -> None:
    """F3-17: 'train -o - | encode - DATA' said '-: no such model file'."""
    from tests.conftest import invoke

    piped = invoke(["encode", "-", digits_csv], input=basic_model.read_bytes())
    assert piped.code == 0, piped.stderr
    assert piped.stdout == invoke(["encode", basic_model, digits_csv]).stdout
    assert invoke(["info", "-"], input=basic_model.read_bytes()).code == 0
    both = invoke(["encode", "-", "-"], input=basic_model.read_bytes())
    assert both.code == 2 and "MODEL is read from stdin already" in both.stderr


def test_shell_completion_names_commands_flags_and_choices() -> None:
    """Issue 30 item 9: Typer's --install-completion was switched off."""
    # Typer detects the shell from the process's ancestors (a run detached from any shell,
    # as under a job runner, finds none): its own tests' switch makes it take "bash" instead.
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "aecli", "--show-completion", "bash"], env=named, capture_output=True
    )
    assert shown.returncode == 0 and b"_AECLI_COMPLETE=complete_bash" in shown.stdout
    for words, cword, expected in (("aecli tr", "1", "train"), ("aecli train --ki", "2", "--kind"),
                                   ("aecli train --kind ", "3", "sparse")):  # fmt: skip
        env = {**os.environ, "_AECLI_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": cword}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "aecli"], env=env, capture_output=True)
        assert done.returncode == 0 and expected in done.stdout.decode().split(), done


def test_a_device_takes_csv(basic_model: Path, digits_csv: Path) -> None:
    """Issue 30 item 9: -o /dev/null was 'cannot tell the output format'."""
    from tests.conftest import invoke

    result = invoke(["encode", basic_model, digits_csv, "-o", os.devnull])
    assert result.code == 0 and result.stderr == ""


def test_the_onnx_extra_brings_what_serving_imports() -> None:
    """Issue 30 item 9: docs/serving.md imports onnxruntime, which [onnx] did not install."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"]["onnx"]
    assert any(requirement.startswith("onnxruntime") for requirement in extra)
    assert "import onnxruntime" in (Path(__file__).parents[1] / "docs" / "serving.md").read_text()


def test_a_signal_while_torch_loads_waits_until_the_import_is_whole() -> None:
    """A KeyboardInterrupt inside torch's import hit pybind11 and std::terminate (exit -2)."""
    import signal

    from aecli.cli import signals

    ran: list[str] = []

    class Loader:  # a module whose import is interrupted half way
        def create_module(self, spec: object) -> None:
            return None

        def exec_module(self, module: object) -> None:
            ran.append("start")
            signals._raise(signal.SIGINT, None)  # as the handler runs mid-import
            ran.append("whole")

    with signals.handled(), pytest.raises(KeyboardInterrupt):
        signals._HeldLoader(Loader()).exec_module(object())
    assert ran == ["start", "whole"] and signals.last() == signal.SIGINT
