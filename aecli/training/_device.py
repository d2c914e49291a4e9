"""Choose where and with how many threads to run, and how the process keeps memory.

Kept apart from the trainer so that flag errors (``--device cuda`` on a
machine without CUDA) surface before any data is read.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from aecli.errors import UsageError
from aecli.openmp import threads_sleep


def resolve_device(text: str) -> torch.device:
    """``auto`` picks CUDA when present; an unusable CUDA request is a usage error."""
    spec = text.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"unknown device {text!r}; use auto, cpu, cuda or cuda:N", flag="--device"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(
            f"unsupported device {text!r}; use auto, cpu, cuda or cuda:N", flag="--device"
        )
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU found"
        raise UsageError(f"{text} requested but {why}; use --device cpu", flag="--device")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(
            f"{text} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})",
            flag="--device",
        )
    return device


# Multiply-adds of a step from which a second thread pays. Spinning threads (the Python
# API: the OpenMP runtime's own wait) share a step of a few million: 2 threads trained a
# 200-128-32 model at batch 64 (3.8M) 1.25x faster, a 784-256-32 one (27M) 1.25x. Threads
# that sleep between the step's 35-odd parallel regions (the command's short wait,
# aecli/openmp.py) must be woken at each, some 50 us: there 2 threads trained those two
# models 2.3x and 1.37x slower, and the 512-256-32 of a 512-wide embedding at batch 64
# (18M) 1.5x slower; 784-256-32 at batch 256 (107M) tied and at 512 was 1.23x faster.
# (2-core Intel Xeon, epochs 3-8 of 8; the embedding's weights were the same on 1 and 2.)
SPINNING_WORK = 5e6
SLEEPING_WORK = 1e8


def choose_threads(requested: int, work_per_step: float, processes: int = 1) -> int:
    """Thread count for CPU work: ``requested`` if set, else by problem size.

    Small steps (tabular models) are dominated by per-op overhead, where extra
    OpenMP threads only add synchronisation and, when another program holds a
    core, spin and collapse throughput; one thread is then the fast choice. Where
    idle threads sleep (``threads_sleep``), waking them costs more, so the step
    must be larger (SLEEPING_WORK). ``work_per_step`` is the multiply-adds of one
    training step; ``processes`` training processes on this machine (torchrun)
    share its cores.
    """
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if work_per_step < (SLEEPING_WORK if threads_sleep() else SPINNING_WORK):
        return 1
    return max(1, min((cores or 1) // max(processes, 1), 8))


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Let glibc keep the memory a training step frees, for the next step to reuse.

    By default glibc hands blocks over 128 KiB (a threshold it raises as it goes) back
    to the kernel and trims the top of the heap, so every step's tensors come back as
    fresh pages whose first touch faults: often 50-300 faults a step for the 784-wide
    model (some runs settle near 0 on their own), about 7-10% of a CPU step, most of it
    in bf16 matrix products. Blocks under 32 MiB
    then come from the heap and up to 1 GiB free at its top is kept. Memory freed waits
    for reuse instead of going back to the system, so the peak grows a little (743/704
    against 773/780 MB training on a 20,000 x 784 table). Process-wide,
    so ``aecli train`` calls it, not the Python API. Elsewhere than glibc it does
    nothing; returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def check_runtime(precision: str, device: torch.device, compile_model: bool = False) -> None:
    """Fail before training when the flags cannot run here (``--precision``, ``--compile``)."""
    if compile_model and (missing := missing_compiler()):
        raise UsageError(
            f"builds its kernels with a C++ compiler and {missing!r} was not found; "
            "install g++ (or set CXX to one), or train without --compile",
            flag="--compile",
        )
    if precision == "bf16":
        _check_bf16(device)
    if precision == "tf32":
        _check_tf32(device)


def missing_compiler() -> str | None:
    """The C++ compiler torch.compile (inductor) would call, when it is not there.

    Inductor looks for ``$CXX`` or ``g++`` (``clang++`` on macOS) only when it first
    compiles, and fails there with an internal error; this asks the same question up
    front, without importing inductor (3 s). Windows, and inductor's opt-in conda
    compiler (TORCH_INDUCTOR_INSTALL_GXX), find theirs differently: not checked.
    """
    if sys.platform == "win32" or os.environ.get("TORCH_INDUCTOR_INSTALL_GXX"):
        return None
    name = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    if name.strip() and shutil.which(name):
        return None
    return name or "$CXX (empty)"


def _check_tf32(device: torch.device) -> None:
    """TF32 units are a CUDA GPU's (compute capability 8.0, Ampere, or newer).

    Elsewhere torch would quietly run full fp32: refused, so the flag never means nothing.
    """
    if device.type != "cuda":
        raise UsageError(
            "needs a CUDA GPU (Ampere or newer); on a CPU use fp32 or bf16",
            flag="--precision tf32",
        )
    if torch.cuda.get_device_capability(device) < (8, 0):
        raise UsageError(
            "this CUDA device has no TF32 units (Ampere or newer); use fp32",
            flag="--precision tf32",
        )


@contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """While training in tf32, float32 products on CUDA run on TF32 units; as before after.

    torch's switch is process-wide: it is set for the training that asked for it and put
    back when it ends, so a notebook's other work keeps the precision it had. torch has
    two APIs for it that must agree: after setting only the new ``fp32_precision``,
    reading the legacy one raises (``torch.get_float32_matmul_precision``, which
    inductor's autotuning asks). So the legacy setter, which sets both, turns it on; on
    the way out it turns both off and the new one gets back the user's own value. Where
    the user already has TF32 on, nothing is touched.
    """
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision  # the new API: readable whatever the state
    if precision != "tf32" or before == "tf32":
        yield
        return
    matmul.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32 = False
        matmul.fp32_precision = before


def _check_bf16(device: torch.device) -> None:
    """bf16 only where the hardware does it natively; emulated bf16 would be slower."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise UsageError("this CUDA device has no bf16 support", flag="--precision bf16")
        return
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise UsageError(
            "this CPU has no native bf16 (AVX512-BF16 or AMX); use --precision fp32",
            flag="--precision bf16",
        )
