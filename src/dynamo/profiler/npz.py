"""Write NumPy `.npz` files of float arrays without NumPy (what `dynamo.planner.npy` reads).

An `.npz` is a zip of `.npy` files; each is the magic, version 1.0, a header dict padded so
the data starts on a 64-byte boundary, then little-endian float64 values. Writing it by hand
keeps the profiler free of a NumPy dependency for a few dozen numbers; `numpy.load` reads it.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

MAGIC = b"\x93NUMPY\x01\x00"


def npy_bytes(values: Sequence[float]) -> bytes:
    """One 1-D float64 array as a `.npy` file."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({len(values)},), }}"
    pad = 64 - (len(MAGIC) + 2 + len(header) + 1) % 64
    header_bytes = (header + " " * (pad % 64) + "\n").encode("latin1")
    body = struct.pack(f"<{len(values)}d", *(float(v) for v in values))
    return MAGIC + struct.pack("<H", len(header_bytes)) + header_bytes + body


def write_npz(path: Path, arrays: Mapping[str, Sequence[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, values in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(values))
