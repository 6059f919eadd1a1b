"""A time-conditioned residual MLP for low-dimensional data (toy 2-D sets, small vectors)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import as_time, check_batch
from .._validation import class_count, finite_float, integer, positive_int
from ..errors import LabelError, ShapeError
from .embedding import GaussianFourierEmbedding, LabelEmbedding

#: The most residual layers an MLP may have (a deeper one is a typo, and building it would take minutes).
MAX_DEPTH = 1000


class _ResidualLayer(nn.Module):
    """``h + W2 silu(W1 silu(h) + A temb)``: one time-conditioned residual layer, ``[B, H] -> [B, H]``."""

    def __init__(self, hidden: int, temb_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.temb_proj = nn.Linear(temb_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        u = self.fc1(F.silu(h)) + self.temb_proj(temb)
        return h + self.fc2(F.silu(u))


class MLP(nn.Module):
    """Residual MLP ``net(x, t)`` with a Gaussian-Fourier time embedding and SiLU activations.

    Architecture: ``t -> GaussianFourierEmbedding(embed_dim, fourier_scale) -> Linear -> SiLU -> Linear``
    gives the time features; ``x`` (flattened) is lifted by a linear layer to ``hidden`` units,
    passes ``depth`` residual layers ``h <- h + W2 silu(W1 silu(h) + A temb)`` and is projected back
    by ``Linear(hidden, dim)`` after a final SiLU.

    Args:
        dim: number of elements of one sample (``D`` for vectors, ``prod(event)`` in general).
        hidden: width of the hidden layers.
        depth: number of time-conditioned residual layers.
        embed_dim: size of the Fourier time embedding (even).
        fourier_scale: standard deviation of the Fourier frequencies.
        num_classes: ``K`` for a class-conditional network ``net(x, t, y)``: a learned label
            embedding (with a null label for ``y=None`` or ``-1``) is added to the time features.

    Shapes: ``x`` ``[B, D]`` (or any ``[B, *event]`` with ``prod(event) == dim``, flattened and
    reshaped back) and ``t`` ``[B]`` -> shaped like ``x``.

    ``self.config`` holds the constructor arguments, so ``MLP(**net.config)`` (or
    :func:`scoresde.nets.build_network`) rebuilds the same architecture.
    """

    kind = "mlp"

    def __init__(
        self, dim: int, hidden: int = 256, depth: int = 3, embed_dim: int = 128, fourier_scale: float = 16.0,
        num_classes: Optional[int] = None,
    ):
        super().__init__()
        dim, hidden, embed_dim = positive_int(dim, "dim"), positive_int(hidden, "hidden"), positive_int(embed_dim, "embed_dim")
        depth = integer(depth, "depth", minimum=0, maximum=MAX_DEPTH)
        fourier_scale = finite_float(fourier_scale, "fourier_scale", positive=True)
        num_classes = class_count(num_classes, "num_classes", allow_none=True)
        self.config: Dict[str, Any] = dict(
            dim=dim, hidden=hidden, depth=depth, embed_dim=embed_dim, fourier_scale=fourier_scale
        )
        self.dim = int(dim)
        hidden = int(hidden)
        self.time_embed = nn.Sequential(
            GaussianFourierEmbedding(int(embed_dim), float(fourier_scale)),
            nn.Linear(int(embed_dim), hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
        )
        self.input = nn.Linear(self.dim, hidden)
        self.layers = nn.ModuleList([_ResidualLayer(hidden, hidden) for _ in range(int(depth))])
        self.output = nn.Linear(hidden, self.dim)
        self.num_classes = num_classes
        if self.num_classes is not None:
            self.config["num_classes"] = self.num_classes
            self.label_embed = LabelEmbedding(self.num_classes, hidden)

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Evaluate the network: ``x`` ``[B, *event]``, ``t`` ``[B]``, labels ``y`` ``[B]`` or ``None`` -> like ``x``."""
        check_batch(x, "x")
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.dim:
            raise ShapeError(f"MLP built for dim={self.dim} got x of shape {tuple(x.shape)} ({h.shape[1]} elements per sample)")
        t = as_time(t, x, check_range=False)
        temb = self.time_embed(t)  # [B, hidden]
        if self.num_classes is not None:
            temb = temb + self.label_embed(y, x.shape[0], x.device).to(temb.dtype)
        elif y is not None:
            raise LabelError("y was given to a network without classes; build it with num_classes=K")
        h = self.input(h)
        for layer in self.layers:
            h = layer(h, temb)
        return self.output(F.silu(h)).reshape(x.shape)
