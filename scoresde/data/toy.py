"""Two-dimensional toy distributions for quick experiments.

Every set is centred and scaled isotropically, with constants worked out in closed form, so that
its mean is 0 and its covariance has trace 2 (unit variance per coordinate on average; exactly unit
per coordinate for ``checkerboard``, ``rings`` and ``gmm``). The scaling is isotropic so shapes
are not distorted. ``gmm`` is a mixture with a known density (:func:`toy_gmm`), for exact checks.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from .._utils import check_memory
from .._validation import positive_int
from ..errors import DataError
from ..exact import GaussianMixture
from ..noise import randn

#: Names accepted by :func:`toy_data`.
TOY_DATASETS = ("moons", "swiss_roll", "checkerboard", "rings", "gmm")

_F64 = torch.float64


def _rand(n: int, generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(n, generator=generator, dtype=_F64)


def _normal(shape, generator: Optional[torch.Generator]) -> Tensor:
    return randn(shape, generator=generator, dtype=_F64)


def _moons(n: int, generator: Optional[torch.Generator], noise: float = 0.1) -> Tuple[Tensor, Optional[Tensor]]:
    """Two interleaved half circles: outer ``(cos a, sin a)``, inner ``(1 - cos a, 1/2 - sin a)``, ``a ~ U[0, pi]``.

    Moments of the noiseless mixture (equal halves): mean ``(1/2, 1/4)``, ``Var x = 3/4``,
    ``Var y = 9/16 - 1/pi``; the noise adds ``noise^2`` per coordinate.
    """
    inner = _rand(n, generator) < 0.5
    a = math.pi * _rand(n, generator)
    x = torch.where(inner, 1 - torch.cos(a), torch.cos(a))
    y = torch.where(inner, 0.5 - torch.sin(a), torch.sin(a))
    pts = torch.stack([x, y], dim=1) + noise * _normal((n, 2), generator)
    total_var = 0.75 + (9 / 16 - 1 / math.pi) + 2 * noise**2
    return (pts - torch.tensor([0.5, 0.25], dtype=_F64)) / math.sqrt(total_var / 2), inner.long()


def _swiss_roll(n: int, generator: Optional[torch.Generator], noise: float = 0.5) -> Tuple[Tensor, Optional[Tensor]]:
    """Spiral ``(s cos s, s sin s)`` with ``s ~ U[3 pi / 2, 9 pi / 2]`` plus Gaussian noise.

    Moments: ``E[s cos s] = 2``, ``E[s sin s] = 2 / (3 pi)`` (integrate by parts over the interval of
    length ``3 pi``), ``E[s^2] = (b^3 - a^3) / (3 (b - a)) = 39 pi^2 / 4``.
    """
    a, b = 1.5 * math.pi, 4.5 * math.pi
    s = a + (b - a) * _rand(n, generator)
    pts = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) + noise * _normal((n, 2), generator)
    mean = torch.tensor([2.0, 2 / (3 * math.pi)], dtype=_F64)
    total_var = 39 * math.pi**2 / 4 + 2 * noise**2 - float((mean**2).sum())
    return (pts - mean) / math.sqrt(total_var / 2), None


def _checkerboard(n: int, generator: Optional[torch.Generator]) -> Tuple[Tensor, Optional[Tensor]]:
    """Uniform on the 8 cells ``(i, j)``, ``i + j`` even, of a 4x4 board on ``[-2, 2]^2``.

    Each row and column holds two cells, so both marginals are ``U[-2, 2]`` (mean 0, variance
    ``4/3``); the factor ``sqrt(3)/2`` makes the variances 1.
    """
    cell = torch.randint(0, 8, (n,), generator=generator)
    row = cell // 2
    col = 2 * (cell % 2) + row % 2  # row + col even
    u = _rand(2 * n, generator).reshape(n, 2)
    pts = torch.stack([col.to(_F64), row.to(_F64)], dim=1) - 2.0 + u
    return pts * (math.sqrt(3) / 2), cell


def _rings(n: int, generator: Optional[torch.Generator], noise: float = 0.08) -> Tuple[Tensor, Optional[Tensor]]:
    """Four concentric circles of radii 1, 2, 3, 4 (equal weights) with radial Gaussian noise.

    ``E ||x||^2 = E[r^2] + noise^2 = 15/2 + noise^2`` and the mean is 0 by symmetry.
    """
    ring = torch.randint(1, 5, (n,), generator=generator)
    r = ring.to(_F64) + noise * _normal((n,), generator)
    phi = 2 * math.pi * _rand(n, generator)
    pts = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    return pts / math.sqrt((7.5 + noise**2) / 2), ring - 1


#: Standard deviation of each component of :func:`toy_gmm`.
GMM_COMPONENT_STD = 0.1


def toy_gmm(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """The ``"gmm"`` toy distribution: 8 equal-weight isotropic Gaussians on a circle.

    Component ``k`` has mean ``R (cos(2 pi k / 8), sin(2 pi k / 8))`` and standard deviation
    ``sigma = 0.1`` with ``R = sqrt(2 (1 - sigma^2))``, so each coordinate has mean 0 and variance
    ``R^2 / 2 + sigma^2 = 1``.

    Returns:
        A :class:`scoresde.exact.GaussianMixture` on ``[*, 2]`` with exact (diffused) scores and densities.
    """
    sigma = GMM_COMPONENT_STD
    radius = math.sqrt(2 * (1 - sigma**2))
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=dtype), means.to(dtype), sigma)


def _gmm(n: int, generator: Optional[torch.Generator]) -> Tuple[Tensor, Optional[Tensor]]:
    return toy_gmm(torch.float64).sample(n, generator=generator, return_labels=True)


#: Number of classes of each labelled toy set (its mixture components): moons' two halves (outer 0,
#: inner 1), the checkerboard's 8 cells, the 4 rings (innermost 0), the 8 Gaussians of ``gmm``.
TOY_NUM_CLASSES = {"moons": 2, "checkerboard": 8, "rings": 4, "gmm": 8}

_SAMPLERS: Dict[str, Callable[[int, Optional[torch.Generator]], Tuple[Tensor, Optional[Tensor]]]] = {
    "moons": _moons, "swiss_roll": _swiss_roll, "checkerboard": _checkerboard, "rings": _rings, "gmm": _gmm,
}


def toy_data(name: str, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw ``n`` points of a 2-D toy distribution.

    Args:
        name: one of :data:`TOY_DATASETS`: ``"moons"``, ``"swiss_roll"``, ``"checkerboard"``,
            ``"rings"``, ``"gmm"``.
        n: number of points (``>= 1``).
        generator: a CPU ``torch.Generator``; the same seed gives the same points.

    Returns:
        ``[n, 2]`` float32 tensor on the CPU, centred, with average per-coordinate variance 1.

    Raises:
        DataError: unknown ``name``.
        ValueError: ``n < 1``.
    """
    return toy_data_with_labels(name, n, generator)[0]


def toy_data_with_labels(name: str, n: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Draw ``n`` points of a 2-D toy set and the mixture component each came from.

    The points are exactly those of :func:`toy_data` with the same generator state. Labels are
    int64 ``[n]`` in ``[0, TOY_NUM_CLASSES[name])``; ``swiss_roll`` has no components (``None``).

    Returns:
        ``(x [n, 2] float32, labels [n] or None)``.
    """
    if name not in _SAMPLERS:
        raise DataError(f"unknown toy dataset {name!r}; valid names: {', '.join(TOY_DATASETS)}")
    n = positive_int(n, "n")
    check_memory(n * 2 * 8 * 4, f"{n} points of the {name!r} toy set", "Ask for fewer points (--n-train)")
    x, labels = _SAMPLERS[name](n, generator)
    return x.to(torch.float32), labels
