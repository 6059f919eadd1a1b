"""Load a data set stored as a NumPy array (``.npy`` or ``.npz``), with validation."""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._utils import check_memory
from .._validation import MAX_CLASSES
from ..errors import DataError

#: Keys looked up, in this order, in an ``.npz`` archive before falling back to its first array.
NPZ_KEYS = ("x", "data")

PathLike = Union[str, "os.PathLike[str]"]


def read_array(path: PathLike) -> np.ndarray:
    """Read and validate the array of an ``.npy`` / ``.npz`` file, keeping its dtype.

    See :func:`load_array` for the rules; this variant returns the NumPy array unconverted (so a
    caller can tell ``uint8`` images from real-valued data).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz"):
        raise DataError(f"{path}: unsupported extension {ext or '(none)'!r}; expected .npy or .npz")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(6)
    if ext == ".npy" and head != b"\x93NUMPY":
        raise DataError(f"{path}: not a NumPy .npy file (bad magic bytes {head!r})")
    if ext == ".npz" and not head.startswith(b"PK"):
        raise DataError(f"{path}: not a NumPy .npz file (not a zip archive)")
    _check_declared_sizes(path, ext)
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
            key = None
        else:
            with np.load(path, allow_pickle=False) as archive:
                if not archive.files:
                    raise DataError(f"{path}: the .npz archive holds no arrays")
                key = next((k for k in NPZ_KEYS if k in archive.files), archive.files[0])
                arr = archive[key]
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled Python objects, which are not loaded (allow_pickle=False)") from None
        raise DataError(f"{path}: not a valid NumPy file ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the file ({e})") from None
    where = path if key is None else f"{path}[{key!r}]"
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{where}: dtype {arr.dtype} is not a real numeric type (need integer or float)")
    if arr.ndim < 2:
        raise DataError(f"{where}: need shape [N, *event] with at least one event dimension, got {arr.shape}")
    if arr.shape[0] < 1 or any(s < 1 for s in arr.shape[1:]):
        raise DataError(f"{where}: need at least one sample and non-empty event dimensions, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise DataError(f"{where}: contains {bad} NaN or infinite values")
    return arr


#: Key of the class labels in an ``.npz`` archive.
LABEL_KEY = "y"


def read_labels(path: PathLike, n: int) -> "Optional[Tensor]":
    """The class labels ``y`` of an ``.npz`` archive as int64 ``[n]``, or ``None`` when it has none.

    Raises:
        DataError: labels that are not integers, not one per example, negative, or at least
            :data:`scoresde._validation.MAX_CLASSES` (checked before a network is sized from them).
    """
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if LABEL_KEY not in archive.files:
                return None
            y = archive[LABEL_KEY]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the labels {LABEL_KEY!r} ({e})") from None
    where = f"{path}[{LABEL_KEY!r}]"
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: class labels must be integers, got dtype {y.dtype}")
    if y.shape != (n,):
        raise DataError(f"{where}: need one label per example, shape ({n},), got {y.shape}")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: class labels must be 0, 1, ..., K-1; got a negative label {int(y.min())}")
    if y.size and int(y.max()) >= MAX_CLASSES:
        raise DataError(f"{where}: class labels must be 0, 1, ..., K-1 with K <= {MAX_CLASSES:,}; got the label {int(y.max())} "
                        "(a damaged file, or labels that are not class indices)")
    return torch.from_numpy(y.astype(np.int64))


def _npy_header(f: Any, where: str) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, payload bytes)`` from the header of an ``.npy`` stream positioned at its start."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{where}: not a valid NumPy file ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds pickled Python objects, which are not loaded (allow_pickle=False)")
    return tuple(shape), dtype, math.prod(shape) * dtype.itemsize


def _check_declared_sizes(path: str, ext: str) -> None:
    """Refuse a file whose header declares more data than it holds or than memory allows, before loading it.

    NumPy allocates the array its header declares before reading the data; a few bytes claiming a
    shape of ``(10**12, 2)`` would ask for terabytes. For ``.npz`` archives the declared
    (uncompressed) size of each member is checked as well, which bounds what decompression can produce.
    """
    if ext == ".npy":
        with open(path, "rb") as f:
            shape, dtype, nbytes = _npy_header(f, path)
            offset = f.tell()
        check_memory(nbytes, f"{path}: an array of shape {shape} and dtype {dtype}")
        held = os.path.getsize(path) - offset
        if held < nbytes:
            raise DataError(f"{path}: not a valid NumPy file: the header declares shape {shape} ({nbytes} bytes of {dtype}) but the file holds {held} bytes")
        return
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                where = f"{path}[{info.filename!r}]"
                check_memory(info.file_size, f"{where}: a member that inflates to {info.file_size} bytes")
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    shape, dtype, nbytes = _npy_header(f, where)
                    held = info.file_size - f.tell()
                check_memory(nbytes, f"{where}: an array of shape {shape} and dtype {dtype}")
                if held < nbytes:
                    raise DataError(f"{where}: not a valid NumPy file: the header declares shape {shape} ({nbytes} bytes of {dtype}) but the member holds {held} bytes")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the archive ({e})") from None


def load_array(path: PathLike) -> Tensor:
    """Load a data set ``[N, *event]`` from a ``.npy`` or ``.npz`` file as a float32 tensor.

    An ``.npz`` archive contributes its array named ``"x"`` if present, else the one named
    ``"data"``, else its first array. Files are read with ``allow_pickle=False``.

    Args:
        path: file path ending in ``.npy`` or ``.npz``.

    Returns:
        ``[N, *event]`` float32 tensor (values as stored; no rescaling).

    Raises:
        DataError: missing file, other extension, unreadable or corrupt file, pickled objects,
            non-numeric dtype (bool, complex, strings, objects), fewer than two dimensions, no samples
            or an empty event dimension, NaN or infinite values (or values beyond the float32 range),
            or a header declaring more data than the file holds.
        ResourceLimitError: a header (or an ``.npz`` member) declaring more data than memory allows;
            refused before anything is allocated.
    """
    return array_to_tensor(read_array(path), path)


def array_to_tensor(arr: np.ndarray, path: PathLike = "array") -> Tensor:
    """Convert a validated array to a float32 tensor, refusing values beyond the float32 range."""
    with np.errstate(over="ignore"):
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{os.fspath(path)}: values overflow float32")
    return x
