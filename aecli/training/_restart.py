"""Picking a stopped run up where it stopped: a checkpoint knows the command and data it is of.

A restarted job (torchrun's elastic agent after a worker died, Slurm's ``--requeue``, a
Kubernetes Job's next pod) runs the same command again. With ``--checkpoint-every``, the
model file it left records a fingerprint of that command's flags and of the data file's
contents, so the new run continues it when both match, and starts afresh, saying so, when
they do not. Data on stdin is never fingerprinted: a restart cannot know it is the same.
Torch-free: it reads the file's metadata only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

# Flags that change neither the model nor the rows: a restart may differ in them. ``data``
# is the file's identity below, not its spelling (``a.csv`` and ``./a.csv``: findings4 #10).
_IGNORED = frozenset({"output", "quiet", "log", "resume", "checkpoint_every", "ctx", "data"})
_BLOCK = 4 * 2**20
# How a run that did not finish leaves its file (aecli.training._loop.History.stop, "checkpoint").
STOPPED = ("checkpoint", "interrupted")


def fingerprint(flags: Mapping[str, Any], data: str) -> str:
    """The flags' values, the data file's resolved path and a digest of its bytes, hashed.

    The bytes, not the size and modification time: ``cp -p``, ``rsync -a`` and ``tar x``
    keep an mtime, and two ``.npy`` files of one shape always have one size, so a stopped
    run was continued on other rows (findings4 #3). Hashing reads the file once (about
    1 GB/s), which a run long enough to checkpoint does not notice.
    """
    values = {
        name: value  # a choice is its text in JSON
        for name, value in sorted(flags.items())
        if name not in _IGNORED
    }
    identity = [os.path.realpath(data), content_digest(data)]
    text = json.dumps([values, identity], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def content_digest(path: str) -> str:
    """BLAKE2b of a file's bytes, read in blocks (flat memory for any size)."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def stopped_run(output: str, run: str) -> tuple[bool, str | None]:
    """Whether ``output`` is a stopped run of this command to continue, and what to say.

    Any other file at ``output`` (none, a finished model, something unreadable) is left
    to the usual rules: training afresh replaces it when it is done.
    """
    from aecli import modelfile

    if not os.path.isfile(output):
        return False, None
    try:
        summary = modelfile.read_metadata(output).get("aecli.summary") or {}
    except Exception:  # not a model file: training afresh replaces it, as it always did
        return False, None
    if summary.get("stop") not in STOPPED:
        return False, None
    epoch = summary.get("kept_epoch")
    if summary.get("run") == run:
        return True, f"continuing {output} after epoch {epoch} (a stopped run of this command)"
    return False, (
        f"{output} is a stopped run (epoch {epoch}) of other flags or data; training afresh"
    )
