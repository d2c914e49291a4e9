"""A safetensors file's bytes, in one fixed order: the same model gives the same bytes."""

from __future__ import annotations

import json
import struct
from typing import Any


def serialize(tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """The safetensors format, written here because its order must be fixed.

    ``safetensors.torch.save`` keeps metadata in a Rust HashMap, whose order
    changes from process to process, so the same model would not give the
    same bytes. Here keys are sorted, tensors are float32 little-endian (float16
    where given so) and laid out by name, and the header is space-padded to 8
    bytes, as the format specifies. Reading stays with the safetensors library.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = tensors[name]
        half = array.dtype.kind == "f" and array.dtype.itemsize == 2
        raw = array.astype("<f2" if half else "<f4", copy=False).tobytes(order="C")
        header[name] = {
            "dtype": "F16" if half else "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
