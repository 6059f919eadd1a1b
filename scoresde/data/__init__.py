"""Data sets for training: 2-D toy distributions, MNIST-family and CIFAR-10 images, image folders and user arrays.

:func:`get_dataset` turns a spec string into a :class:`Dataset` whose ``data`` is a float tensor
``[N, *event]`` in the model's range. Images with ``levels`` grey levels (``k = 0..levels-1``) are
mapped to the model range ``[lo, hi]`` (default ``[-1, 1]``) by

    x = lo + (hi - lo) * k / (levels - 1),

so black is ``lo`` and white is ``hi`` (:func:`to_model_range`; inverse :func:`to_levels`). This is
the map for training inputs and generated samples. Bits per dimension are computed separately with
uniform dequantisation (the bin of level ``k`` has width ``(hi - lo) / (levels - 1)``), which is the
likelihood code's business, not the data loader's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .._validation import integer, positive_int
from ..errors import DataError, OptionError
from .arrays import NPZ_KEYS, array_to_tensor, load_array, read_array, read_labels
from .cifar10 import CIFAR10_CLASSES, CIFAR10_MD5, check_cifar10_md5, load_cifar10, resolve_cifar10
from .folder import IMAGE_EXTENSIONS, FolderImages, load_image_folder
from .mnist import MNIST_DATASETS, MNIST_MD5, MNIST_RAW_MD5, SPLITS, check_mnist_md5, load_mnist, read_idx, resolve_mnist_dir
from .toy import TOY_DATASETS, TOY_NUM_CLASSES, toy_data, toy_data_with_labels, toy_gmm
from .transforms import random_hflip

#: Number of points drawn for a toy data set when ``n`` is not given.
DEFAULT_TOY_SIZE = 100_000
#: Seeds of the toy data when no generator is given: different points for each split.
TOY_SPLIT_SEEDS = {"train": 0, "test": 1}

DEFAULT_RANGE = (-1.0, 1.0)

#: Environment variable naming the data folder (one holding ``mnist/``, ``fashion-mnist/``, ``cifar10/``).
DATA_ENV = "SCORESDE_DATA"


def default_data_dir() -> Optional[str]:
    """The data folder named by the environment variable ``SCORESDE_DATA``, or ``None`` when it is unset.

    Nothing else is searched: code never guesses a data folder. Set the variable once
    (``export SCORESDE_DATA=/path/to/data``, a folder holding ``mnist/`` and ``fashion-mnist/``)
    or pass ``data_dir`` / ``--data-dir`` explicitly.
    """
    value = os.environ.get(DATA_ENV, "").strip()
    return os.path.expanduser(value) if value else None


def _check_levels(levels: int, data_range: Tuple[float, float]) -> Tuple[int, float, float]:
    levels = integer(levels, "levels", minimum=2)
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise OptionError(f"data_range must be (lo, hi) with lo < hi, got {data_range}")
    return levels, lo, hi


def to_model_range(
    x: Tensor, levels: int = 256, data_range: Tuple[float, float] = DEFAULT_RANGE, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Map integer levels ``k in {0, ..., levels-1}`` to ``lo + (hi - lo) * k / (levels - 1)``.

    Args:
        x: integer levels, any shape (an integer tensor, or a float tensor holding whole numbers).
        levels: number of levels (256 for 8-bit images).
        data_range: ``(lo, hi)``, the images of levels ``0`` and ``levels - 1``.
        dtype: floating dtype of the result.

    Returns:
        Float tensor shaped like ``x`` with values in ``[lo, hi]``.

    Raises:
        DataError: non-integral values or levels outside ``0..levels-1``.
    """
    levels, lo, hi = _check_levels(levels, data_range)
    if x.is_floating_point():
        if x.numel() and not bool((x == torch.round(x)).all()):
            raise DataError("to_model_range expects integer levels; got non-integral values")
    elif x.dtype == torch.bool or x.is_complex():
        raise DataError(f"to_model_range expects integer levels, got dtype {x.dtype}")
    if x.numel() and not (x.dtype == torch.uint8 and levels == 256):
        x_min, x_max = x.min().item(), x.max().item()
        if x_min < 0 or x_max > levels - 1:
            raise DataError(f"levels must lie in [0, {levels - 1}], got values in [{x_min}, {x_max}]")
    out = x.to(dtype=dtype, copy=True)
    return out.mul_((hi - lo) / (levels - 1)).add_(lo)  # in place: large image sets stay cheap


def to_levels(x: Tensor, levels: int = 256, data_range: Tuple[float, float] = DEFAULT_RANGE) -> Tensor:
    """Inverse of :func:`to_model_range`: round ``(x - lo) / (hi - lo) * (levels - 1)`` and clip.

    Values outside ``[lo, hi]`` (e.g. generated samples) are clipped to the end levels.

    Returns:
        Levels shaped like ``x``: ``uint8`` when ``levels <= 256``, else ``int64``.
    """
    levels, lo, hi = _check_levels(levels, data_range)
    k = torch.round((x - lo) / (hi - lo) * (levels - 1)).clamp(0, levels - 1)
    return k.to(torch.uint8 if levels <= 256 else torch.int64)


def dequantization_range(levels: int, data_range: Tuple[float, float] = DEFAULT_RANGE) -> Tuple[float, float]:
    """The ``data_range`` to give :func:`scoresde.bits_per_dim` for data mapped by :func:`to_model_range`.

    :func:`to_model_range` puts level ``k`` at ``lo + w k`` with ``w = (hi - lo) / (levels - 1)``.
    The dequantization bins of width ``w`` centred on those values tile
    ``[lo - w/2, hi + w/2)``, so bits/dim of a model trained on such data are computed with
    ``data_range = (lo - w/2, hi + w/2)``: for 8-bit data on ``[-1, 1]``, ``(-1 - 1/255, 1 + 1/255)``.

    Example:
        >>> dequantization_range(256, (-1.0, 1.0))
        (-1.003921568627451, 1.003921568627451)
    """
    levels, lo, hi = _check_levels(levels, data_range)
    w = (hi - lo) / (levels - 1)
    return (lo - w / 2, hi + w / 2)


@dataclass(eq=False)
class Dataset(torch.utils.data.Dataset):
    """An in-memory data set in the model's range.

    Attributes:
        name: the spec it came from (a toy name, ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
            ``"folder:PATH"`` or a file path).
        data: float tensor ``[N, *event]``.
        discrete_levels: number of grey levels for quantised data (256 for 8-bit images), else ``None``.
        data_range: ``(lo, hi)`` the levels were mapped to, for quantised data; else ``None``.
        labels: int64 ``[N]`` class labels where the source has them, else ``None``.
        class_names: the names of classes ``0..K-1`` where the source names them (CIFAR-10, a folder of
            class subfolders), else ``None``.

    Indexing returns ``data[i]`` (``[*event]``); ``len`` is ``N``.
    """

    name: str
    data: Tensor
    discrete_levels: Optional[int] = None
    data_range: Optional[Tuple[float, float]] = None
    labels: Optional[Tensor] = None
    class_names: Optional[Tuple[str, ...]] = None

    @property
    def event_shape(self) -> Tuple[int, ...]:
        """Shape of one sample, ``data.shape[1:]``."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, event_shape={self.event_shape}, "
            f"discrete_levels={self.discrete_levels})"
        )


def _is_array_path(spec: str) -> bool:
    return os.path.splitext(spec)[1].lower() in (".npy", ".npz") or os.path.isfile(spec)


#: Prefix of a folder-of-images spec: ``"folder:PATH"``.
FOLDER_PREFIX = "folder:"
CIFAR10 = "cifar10"
#: The named data sets that live in a data folder (``data_dir`` / ``SCORESDE_DATA``).
DATA_DIR_SETS = (*MNIST_DATASETS, CIFAR10)


def get_dataset(
    spec: str,
    data_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    split: str = "train",
    n: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    image_size: Optional[int] = None,
) -> Dataset:
    """Build a data set from a spec string.

    Args:
        spec: a toy name (:data:`TOY_DATASETS`), ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
            ``"folder:PATH"`` (a folder of PNG / JPEG images, see :func:`load_image_folder`), or the
            path of a ``.npy`` / ``.npz`` file (see :func:`load_array`; an ``.npz`` may hold labels ``y``).
        data_dir: where the MNIST-family or CIFAR-10 files are (see :func:`load_mnist`,
            :func:`load_cifar10`); default: the environment variable ``SCORESDE_DATA`` (:func:`default_data_dir`).
        split: ``"train"`` or ``"test"``. For toy data it picks the default seed
            (:data:`TOY_SPLIT_SEEDS`), so the two splits differ; arrays and image folders have a single split.
        n: number of samples: toy data draws ``n`` points (default :data:`DEFAULT_TOY_SIZE`); image and
            array data keep their first ``n`` samples (default: all).
        generator: CPU generator for toy data (default: a fresh one seeded from ``split``).
        image_size: for ``folder:PATH`` only: centre-crop every image to a square and resize it to
            ``image_size x image_size`` (needed when the images differ in size).

    Returns:
        A :class:`Dataset`. MNIST images are ``[N, 1, 28, 28]`` and CIFAR-10 images ``[N, 3, 32, 32]``
        (``N`` = 50,000 train / 10,000 test, labels int64 ``[N]``, ``class_names`` set), both in ``[-1, 1]``
        with ``discrete_levels=256``; a folder gives ``[N, C, H, W]`` (``C`` 1 or 3) in ``[-1, 1]`` with
        ``discrete_levels=256``, labelled when it has class subfolders; ``uint8`` arrays are treated as
        8-bit images the same way; other arrays are used as stored (float32, ``discrete_levels=None``);
        toy data is ``[n, 2]``.

    Raises:
        DataError: unknown spec (the message lists the valid ones), missing ``data_dir`` for image
            sets, ``n`` larger than the data set, or any loader error.
        OptionError: ``image_size`` with a spec other than ``folder:PATH``, or not a positive integer.
        ValueError: bad ``split`` or ``n``.
    """
    if split not in SPLITS:
        raise OptionError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None:
        n = positive_int(n, "n")
    spec = os.fspath(spec)
    if spec.startswith(FOLDER_PREFIX):
        return _folder_dataset(spec, n, image_size)
    if image_size is not None:
        raise OptionError(
            f"image_size applies only to folder:PATH data sets, got image_size={image_size!r} for {spec!r}; "
            "drop it (this data set keeps its native image size)"
        )

    if spec in TOY_DATASETS:
        if generator is None:
            generator = torch.Generator().manual_seed(TOY_SPLIT_SEEDS[split])
        x, labels = toy_data_with_labels(spec, DEFAULT_TOY_SIZE if n is None else int(n), generator)
        return Dataset(spec, x, labels=labels)

    if spec in MNIST_DATASETS:
        if data_dir is None:
            data_dir = default_data_dir()
        if data_dir is None:
            raise DataError(
                f"{spec} needs a data folder: pass data_dir (--data-dir on the command line) or set the environment "
                f"variable {DATA_ENV}, naming the folder with its four IDX files or a parent with a '{spec}' folder"
            )
        images, labels = load_mnist(data_dir, split=split, dataset=spec, check_md5=True)
        images, labels = _check_n(images, n, spec), _check_n(labels, n, spec)
        return Dataset(spec, to_model_range(images), 256, DEFAULT_RANGE, labels)

    if spec == CIFAR10:
        return _cifar10_dataset(data_dir, split, n)

    if _is_array_path(spec):
        arr = read_array(spec)
        labels = read_labels(spec, arr.shape[0])
        labels = None if labels is None else _check_n(labels, n, spec)
        if arr.dtype == "uint8":
            data = to_model_range(torch.from_numpy(arr.copy()))
            return Dataset(spec, _check_n(data, n, spec), 256, DEFAULT_RANGE, labels)
        return Dataset(spec, _check_n(array_to_tensor(arr, spec), n, spec), labels=labels)

    raise DataError(
        f"unknown data set {spec!r}; valid: {', '.join(TOY_DATASETS)}, {', '.join(MNIST_DATASETS)}, {CIFAR10}, "
        f"{FOLDER_PREFIX}PATH (a folder of PNG/JPEG images), or a path to a .npy/.npz file"
    )


def _cifar10_dataset(data_dir: Optional[Union[str, "os.PathLike[str]"]], split: str, n: Optional[int]) -> Dataset:
    if data_dir is None:
        data_dir = default_data_dir()
    if data_dir is None:
        raise DataError(
            f"{CIFAR10} needs a data folder: pass data_dir (--data-dir on the command line) or set the environment "
            f"variable {DATA_ENV}, naming the folder with cifar-10-batches-bin/, cifar-10-batches-py/ or the archive "
            "cifar-10-binary.tar.gz / cifar-10-python.tar.gz (or a parent with a 'cifar10' folder)"
        )
    images, labels = load_cifar10(data_dir, split=split, check_md5=True, n=n)
    return Dataset(CIFAR10, to_model_range(images), 256, DEFAULT_RANGE, labels, CIFAR10_CLASSES)


def _folder_dataset(spec: str, n: Optional[int], image_size: Optional[int]) -> Dataset:
    path = os.path.expanduser(spec[len(FOLDER_PREFIX):])
    if not path:
        raise DataError(f"{spec!r} names no folder; write {FOLDER_PREFIX}PATH with the folder of images")
    found = load_image_folder(path, image_size=image_size, n=n)
    return Dataset(spec, to_model_range(found.images), 256, DEFAULT_RANGE, found.labels, found.class_names)


def _check_n(x: Tensor, n: Optional[int], name: str) -> Tensor:
    if n is None:
        return x
    n = positive_int(n, "n")
    if n > x.shape[0]:
        raise DataError(f"{name}: asked for n={n} samples but the data set has {x.shape[0]}")
    return x[: int(n)]


__all__ = [
    "Dataset", "get_dataset", "to_model_range", "to_levels", "dequantization_range",
    "toy_data", "toy_gmm", "TOY_DATASETS", "toy_data_with_labels", "TOY_NUM_CLASSES",
    "load_array", "read_array", "read_labels", "NPZ_KEYS",
    "load_mnist", "read_idx", "resolve_mnist_dir", "check_mnist_md5", "MNIST_DATASETS", "MNIST_MD5", "MNIST_RAW_MD5", "SPLITS",
    "load_cifar10", "resolve_cifar10", "check_cifar10_md5", "CIFAR10_CLASSES", "CIFAR10_MD5",
    "load_image_folder", "FolderImages", "IMAGE_EXTENSIONS", "FOLDER_PREFIX", "random_hflip",
    "DEFAULT_TOY_SIZE", "DEFAULT_RANGE", "DATA_ENV", "default_data_dir", "DATA_DIR_SETS",
]
