"""Time embeddings: map diffusion times ``t`` ``[B]`` to feature vectors ``[B, embed_dim]``.

Two standard choices:

* :class:`GaussianFourierEmbedding` (NCSN++, Song et al. 2021): ``[sin(2 pi W t), cos(2 pi W t)]`` with
  fixed random frequencies ``W ~ N(0, scale^2)``. Suits continuous times in ``[0, 1]``.
* :class:`SinusoidalEmbedding` (the "positional" embedding of the Transformer, used by DDPM):
  geometric frequencies ``1 / max_period^(k / half)`` applied to ``time_scale * t`` (by default
  ``1000 t``, i.e. the DDPM step index when ``t`` runs over ``[0, 1]``).

Both are deterministic: the Fourier frequencies come from a private generator seeded by ``seed``
(and are saved as a buffer), so the same constructor arguments always give the same embedding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import class_count, finite_float, integer, positive_int, seed_int
from ..errors import LabelError, OptionError, ShapeError


def _check_embed_dim(embed_dim: int) -> int:
    embed_dim = integer(embed_dim, "embed_dim", minimum=2, need="an even integer >= 2 (half sines, half cosines)")
    if embed_dim % 2:
        raise OptionError(f"embed_dim must be an even integer >= 2 (half sines, half cosines), got {embed_dim}")
    return embed_dim


def _check_t(t: Tensor) -> Tensor:
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ShapeError(f"t must have shape [B], got {tuple(t.shape)}")
    return t


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of the time: ``[sin(2 pi W t), cos(2 pi W t)]``.

    Args:
        embed_dim: output size (even); ``embed_dim // 2`` frequencies.
        scale: standard deviation of the frequencies ``W ~ N(0, scale^2)``. Larger values resolve
            finer time detail; 16 suits ``t`` in ``[0, 1]``.
        seed: seed of the private generator that draws ``W`` (the global RNG is untouched).

    Shapes: ``t`` ``[B]`` -> ``[B, embed_dim]``. The frequencies are a fixed (non-trainable) buffer.
    """

    def __init__(self, embed_dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        self.embed_dim = _check_embed_dim(embed_dim)
        self.scale = finite_float(scale, "scale", positive=True)
        gen = torch.Generator().manual_seed(seed_int(seed, "seed"))
        self.register_buffer("W", torch.randn(self.embed_dim // 2, generator=gen) * self.scale)

    def forward(self, t: Tensor) -> Tensor:
        """Embed times ``t`` ``[B]`` as ``[B, embed_dim]`` (first half sines, second half cosines)."""
        t = _check_t(t)
        phase = 2 * math.pi * t[:, None].to(self.W.dtype) * self.W[None, :]  # [B, embed_dim / 2]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, scale={self.scale}"


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal ("positional") embedding of ``time_scale * t`` with geometric frequencies.

    Frequencies are ``omega_k = max_period^(-k / half)`` for ``k = 0..half-1`` (``half = embed_dim // 2``),
    and the output is ``[sin(omega s), cos(omega s)]`` with ``s = time_scale * t``.

    Args:
        embed_dim: output size (even).
        time_scale: factor applied to ``t`` first; 1000 maps ``t in [0, 1]`` to the DDPM step range.
        max_period: the slowest period.

    Shapes: ``t`` ``[B]`` -> ``[B, embed_dim]``.
    """

    def __init__(self, embed_dim: int, time_scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        self.embed_dim = _check_embed_dim(embed_dim)
        self.time_scale = finite_float(time_scale, "time_scale", positive=True)
        self.max_period = finite_float(max_period, "max_period")
        if not self.max_period > 1:
            raise OptionError(f"max_period must be > 1, got {max_period!r}")
        half = self.embed_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs)

    def forward(self, t: Tensor) -> Tensor:
        """Embed times ``t`` ``[B]`` as ``[B, embed_dim]`` (first half sines, second half cosines)."""
        t = _check_t(t)
        phase = self.time_scale * t[:, None].to(self.freqs.dtype) * self.freqs[None, :]  # [B, embed_dim / 2]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, time_scale={self.time_scale}, max_period={self.max_period}"


class LabelEmbedding(nn.Module):
    """Learned class-label embedding with an extra *null* label for the unconditional model.

    ``K`` class vectors plus one null vector (index ``K``): ``y = None`` and entries equal to ``-1``
    (:data:`scoresde.guidance.NULL_LABEL`) select the null vector, so one network gives both the
    conditional and the unconditional score (classifier-free guidance).

    Args:
        num_classes: ``K >= 1``.
        embed_dim: size of each vector.

    Shapes: ``y`` ``[B]`` (integers in ``[-1, K)``) or ``None`` with ``batch=B`` -> ``[B, embed_dim]``.
    """

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.num_classes = class_count(num_classes, "num_classes")
        self.table = nn.Embedding(self.num_classes + 1, positive_int(embed_dim, "embed_dim"))
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, y, batch: int, device: torch.device) -> torch.Tensor:
        """Embed labels ``y`` ``[B]`` (or ``None``: the null label for all ``batch`` samples)."""
        K = self.num_classes
        if y is None:
            return self.table.weight[K].expand(batch, -1)
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool:
            raise LabelError(f"y must be an integer tensor [B] of class labels, got {getattr(y, 'dtype', type(y).__name__)}")
        if y.shape != (batch,):
            raise LabelError(f"y must have shape [B] = [{batch}] (one label per sample), got {tuple(y.shape)}")
        # range check on the CPU only: on an accelerator it would synchronise every call (labels are checked
        # where they enter instead: scoresde.guidance binds them, the trainer checks the data set)
        if y.device.type == "cpu" and y.numel() and (bool((y < -1).any()) or bool((y >= K).any())):
            raise LabelError(f"y must hold class labels in [0, {K}) (or -1 for none), got values in [{int(y.min())}, {int(y.max())}]")
        idx = torch.where(y < 0, torch.full_like(y, K), y).to(device=device, dtype=torch.long)
        return self.table(idx)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes} (+1 null)"


#: Name -> time-embedding class, as selected by ``UNet(embed=...)``.
EMBEDDINGS = {"fourier": GaussianFourierEmbedding, "positional": SinusoidalEmbedding}
