"""Where ``train`` and ``export`` write: checked before any work, written whole."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from aecli.errors import UsageError

if TYPE_CHECKING:
    from aecli.fitted import FittedModel


def check_outputs(
    output: str, log: str | None, data: str, resume: str | None, checkpoint_every: int
) -> None:
    """Fail before training, not after, when the model or its log could not be written."""
    check_model_output(output, data)
    if log == "-" and output == "-":
        raise UsageError("the model already goes to stdout; give the log a file", flag="--log")
    if log is not None:  # found now, not after the last epoch (F03)
        from aecli.io import check_output

        check_output(log, "--log", inputs=[data, output, resume])
    if checkpoint_every and output == "-":
        raise UsageError("checkpoints need a model file, not stdout", flag="--checkpoint-every")


def write_model(fitted: FittedModel, target: str, data: str) -> None:
    """The model to its file (atomically, never over DATA) or to stdout."""
    from aecli import modelfile

    if target == "-":
        from aecli.io import naming_stdout

        with naming_stdout():
            sys.stdout.buffer.write(modelfile.verified_bytes(fitted, "-"))
            sys.stdout.buffer.flush()
    else:
        modelfile.save(fitted, target, protect=[data])


def check_model_output(output: str, data: str) -> None:
    """Fail before training, not after, when the model could not be written."""
    from aecli.io import check_output

    check_output(output, "-o", inputs=[data], binary=True)
