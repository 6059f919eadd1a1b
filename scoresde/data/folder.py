"""Read a folder of PNG and JPEG images (through Pillow) as 8-bit images ``[N, C, H, W]``.

Layout (``folder:PATH`` in :func:`scoresde.data.get_dataset`):

* images directly in ``PATH``: an unlabelled set;
* one subfolder of ``PATH`` per class (images anywhere below it): labels ``0..K-1`` in the order of
  the sorted subfolder names, which are kept as the class names. Images both directly in ``PATH``
  and in subfolders are refused (the labelling would be ambiguous), and so is a class folder without images.

Files and folders whose names start with ``.`` are skipped. Files ending in ``.png``, ``.jpg`` or
``.jpeg`` (any case) are read, and must be PNG or JPEG by content; other image formats (``.gif``,
``.bmp``, ``.webp``, ``.tif``, ...) are refused by name, so that none is dropped silently; any other
file (a README, a CSV) is ignored. Images are sorted by path within each class.

Modes: ``L`` gives 1 channel and ``RGB`` 3, as stored. Modes converted because nothing is lost:
``1`` (bilevel) to ``L`` (0 and 255), ``P`` (palette, no transparency) to ``RGB``, and ``LA`` /
``RGBA`` / ``PA`` / ``P`` with transparency to ``L`` / ``RGB`` **only when every pixel is opaque**
(alpha 255); an image with transparent pixels is refused (flatten it onto a background first).
Every other mode (``CMYK``, ``I;16``, ``I``, ``F``, ``YCbCr``, ``LAB``, ...) and 16-bit PNGs are
refused, naming the file. All images must have the same number of channels.

Sizes: without ``image_size`` all images must have the same size. With ``image_size=S`` each image
is centre-cropped to the largest square (offsets rounded down) and resized to ``S x S`` with
Pillow's Lanczos filter (``Image.Resampling.LANCZOS``, antialiased when shrinking); when that square
is already ``S x S`` the crop alone is used, so its pixels are kept exactly. EXIF orientation is not applied: pixels are used as stored.

Memory: every header is read first (size and mode, without decoding), and the total
``N * C * H * W`` bytes (times 5, for the uint8 images and their float32 copy) is checked with
:func:`scoresde._utils.check_memory` before any image is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._utils import check_memory
from .._validation import positive_int
from ..errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions read as images (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: Image extensions refused by name (other formats are not read).
OTHER_IMAGE_EXTENSIONS = (".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".heic", ".avif", ".jp2", ".ico")
_FORMATS = ("PNG", "JPEG")
#: Channels of each admitted mode (after the lossless conversions described in the module notes).
_CHANNELS = {"L": 1, "1": 1, "LA": 1, "RGB": 3, "P": 3, "PA": 3, "RGBA": 3}


@dataclass
class FolderImages:
    """Images read from a folder.

    Attributes:
        images: uint8 ``[N, C, H, W]`` (``C`` is 1 for grey, 3 for RGB).
        labels: int64 ``[N]`` (class indices) for a folder of class subfolders, else ``None``.
        class_names: the class subfolder names, in label order, else ``None``.
        files: the ``N`` image paths, in order.
    """

    images: Tensor
    labels: Optional[Tensor]
    class_names: Optional[Tuple[str, ...]]
    files: Tuple[str, ...]


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _visible(folder: str) -> List[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e})") from None


def _image_files(entries: List[os.DirEntry]) -> List[str]:
    out = []
    for e in entries:
        if not e.is_file():
            continue
        ext = os.path.splitext(e.name)[1].lower()
        if ext in OTHER_IMAGE_EXTENSIONS:
            raise DataError(f"{e.path}: {ext} images are not read (only PNG and JPEG); convert it to PNG or remove it")
        if ext in IMAGE_EXTENSIONS:
            out.append(e.path)
    return out


def _walk_images(folder: str) -> List[str]:
    """Image files anywhere below ``folder`` (hidden entries skipped), sorted by path."""
    entries = _visible(folder)
    files = _image_files(entries)
    for e in entries:
        if e.is_dir(follow_symlinks=False):  # no symlinked folders below a class folder: no loops
            files.extend(_walk_images(e.path))
    return sorted(files)


def list_image_folder(path: PathLike) -> Tuple[List[str], Optional[List[int]], Optional[Tuple[str, ...]]]:
    """``(files, labels, class_names)`` of an image folder (see the module notes); nothing is decoded.

    Raises:
        DataError: no such folder, no images, images both in ``path`` and in subfolders, or a class folder
            without images.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"image folder {path!r} does not exist or is not a folder; pass folder:PATH naming a folder of images")
    entries = _visible(path)
    direct = _image_files(entries)
    subdirs = [e for e in entries if e.is_dir()]
    if direct:
        nested = next((d.path for d in subdirs if _walk_images(d.path)), None)
        if nested is not None:
            raise DataError(
                f"{path}: holds images both directly and in the subfolder {nested}; put every image in a class "
                "subfolder (labelled) or all of them directly in the folder (unlabelled)"
            )
        return direct, None, None
    files: List[str] = []
    labels: List[int] = []
    names = tuple(d.name for d in subdirs)
    for k, d in enumerate(subdirs):
        found = _walk_images(d.path)
        if not found:
            raise DataError(f"{d.path}: the class folder holds no PNG or JPEG images; remove it or add its images")
        files.extend(found)
        labels.extend([k] * len(found))
    if not files:
        raise DataError(f"{path}: holds no PNG or JPEG images (hidden files are skipped); put images (.png, .jpg, .jpeg) "
                        "in it or in one subfolder per class")
    return files, labels, names


def _probe(path: str) -> Tuple[str, Tuple[int, int]]:
    """``(mode, (width, height))`` from the header of a PNG or JPEG file, refusing modes that are not read."""
    Image = _pil()
    try:
        with Image.open(path, formats=_FORMATS) as im:
            mode, size, fmt = im.mode, im.size, im.format
            deep = fmt == "PNG" and any(";16" in str(t.args) for t in (im.tile or []))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable PNG or JPEG image ({e}); replace or remove the file") from None
    if mode not in _CHANNELS or deep:
        what = f"mode {mode}" if mode not in _CHANNELS else f"16-bit {mode}"
        raise DataError(
            f"{path}: {what} images are not read (only 8-bit grey L and RGB, and 1/P/LA/RGBA/PA converted losslessly); "
            "convert it to 8-bit RGB or grey, or remove it"
        )
    return mode, size


def _decode(path: str, image_size: Optional[int]) -> np.ndarray:
    """Decode one image to uint8 ``[H, W]`` (grey) or ``[H, W, 3]``, converted and resized as the module notes say."""
    Image = _pil()
    try:
        with Image.open(path, formats=_FORMATS) as im:
            w, h = im.size
            check_memory(w * h * 8, f"{path}: a {w}x{h} image")
            im.load()
            im = _plain_mode(im, path)
            if image_size is not None:
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                box = (left, top, left + s, top + s)
                if s == image_size:  # a crop alone: pixels kept exactly
                    im = im.crop(box) if (w, h) != (s, s) else im
                else:
                    im = im.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode the image ({e}); the file is corrupt or truncated. Replace or remove it") from None


def _plain_mode(im, path: str):
    """``im`` as ``L`` or ``RGB``, converting only what loses nothing (see the module notes)."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode == "P" and "transparency" not in im.info:
        return im.convert("RGB")
    if mode in ("P", "PA"):
        im, mode = im.convert("RGBA"), "RGBA"
    lo, _ = im.getchannel("A").getextrema()
    if lo < 255:
        raise DataError(
            f"{path}: has transparent pixels (alpha down to {lo}), which cannot be read without choosing a background; "
            "flatten it onto a background (or drop the alpha channel) first"
        )
    return im.convert("L" if mode == "LA" else "RGB")


def _check_uniform(files: List[str], probes: List[Tuple[str, Tuple[int, int]]], image_size: Optional[int]) -> Tuple[int, int, int]:
    """``(C, H, W)`` shared by all images, or a :class:`DataError` naming two files that differ."""
    c0, (w0, h0) = _CHANNELS[probes[0][0]], probes[0][1]
    for f, (mode, (w, h)) in zip(files, probes):
        if _CHANNELS[mode] != c0:
            grey, colour = (files[0], f) if c0 == 1 else (f, files[0])
            raise DataError(
                f"mixed image modes: {grey} is grey (1 channel) but {colour} is colour (3 channels); convert all images "
                "to one mode (all grey or all RGB)"
            )
        if image_size is None and (w, h) != (w0, h0):
            raise DataError(
                f"mixed image sizes: {files[0]} is {w0}x{h0} but {f} is {w}x{h} (width x height); pass image_size "
                "(--image-size S) to centre-crop and resize every image to SxS"
            )
    return (c0, h0, w0) if image_size is None else (c0, image_size, image_size)


def load_image_folder(path: PathLike, image_size: Optional[int] = None, n: Optional[int] = None) -> FolderImages:
    """Read a folder of PNG / JPEG images, with labels from class subfolders (see the module notes).

    Args:
        path: the folder.
        image_size: if given, centre-crop each image to a square and resize it to ``S x S`` (Lanczos).
        n: decode only the first ``n`` images (in label, then path order); default: all.

    Returns:
        :class:`FolderImages` with ``images`` uint8 ``[N, C, H, W]``.

    Raises:
        DataError: a missing or empty folder, a corrupt or truncated file, an unsupported format or mode,
            transparency, mixed modes, mixed sizes without ``image_size``, or ``n`` above the number of images;
            every message names the file(s).
        ResourceLimitError: the images would not fit in memory (refused before decoding).
        OptionError: ``image_size`` or ``n`` is not a positive integer.
    """
    image_size = positive_int(image_size, "image_size", allow_none=True)
    n = positive_int(n, "n", allow_none=True)
    path = os.fspath(path)
    files, labels, names = list_image_folder(path)
    probes = [_probe(f) for f in files]
    c, h, w = _check_uniform(files, probes, image_size)
    if n is not None:
        if n > len(files):
            raise DataError(f"{path}: asked for n={n} images but the folder holds {len(files)}")
        files, labels = files[:n], None if labels is None else labels[:n]
    check_memory(len(files) * c * h * w * 5, f"{path}: {len(files)} images of {c}x{h}x{w} as uint8 and float32")
    out = np.empty((len(files), c, h, w), dtype=np.uint8)
    for i, f in enumerate(files):
        a = _decode(f, image_size)
        if a.shape[:2] != (h, w):
            raise DataError(f"{f}: decoded to {a.shape[1]}x{a.shape[0]} pixels, not the {w}x{h} its header gives; replace it")
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return FolderImages(torch.from_numpy(out), y, names, tuple(files))


__all__ = ["load_image_folder", "list_image_folder", "FolderImages", "IMAGE_EXTENSIONS"]
