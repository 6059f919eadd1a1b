"""Read CIFAR-10 from its original distributions (no download, no torchvision, no extraction to disk).

Two distributions are read (https://www.cs.toronto.edu/~kriz/cifar.html):

* the **binary** one: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``. Each
  file is 10,000 records of 3,073 bytes: one label byte (0..9), then 3,072 pixel bytes (1,024 red,
  1,024 green, 1,024 blue, each a 32x32 image in row-major order), so exactly 30,730,000 bytes;
* the **python** one: ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, pickled dicts
  with ``data`` (uint8 ``[10000, 3072]``, same pixel order) and ``labels`` (10,000 ints). They are read
  only through a restricted unpickler (:func:`scoresde.data.safe_pickle.loads_plain`) that admits
  plain containers, numbers, strings and numeric NumPy arrays; nothing in the file is run.

Either may also be given as its archive, ``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``,
which is read member by member with :mod:`tarfile` (nothing is extracted to disk).

Integrity (:data:`CIFAR10_MD5`): the archives are checked against the md5s published on the CIFAR
page, the extracted python batches against the per-file md5s that torchvision's ``CIFAR10`` lists.
No md5 is published for the extracted binary batches; they are checked by exact size (30,730,000
bytes, :data:`CIFAR10_RECORDS_PER_FILE` records) and structure (labels 0..9) instead.

``data_dir`` may be the folder holding the files (or the archive), a parent with a ``cifar10/``
subfolder, or a parent holding ``cifar-10-batches-bin/``, ``cifar-10-batches-py/`` or an archive.
Nothing else is searched.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._utils import check_memory
from ..errors import DataError, OptionError
from .mnist import SPLITS, md5sum
from .safe_pickle import loads_plain

PathLike = Union[str, "os.PathLike[str]"]

#: Class names, in label order (``batches.meta.txt`` of the distribution).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: Published md5s: the two archives (CIFAR page) and the extracted python batches (torchvision's list).
CIFAR10_MD5: Dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

#: Records in each batch file of the original distribution (checked for extracted binary batches).
CIFAR10_RECORDS_PER_FILE = 10_000
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # 3072
RECORD = 1 + PIXELS  # 3073: label byte + pixels
NUM_CLASSES = 10
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

BIN_DIR, PY_DIR = "cifar-10-batches-bin", "cifar-10-batches-py"
BIN_ARCHIVE, PY_ARCHIVE = "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz"


def batch_names(split: str) -> Tuple[str, ...]:
    """The batch names of a split, without the ``.bin`` suffix of the binary distribution."""
    if split not in SPLITS:
        raise OptionError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(f"data_batch_{i}" for i in range(1, 6)) if split == "train" else ("test_batch",)


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR-10 split is: ``kind`` is ``"binary"`` or ``"python"``; ``path`` a folder or an archive."""

    kind: str
    path: str
    archive: bool


def resolve_cifar10(data_dir: PathLike, split: str = "train") -> CifarSource:
    """Find the CIFAR-10 files of ``split`` under ``data_dir`` (see the module notes); nothing else is searched.

    In each of ``data_dir/cifar10`` and ``data_dir`` (in that order) it looks, in order, for
    ``cifar-10-batches-bin/``, binary batches in the folder itself, ``cifar-10-batches-py/``, python
    batches in the folder itself, ``cifar-10-binary.tar.gz`` and ``cifar-10-python.tar.gz``.
    ``data_dir`` may also be one of the two archives.

    Raises:
        DataError: ``data_dir`` does not exist, or none of these is there.
    """
    data_dir = os.fspath(data_dir)
    first = batch_names(split)[0]
    if os.path.isfile(data_dir) and os.path.basename(data_dir) in (BIN_ARCHIVE, PY_ARCHIVE):
        return CifarSource("binary" if os.path.basename(data_dir) == BIN_ARCHIVE else "python", data_dir, True)
    if not os.path.isdir(data_dir):
        raise DataError(
            f"cifar10: data directory {data_dir!r} does not exist; pass data_dir (--data-dir) naming the folder with "
            f"{BIN_DIR}/, {PY_DIR}/ or {BIN_ARCHIVE}, or set SCORESDE_DATA"
        )
    roots = [os.path.join(data_dir, "cifar10"), data_dir]
    for root in roots:
        for kind, folder, name in (
            ("binary", os.path.join(root, BIN_DIR), first + ".bin"), ("binary", root, first + ".bin"),
            ("python", os.path.join(root, PY_DIR), first), ("python", root, first),
        ):
            if os.path.isfile(os.path.join(folder, name)):
                return CifarSource(kind, folder, False)
        for kind, name in (("binary", BIN_ARCHIVE), ("python", PY_ARCHIVE)):
            if os.path.isfile(os.path.join(root, name)):
                return CifarSource(kind, os.path.join(root, name), True)
    raise DataError(
        f"cifar10 ({split}) not found: looked in {roots} for {BIN_DIR}/, {PY_DIR}/, {first}.bin, {first}, {BIN_ARCHIVE} "
        f"and {PY_ARCHIVE}. Point data_dir (--data-dir) or SCORESDE_DATA at the folder holding one of them"
    )


def check_cifar10_md5(path: PathLike, name: Optional[str] = None) -> None:
    """Raise :class:`DataError` unless the file's md5 is the published one for ``name`` (default: its base name).

    Raises:
        DataError: a name without a published md5, or an md5 that differs (the message gives both).
    """
    path = os.fspath(path)
    name = name or os.path.basename(path)
    want = CIFAR10_MD5.get(name)
    if want is None:
        raise DataError(f"{path}: no published CIFAR-10 md5 for a file named {name!r}; md5 cannot be checked")
    got = md5sum(path)
    if got != want:
        raise DataError(
            f"{path}: md5 {got} differs from the published {want} of {name}; the file is corrupt, truncated or not "
            f"the original CIFAR-10 {name}. Replace it with the original from {URL}"
        )


def parse_binary_batch(raw: bytes, where: str, records: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Parse a binary batch (records of 1 label byte + 3,072 pixel bytes).

    Args:
        raw: the file's bytes.
        where: the file name, for messages.
        records: the exact number of records required, or ``None`` for any positive number.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` and uint8 ``[N]``.
    """
    size = len(raw)
    if size == 0 or size % RECORD or (records is not None and size != records * RECORD):
        need = f"exactly {records * RECORD:,} bytes ({records:,} records" if records else f"a multiple of {RECORD} bytes ("
        raise DataError(
            f"{where}: {size:,} bytes is not a CIFAR-10 binary batch: need {need} of 1 label byte + {PIXELS} pixel "
            "bytes); the file is truncated or not a CIFAR-10 binary batch. Replace it with the original"
        )
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    return _checked(rec[:, 1:].reshape(-1, *IMAGE_SHAPE), rec[:, 0], where)


def _checked(images: np.ndarray, labels: np.ndarray, where: str) -> Tuple[np.ndarray, np.ndarray]:
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{where}: labels must lie in 0..9, found {int(labels.max())}; not a CIFAR-10 batch")
    return images, labels


def parse_python_batch(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """Parse a pickled python batch through the restricted unpickler.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` and int64 ``[N]``.

    Raises:
        DataError: a pickle that asks for anything but plain data, or a dict without ``data`` (uint8
            ``[N, 3072]``) and ``labels`` (``N`` integers in 0..9).
    """
    what = "a plain CIFAR-10 batch"
    batch = loads_plain(raw, where, what)
    if not isinstance(batch, dict):
        raise DataError(f"{where}: holds a {type(batch).__name__}, not {what} (a dict with 'data' and 'labels')")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be a uint8 array [N, {PIXELS}], got {got}; not {what}")
    if isinstance(labels, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        labels = np.asarray(labels, dtype=np.int64)
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],):
        raise DataError(f"{where}: 'labels' must be {data.shape[0]} integers, one per image; not {what}")
    if labels.size and int(labels.min()) < 0:
        raise DataError(f"{where}: labels must lie in 0..9, found {int(labels.min())}; not a CIFAR-10 batch")
    return _checked(data.reshape(-1, *IMAGE_SHAPE), labels, where)


def _read_file(path: str) -> bytes:
    check_memory(os.path.getsize(path), f"{path}: a file of {os.path.getsize(path)} bytes")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e})") from None


def _folder_batches(
    source: CifarSource, names: Sequence[str], check_md5: bool, n: Optional[int] = None
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Read the extracted batch files ``names`` in order from ``source.path``, stopping once ``n`` images are read."""
    out, count = [], 0
    for name in names:
        if n is not None and count >= n:
            break
        fname = name + (".bin" if source.kind == "binary" else "")
        path = os.path.join(source.path, fname)
        if not os.path.isfile(path):
            raise DataError(f"cifar10: {fname} missing in {source.path}; the split needs {', '.join(names)}. "
                            "Restore the full distribution")
        if source.kind == "binary":
            records = CIFAR10_RECORDS_PER_FILE if check_md5 else None
            size = os.path.getsize(path)
            if records is not None and size != records * RECORD:  # refused before reading
                raise DataError(
                    f"{path}: {size:,} bytes, but a CIFAR-10 binary batch is exactly {records * RECORD:,} bytes "
                    f"({records:,} records of {RECORD}); the file is truncated or not the original. Replace it with "
                    f"the original from {URL}"
                )
            out.append(parse_binary_batch(_read_file(path), path, records))
        else:
            if check_md5:
                check_cifar10_md5(path, name)
            out.append(parse_python_batch(_read_file(path), path))
        count += out[-1][0].shape[0]
    return out


def _archive_batches(source: CifarSource, names: Sequence[str], check_md5: bool) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Read the batches ``names`` from a ``.tar.gz`` archive in one streaming pass, extracting nothing to disk."""
    archive = source.path
    if check_md5:
        check_cifar10_md5(archive)
    folder = BIN_DIR if source.kind == "binary" else PY_DIR
    wanted = {posixpath.join(folder, n + (".bin" if source.kind == "binary" else "")): n for n in names}
    found: Dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                name = posixpath.normpath(member.name.lstrip("/"))
                if name not in wanted or not member.isfile():
                    continue
                total += member.size
                check_memory(total * 2, f"{archive}: members of {total} bytes")
                f = tar.extractfile(member)
                found[wanted[name]] = f.read() if f is not None else b""
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: cannot read the archive ({e}); replace it with the original from {URL}") from None
    missing = [m for m, n in wanted.items() if n not in found]
    if missing:
        raise DataError(f"{archive}: the archive has no {', '.join(missing)}; not a complete CIFAR-10 archive. "
                        f"Replace it with the original from {URL}")
    out = []
    for member, n in wanted.items():
        where = f"{archive}[{member}]"
        raw = found.pop(n)
        out.append(parse_binary_batch(raw, where) if source.kind == "binary" else parse_python_batch(raw, where))
    return out


def load_cifar10(
    data_dir: PathLike, split: str = "train", check_md5: bool = True, n: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    """Load CIFAR-10 images and labels from the binary or python distribution under ``data_dir``.

    Args:
        data_dir: see :func:`resolve_cifar10` (the folder with the batches, a parent holding
            ``cifar10/``, ``cifar-10-batches-bin/``, ``cifar-10-batches-py/`` or an archive, or the archive).
        split: ``"train"`` (50,000 images in five batches) or ``"test"`` (10,000).
        check_md5: check integrity before parsing (on by default): archives and python batches against
            their published md5s (:data:`CIFAR10_MD5`), extracted binary batches by their exact size
            (no md5 is published for them). Turn it off only for your own files in the CIFAR layout;
            the structure (record size, labels 0..9, plain pickles) is checked either way.
        n: read batches only until ``n`` images are in hand and keep the first ``n`` (default: all).
            With an archive the whole archive is still md5-checked.

    Returns:
        ``(images, labels)``: ``images`` uint8 ``[N, 3, 32, 32]`` (channels R, G, B), ``labels`` int64 ``[N]``
        in ``0..9`` (:data:`CIFAR10_CLASSES`).

    Raises:
        DataError: missing folder or files, md5 or size mismatch, corrupt or non-CIFAR files, pickles that
            ask for anything but plain data, labels outside 0..9, or ``n`` larger than the split.
        ResourceLimitError: the split would not fit in memory (refused before reading).
    """
    source = resolve_cifar10(data_dir, split)
    names = batch_names(split)
    expected = len(names) * CIFAR10_RECORDS_PER_FILE if n is None else min(n, len(names) * CIFAR10_RECORDS_PER_FILE)
    check_memory(expected * PIXELS * 6, f"cifar10 ({split}): {expected} images as uint8 and float32")
    if source.archive:
        parts = _archive_batches(source, names, check_md5)
    else:
        parts = _folder_batches(source, names, check_md5, n)
    images = np.concatenate([p[0] for p in parts])  # a fresh, writable, contiguous copy
    labels = np.concatenate([p[1].astype(np.int64) for p in parts])
    del parts
    if n is not None:
        if n > images.shape[0]:
            raise DataError(f"cifar10 ({split}): asked for n={n} images but {source.path} holds {images.shape[0]}")
        images, labels = images[:n].copy(), labels[:n].copy()
    return torch.from_numpy(images), torch.from_numpy(labels)

__all__ = [
    "load_cifar10", "resolve_cifar10", "check_cifar10_md5", "parse_binary_batch", "parse_python_batch",
    "CifarSource", "CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_RECORDS_PER_FILE",
]
