"""PNG figures: sample scatters for 2-D data, image grids, the demo's overview figure, and one file per image.

Uses matplotlib's object-oriented API with the Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write
from .errors import ConfigError, ShapeError

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw_image_grid", "image_grid", "image_grid_figure", "save_demo_figure", "save_images", "save_samples_figure",
           "save_figure", "save_inpainting_figure"]

PathLike = Union[str, Path]

#: Inches per image pixel in a grid figure (a 28x28 digit is about 0.5 inch wide).
_GRID_INCH_PER_PIXEL = 0.018
#: The largest width or height (inches) of a grid figure; bigger grids get smaller pixels.
_GRID_MAX_INCHES = 16.0
#: Font sizes (points) of a grid figure's title and of its row and column labels.
_TITLE_SIZE = 11
_LABEL_SIZE = 9



def save_figure(fig: "Figure", path: Union[str, Path]) -> Path:
    """Write a matplotlib figure to ``path`` atomically (the format from the suffix, PNG by default); returns it."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt), what="figure")

def _new_figure(width: float, height: float, layout: Optional[str] = None):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ConfigError("writing PNG figures needs matplotlib (pip install matplotlib)") from None
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (each given line kept)."""
    chars = max(12, int(width_in * 72 / (0.6 * fontsize)))  # a generous average glyph width of 0.6 em
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) if line else "" for line in text.split("\n"))


def image_grid(x: Tensor, nrow: Optional[int] = None, data_range: Tuple[float, float] = (-1.0, 1.0), pad: int = 2) -> np.ndarray:
    """Tile images ``[N, C, H, W]`` into one array ``[rows (H + pad), cols (W + pad)(, C)]`` in ``[0, 1]``."""
    x = x.detach().float().cpu()
    lo, hi = data_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / nrow))
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[..., 0] if c == 1 else arr


def _columns(nrow: Optional[int], column_labels: Optional[Sequence[object]], n: int) -> int:
    """Images per row: ``nrow``, else one column per label, else about ``sqrt(n)``."""
    if nrow:
        return int(nrow)
    if column_labels is not None and len(column_labels) > 0:
        return len(column_labels)
    return int(math.ceil(math.sqrt(n)))


def _label_text(v: object) -> str:
    return str(v.item()) if hasattr(v, "item") else str(v)  # tensor and array elements as plain numbers


def _check_labels(labels: Optional[Sequence[object]], count: int, what: str) -> Optional[List[str]]:
    if labels is None or len(labels) == 0:
        return None
    labels = [_label_text(v) for v in labels]
    if len(labels) > count:
        raise ConfigError(f"{len(labels)} {what} labels for a grid of {count} {what}s")
    return labels


def draw_image_grid(
    ax: Axes,
    x: Tensor,
    nrow: Optional[int] = None,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    *,
    pad: int = 2,
    column_labels: Optional[Sequence[object]] = None,
    row_labels: Optional[Sequence[object]] = None,
    title: Optional[str] = None,
    fontsize: float = _LABEL_SIZE,
) -> None:
    """Draw images ``[N, C, H, W]`` as one grid on the matplotlib axes ``ax``, optionally labelled.

    Args:
        ax: the axes to draw on (its frame and ticks are removed).
        x: the images; ``C`` is 1 (grey) or 3 (RGB).
        nrow: images per row (default: ``len(column_labels)`` when given, else about ``sqrt(N)``).
        data_range: the model-space range of the pixels (mapped to black..white).
        pad: pixels between two images.
        column_labels: a label above each column, e.g. the class of the samples in it (sample ``i`` in
            column ``i mod nrow``); at most ``nrow`` of them.
        row_labels: a label left of each row.
        title: the axes' title.
        fontsize: points of the labels.
    """
    if x.ndim != 4:
        raise ShapeError(f"an image grid needs images [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    nrow = _columns(nrow, column_labels, n)
    rows = int(math.ceil(n / nrow))
    cols = _check_labels(column_labels, nrow, "column")
    rlabels = _check_labels(row_labels, rows, "row")
    grid = image_grid(x, nrow=nrow, data_range=data_range, pad=pad)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    centre = lambda k, size: pad + k * (size + pad) + (size - 1) / 2  # noqa: E731  pixel centre of cell k
    ax.tick_params(length=0, labelsize=fontsize, top=False, bottom=False, left=False, right=False)
    if cols:
        ax.xaxis.tick_top()
        ax.set_xticks([centre(k, w) for k in range(len(cols))], cols)
    else:
        ax.set_xticks([])
    if rlabels:
        ax.set_yticks([centre(k, h) for k in range(len(rlabels))], rlabels)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize + 1)


def image_grid_figure(
    x: Tensor,
    nrow: Optional[int] = None,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    *,
    title: Optional[str] = None,
    column_labels: Optional[Sequence[object]] = None,
    row_labels: Optional[Sequence[object]] = None,
    inch_per_pixel: float = _GRID_INCH_PER_PIXEL,
) -> Figure:
    """A matplotlib figure of one image grid, sized to the grid, with its title wrapped to fit.

    Args:
        x: images ``[N, C, H, W]``.
        nrow: images per row (default: ``len(column_labels)`` when given, else about ``sqrt(N)``).
        data_range: the model-space range of the pixels (mapped to black..white).
        title: the figure's title, broken into lines as wide as the figure.
        column_labels: a label above each column (e.g. the class of the samples of ``sample --class all``,
            where sample ``i`` is of class ``i mod K``: pass ``K`` labels).
        row_labels: a label left of each row.
        inch_per_pixel: the size of one image pixel in the figure.

    Returns:
        A ``matplotlib.figure.Figure`` with the Agg canvas (``fig.savefig(path)`` writes it).
    """
    if x.ndim != 4:
        raise ShapeError(f"an image grid needs images [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    pad = 2
    ncol = _columns(nrow, column_labels, n)
    nrows = int(math.ceil(n / ncol))
    grid_px_w, grid_px_h = ncol * (w + pad) + pad, nrows * (h + pad) + pad
    inch = min(inch_per_pixel, _GRID_MAX_INCHES / grid_px_w, _GRID_MAX_INCHES / grid_px_h)  # big grids: smaller pixels
    side = 0.5 if row_labels is not None and len(row_labels) > 0 else 0.15  # inches beside the grid (row labels)
    width = max(4.0, grid_px_w * inch + 2 * side)  # at least 4 inches: room for a title
    title_text = _wrap(title, width - 0.3, _TITLE_SIZE) if title else None
    title_lines = title_text.count("\n") + 1 if title_text else 0
    # column labels: level when they fit over a column, else upright, else smaller (at least 4 points)
    fontsize, rotation, label_height = _LABEL_SIZE, 0.0, 0.0
    if column_labels is not None and len(column_labels) > 0:
        cell = (w + pad) * inch
        longest = max(len(_label_text(v)) for v in column_labels)
        if longest * 0.6 * fontsize / 72 > 0.95 * cell:
            rotation = 90.0
            fontsize = max(4.0, min(fontsize, 0.7 * cell * 72))
        label_height = (longest * 0.6 if rotation else 1.0) * fontsize / 72 + 0.15
    height = grid_px_h * inch + 0.2 + label_height + title_lines * _TITLE_SIZE * 1.4 / 72
    fig = _new_figure(width, height, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    draw_image_grid(ax, x, nrow=ncol, data_range=data_range, pad=pad, column_labels=column_labels,
                    row_labels=row_labels, fontsize=fontsize)
    if rotation:
        for label in ax.get_xticklabels():
            label.set_rotation(rotation)
    if title_text:
        fig.suptitle(title_text, fontsize=_TITLE_SIZE)
    return fig


def save_images(
    x: Tensor,
    folder: PathLike,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    prefix: str = "sample",
) -> List[Path]:
    """Write each image of ``x`` to its own PNG, ``folder/<prefix>_00000.png``, ``..._00001.png``, ...

    The files have the images' own resolution: grey (mode ``L``) for one channel, RGB for three.
    Pixels are mapped from ``data_range`` to 0..255 (values outside it are clipped, NaN is black) and rounded. Each
    file is written atomically (:func:`scoresde.checkpoint.atomic_write`), so an interrupted call
    leaves complete files only. The index has five digits, more when ``N`` needs them.

    Args:
        x: images ``[N, C, H, W]`` with ``C`` 1 or 3.
        folder: the folder to write into (created if needed).
        data_range: the model-space range of the pixels, ``(low, high)``.
        prefix: the start of every file name.

    Returns:
        The paths written, in the order of ``x``.

    Raises:
        ShapeError: ``x`` is not ``[N, C, H, W]`` with 1 or 3 channels.
        ConfigError: an empty ``data_range`` or a ``prefix`` that is not a plain file name.
        OutputError: a file cannot be written.
    """
    from PIL import Image

    from .checkpoint import atomic_write

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ShapeError(f"save_images needs images [N, C, H, W] with C = 1 (grey) or 3 (RGB), got shape {tuple(x.shape)}")
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ConfigError(f"data_range must be (low, high) with low < high, got {tuple(data_range)}")
    if not prefix or Path(prefix).name != prefix or prefix in (".", ".."):
        raise ConfigError(f"prefix must be a plain file name without a folder, got {prefix!r}")
    folder = Path(folder)
    pixels = ((x.detach().float().cpu() - lo) / (hi - lo)).nan_to_num(0.0).clamp(0, 1).mul(255).round().to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    digits = max(5, len(str(max(x.shape[0] - 1, 0))))
    written = []
    for i, arr in enumerate(arrays):
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        path = folder / f"{prefix}_{i:0{digits}d}.png"
        written.append(atomic_write(path, lambda f, image=image: image.save(f, format="PNG"), what="image"))
    return written


def _scatter(ax, x: Tensor, color: str, label: Optional[str] = None, lim: Optional[float] = None) -> None:
    x = x.detach().float().cpu().reshape(x.shape[0], -1)
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy() if x.shape[1] > 1 else np.zeros(x.shape[0]), s=2, alpha=0.5, c=color, label=label, linewidths=0)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def _limits(*xs: Tensor) -> float:
    q = max(float(torch.quantile(x.detach().float().abs().reshape(-1)[:200_000], 0.995)) for x in xs)
    return 1.15 * q if q > 0 else 1.0


def save_samples_figure(
    samples: Tensor,
    path: PathLike,
    title: Optional[str] = None,
    reference: Optional[Tensor] = None,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    *,
    nrow: Optional[int] = None,
    column_labels: Optional[Sequence[object]] = None,
) -> Path:
    """Save samples as a PNG: a scatter for vectors (first two coordinates), a grid for images.

    Args:
        samples: ``[N, D]`` vectors or ``[N, C, H, W]`` images.
        path: the ``.png`` file to write.
        title: figure title (wrapped to the figure's width).
        reference: for vectors, training data ``[M, D]`` drawn underneath in grey.
        data_range: the model-space range of image pixels (mapped to black..white).
        nrow: images per row of the grid (default: ``len(column_labels)`` when given, else about ``sqrt(N)``).
        column_labels: images only: a label above each column of the grid, e.g. the classes of class-conditional
            samples drawn in turn (sample ``i`` of class ``i mod K``: pass the ``K`` class names).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        fig = image_grid_figure(samples, nrow=nrow, data_range=data_range, title=title, column_labels=column_labels)
        return save_figure(fig, path)
    if samples.ndim == 2:
        if column_labels is not None:
            raise ConfigError("column_labels label the columns of an image grid; these samples are vectors")
        fig = _new_figure(5, 5)
        ax = fig.add_subplot(1, 1, 1)
        lim = _limits(samples, *(() if reference is None else (reference,)))
        if reference is not None:
            _scatter(ax, reference, "0.7", "data", lim)
        _scatter(ax, samples, "tab:blue", "samples", lim)
        if samples.shape[1] > 2:
            ax.set_xlabel("x[0]")
            ax.set_ylabel("x[1] (first two of %d coordinates)" % samples.shape[1])
        if reference is not None:
            ax.legend(loc="upper right", markerscale=4)
    else:
        raise ConfigError(f"cannot draw samples of shape {tuple(samples.shape)}: need [N, D] vectors or [N, C, H, W] images")
    if title:
        fig.suptitle(_wrap(title, 4.7, 12), fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def save_demo_figure(
    data: Tensor,
    samples: Dict[str, Tensor],
    trajectories: Dict[str, Tuple[Tensor, Tensor]],
    path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """The demo figure: data, samples per solver, and particle paths over time.

    Args:
        data: held-out data ``[N, 2]``.
        samples: solver name -> samples ``[M, 2]``.
        trajectories: label -> ``(times [S], states [S, P, 2])`` of ``P`` particles; each is drawn
            as the first coordinate against time, from ``t = T`` (left) to ``t = eps`` (right).
        path: the ``.png`` to write.
        title: figure title.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = 1 + len(samples) + len(trajectories)
    cols = 3
    rows = int(math.ceil(panels / cols))
    fig = _new_figure(4 * cols, 4 * rows)
    lim = _limits(data, *samples.values())
    ax = fig.add_subplot(rows, cols, 1)
    _scatter(ax, data, "0.3", lim=lim)
    ax.set_title(f"data ({data.shape[0]} test points)")
    for i, (name, x) in enumerate(samples.items()):
        ax = fig.add_subplot(rows, cols, 2 + i)
        _scatter(ax, data, "0.8", lim=lim)
        _scatter(ax, x, "tab:blue", lim=lim)
        ax.set_title(f"samples: {name}")
    for j, (name, (times, traj)) in enumerate(trajectories.items()):
        ax = fig.add_subplot(rows, cols, 2 + len(samples) + j)
        t = times.detach().double().cpu().numpy()
        tr = traj.detach().float().cpu().numpy()  # [S, P, 2]
        for p in range(tr.shape[1]):
            ax.plot(t, tr[:, p, 0], lw=0.8, alpha=0.85)
        ax.set_xlim(t[0], 0.0)  # generation runs from t = T on the left to t = 0 on the right
        ax.set_xlabel("t")
        ax.set_ylabel("x[0]")
        ax.set_title(f"{name}\nfirst coordinate of {tr.shape[1]} particles", fontsize=10)
    if title:
        fig.suptitle(_wrap(title, 4 * cols - 0.3, 12), fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def save_inpainting_figure(x: Tensor, mask: Tensor, result: Tensor, path: PathLike,
                           data_range: Tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Two rows of images: the given entries (unknown ones grey) and the inpainted result; a scatter for vectors.

    Args:
        x: the inputs ``[N, *event]``; mask: ``[N, *event]`` booleans, True where known; result: ``[N, *event]``.
        path: the figure file (PNG).
        data_range: ``(lo, hi)`` of the data (the grey of the unknown entries is their middle).
    """
    if x.ndim != 4:
        return save_samples_figure(result, path, title="inpainted samples", data_range=data_range)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mid = 0.5 * (data_range[0] + data_range[1])
    shown = torch.where(mask, x, torch.full_like(x, mid))
    n = x.shape[0]
    fig = Figure(figsize=(max(3.0, 1.0 * min(n, 16)), 2.4), dpi=100)
    FigureCanvasAgg(fig)
    for row, (imgs, title) in enumerate(((shown, "given (grey: unknown)"), (result, "inpainted"))):
        ax = fig.add_subplot(2, 1, row + 1)
        grid = image_grid(imgs, nrow=min(n, 16), data_range=data_range)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)
