"""PNG figures: sample scatters for 2-D data, image grids, and the demo's overview figure.

Uses matplotlib's object-oriented API with the Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError

PathLike = Union[str, Path]


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise ConfigError("writing PNG figures needs matplotlib (pip install matplotlib)") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


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
) -> Path:
    """Save samples as a PNG: a scatter for vectors (first two coordinates), a grid for images.

    Args:
        samples: ``[N, D]`` vectors or ``[N, C, H, W]`` images.
        path: the ``.png`` file to write.
        title: figure title.
        reference: for vectors, training data ``[M, D]`` drawn underneath in grey.
        data_range: the model-space range of image pixels (mapped to black..white).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        grid = image_grid(samples, data_range=data_range)
        fig = _new_figure(6, 6)
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    elif samples.ndim == 2:
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
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


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
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
