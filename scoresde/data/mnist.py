"""Read MNIST and Fashion-MNIST from their original IDX files (no download, no torchvision).

The four files of each set are ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzip-compressed
(``.gz``, as distributed) or not. ``data_dir`` may be

* the folder that holds the four files, or
* a parent folder with a subfolder named after the data set (``mnist/`` or ``fashion-mnist/``), or
* a torchvision-style root (``MNIST/raw/`` or ``FashionMNIST/raw/``).

IDX format: a big-endian header (two zero bytes, type code ``0x08`` = unsigned byte, the number of
dimensions, then one uint32 per dimension) followed by the raw bytes in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._utils import check_memory
from ..errors import DataError, OptionError

#: Data sets :func:`load_mnist` reads.
MNIST_DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")

_PREFIX = {"train": "train", "test": "t10k"}
_TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

#: md5 of the original ``.gz`` files.
MNIST_MD5: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: md5 of the uncompressed IDX files (what ``gunzip`` makes of the published ``.gz`` files).
MNIST_RAW_MD5: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

IMAGE_SIZE = 28
NUM_CLASSES = 10

PathLike = Union[str, "os.PathLike[str]"]


def _file_names(split: str) -> Tuple[str, str]:
    p = _PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


def _find(folder: str, base: str) -> Union[str, None]:
    for name in (base + ".gz", base):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def resolve_mnist_dir(data_dir: PathLike, dataset: str = "mnist", split: str = "train") -> str:
    """The folder under ``data_dir`` that holds the files of ``dataset``/``split`` (see the module notes)."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir!r} does not exist")
    images, _ = _file_names(split)
    # The data set's own subfolder first, so that a parent holding other files is never read in its place.
    candidates: List[str] = [
        os.path.join(data_dir, dataset), os.path.join(data_dir, _TORCHVISION_DIR[dataset], "raw"), data_dir,
    ]
    for folder in candidates:
        if _find(folder, images) is not None:
            return folder
    raise DataError(
        f"{dataset} ({split}) not found: no {images}[.gz] in any of {candidates}. Point data_dir at the folder "
        f"holding the four IDX files or at its parent with a '{dataset}' subfolder"
    )


def _read_bytes(path: str, ndim: int) -> bytes:
    """The bytes of an IDX file (decompressed), reading no more than its header declares plus one byte.

    A ``.gz`` file is inflated as a stream: the header is read first and the payload is bounded by
    the size the header declares (and by :func:`scoresde._utils.memory_limit_bytes`), so a small
    gzip that inflates to gigabytes (a "gzip bomb") is refused after reading at most the declared size.
    """
    header = 4 + 4 * ndim
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(header)
            if len(head) < header or head[:4] != bytes([0, 0, 0x08, ndim]):
                return head  # too short or another kind of file: read_idx reports it
            dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(dims)
            check_memory(expected, f"{path}: the IDX header's dims {dims}")
            payload = f.read(expected + 1)  # one byte more reveals trailing data without inflating it all
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress ({e})") from None
    if len(payload) > expected:
        raise DataError(
            f"{path}: header gives dims {dims} ({expected} bytes) but the file holds more data; refused "
            "(corrupt, or a compressed file that inflates beyond its declared size)"
        )
    return head + payload


def md5sum(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_mnist_md5(path: PathLike, dataset: str) -> None:
    """Raise :class:`DataError` unless the file at ``path`` is the published ``dataset`` file of its name.

    The message says when the file is in fact another set's (MNIST files where Fashion-MNIST was asked for).
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    table = MNIST_MD5 if name.endswith(".gz") else MNIST_RAW_MD5
    want: Optional[str] = table[dataset].get(name)
    if want is None:
        raise DataError(f"{path}: not a file name of the published {dataset} set; md5 cannot be checked")
    got = md5sum(path)
    if got == want:
        return
    other = next((d for d in MNIST_DATASETS if d != dataset and table[d].get(name) == got), None)
    if other is not None:
        raise DataError(f"{path} is the {other} file {name}, not {dataset}'s; refused (point data_dir at the {dataset} files)")
    raise DataError(
        f"{path}: md5 {got} differs from the published {want}; the file is corrupt, truncated or not {dataset}. "
        "Replace it with the original file"
    )


def read_idx(path: PathLike, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file with ``ndim`` dimensions into a ``uint8`` array.

    Raises:
        DataError: unreadable file, wrong magic number (not IDX, not unsigned bytes or another rank)
            or a payload whose length disagrees with the header.
    """
    path = os.fspath(path)
    raw = _read_bytes(path, ndim)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    magic = raw[:4]
    if magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08 or magic[3] != ndim:
        raise DataError(
            f"{path}: bad magic number 0x{magic.hex()} (expected 0x000008{ndim:02x}: unsigned bytes, {ndim} dims); "
            "not an IDX file of the expected kind"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header gives dims {dims} ({expected} bytes) but the file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    data_dir: PathLike, split: str = "train", dataset: str = "mnist", check_md5: bool = True
) -> Tuple[Tensor, Tensor]:
    """Load MNIST or Fashion-MNIST images and labels from the IDX files under ``data_dir``.

    Args:
        data_dir: the folder with the four IDX files, or a parent with a ``mnist/`` or
            ``fashion-mnist/`` subfolder (or torchvision's ``MNIST/raw/`` layout).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        check_md5: verify the md5 of each file against the published values (:data:`MNIST_MD5`
            for ``.gz`` files, :data:`MNIST_RAW_MD5` for uncompressed ones) before parsing it. On by
            default, so that a corrupt, truncated or substituted file (MNIST files in a
            ``fashion-mnist`` folder, say) is refused; turn it off only for your own IDX files.

    Returns:
        ``(images, labels)``: ``images`` uint8 ``[N, 1, 28, 28]``, ``labels`` int64 ``[N]`` in ``0..9``.

    Raises:
        DataError: missing or corrupt files, bad magic numbers, image size other than 28x28, image
            and label counts that differ, labels outside 0..9, or an md5 mismatch.
        ValueError: unknown ``split`` or ``dataset``.
    """
    if dataset not in MNIST_DATASETS:
        raise OptionError(f"dataset must be one of {MNIST_DATASETS}, got {dataset!r}")
    if split not in SPLITS:
        raise OptionError(f"split must be one of {SPLITS}, got {split!r}")
    folder = resolve_mnist_dir(data_dir, dataset, split)
    images_base, labels_base = _file_names(split)
    images_path = _find(folder, images_base)
    labels_path = _find(folder, labels_base)
    if labels_path is None:
        raise DataError(f"{dataset} ({split}): {labels_base}[.gz] missing in {folder}")

    if check_md5:
        for path in (images_path, labels_path):
            check_mnist_md5(path, dataset)

    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{dataset} ({split}): {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds no images")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_path}: labels must lie in 0..9, found {int(labels.max())}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    y = torch.from_numpy(labels.astype(np.int64))  # [N]
    return x, y
