"""Read the numeric arrays of a NumPy `.npz` file without NumPy (the profiler's output format).

An `.npz` is a zip of `.npy` files: a magic string, a version, a header (a Python dict
literal with `descr`, `fortran_order`, `shape`) and the raw data. Only what the profiler
writes is supported: little-endian (or single-byte) ints and floats, any shape, C order;
arrays come back flattened as lists of floats.
"""

from __future__ import annotations

import ast
import math
import struct
import zipfile
from pathlib import Path

from dynamo.runtime.errors import ConfigError

MAGIC = b"\x93NUMPY"
# numpy `descr` -> struct format of one item
FORMATS = {
    "<f8": "d",
    "<f4": "f",
    "<i8": "q",
    "<i4": "i",
    "<i2": "h",
    "|i1": "b",
    "<u8": "Q",
    "<u4": "I",
    "|u1": "B",
}


def parse_npy(data: bytes, name: str = "array") -> list[float]:
    """The values of one `.npy` file, flattened (C order)."""
    if not data.startswith(MAGIC) or len(data) < 10:
        raise ConfigError(f"{name}: not a .npy array")
    major = data[6]
    if major == 1:
        (header_len,) = struct.unpack("<H", data[8:10])
        start = 10
    elif major in (2, 3):
        (header_len,) = struct.unpack("<I", data[8:12])
        start = 12
    else:
        raise ConfigError(f"{name}: unsupported .npy version {major}")
    try:
        header = ast.literal_eval(data[start : start + header_len].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise ConfigError(f"{name}: bad .npy header") from exc
    fmt = FORMATS.get(descr) if isinstance(descr, str) else None
    if fmt is None:
        raise ConfigError(f"{name}: unsupported dtype {descr!r} (expected numbers)")
    count = math.prod(shape)
    if fortran and len(shape) > 1:
        raise ConfigError(f"{name}: Fortran-ordered arrays are not supported")
    body = data[start + header_len :]
    size = struct.calcsize("<" + fmt)
    if len(body) < count * size:
        raise ConfigError(f"{name}: truncated data")
    return [float(v) for v in struct.unpack_from(f"<{count}{fmt}", body)]


def load_npz(path: Path) -> dict[str, list[float]]:
    """Every array of the `.npz` at `path`, by name."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                member.removesuffix(".npy"): parse_npy(archive.read(member), f"{path}:{member}")
                for member in archive.namelist()
                if member.endswith(".npy")
            }
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: cannot read the .npz: {exc}") from exc
