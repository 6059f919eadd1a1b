"""Sample-quality figures for low-dimensional data."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..errors import ShapeError


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: Optional[torch.Generator] = None
) -> float:
    """Sliced 2-Wasserstein distance between two point clouds.

    ``SW_2(x, y) = ( E_theta W_2^2(theta^T x, theta^T y) )^(1/2)`` with ``theta`` uniform on the unit
    sphere, estimated with ``n_projections`` random directions; each one-dimensional ``W_2`` is the
    root mean squared difference of the sorted projections. Clouds of different sizes are cut to
    the smaller size (their first points).

    Args:
        x: ``[N, *event]`` points; y: ``[M, *event]`` points of the same event shape.
        n_projections: number of random directions.
        generator: source of the directions.

    Returns:
        The distance (a float, in the units of the data).
    """
    if x.shape[1:] != y.shape[1:]:
        raise ShapeError(f"point clouds must share an event shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    n = min(x.shape[0], y.shape[0])
    x = x[:n].reshape(n, -1).double().cpu()
    y = y[:n].reshape(n, -1).double().cpu()
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # uniform directions on the sphere
    px, _ = torch.sort(x @ theta, dim=0)  # [n, P]
    py, _ = torch.sort(y @ theta, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mean_and_stderr(v: Tensor) -> Tuple[float, float]:
    """Mean of ``v`` ``[N]`` and its standard error ``std / sqrt(N)`` (NaN for ``N = 1``)."""
    v = v.detach().double().reshape(-1)
    if v.numel() < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(v.std(unbiased=True)) / math.sqrt(v.numel())
