"""A DDPM++-style U-Net for small images (MNIST-size and below).

The layout follows the DDPM / DDPM++ architecture (Ho et al. 2020; Song et al. 2021):

* a time embedding (Gaussian-Fourier or sinusoidal) passed through a two-layer MLP to ``4 * channels``;
* an encoder of ``len(channel_mults)`` levels, each with ``num_res_blocks`` residual blocks at
  ``channels * mult`` channels (plus self-attention at the resolutions in ``attn_resolutions``) and a
  stride-2 convolution between levels;
* a middle of residual block, attention, residual block;
* a decoder mirroring the encoder with ``num_res_blocks + 1`` blocks per level, each taking one skip
  connection from the encoder by concatenation, and nearest-neighbour upsampling plus a convolution;
* GroupNorm, SiLU and a final 3x3 convolution back to ``in_channels``.

Residual blocks are ``GroupNorm -> SiLU -> conv -> + Dense(temb) -> GroupNorm -> SiLU -> dropout -> conv``
with output ``(skip(x) + h) / sqrt(2)``. The last convolution of each residual block, the output
projection of each attention block and the final convolution start at zero, so the initial
network is a product of (rescaled) skips whose output is exactly zero.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import append_dims, as_time, check_batch
from .._validation import choice, class_count, finite_float, integer, positive_int
from ..errors import LabelError, OptionError, ShapeError
from .embedding import EMBEDDINGS, LabelEmbedding

_SKIP_SCALE = 1.0 / math.sqrt(2.0)


def _default_init(module: nn.Module, zero: bool = False) -> nn.Module:
    """Xavier-uniform weights (``fan_avg``, as in DDPM) or zeros; zero biases."""
    if zero:
        nn.init.zeros_(module.weight)
    else:
        nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def _conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, zero: bool = False) -> nn.Conv2d:
    return _default_init(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2), zero)


class ResBlock(nn.Module):
    """Residual block with time conditioning: ``[B, in_ch, H, W]``, temb ``[B, temb_dim]`` -> ``[B, out_ch, H, W]``."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_ch)
        self.conv1 = _conv(in_ch, out_ch)
        self.temb_proj = _default_init(nn.Linear(temb_dim, out_ch))
        self.norm2 = nn.GroupNorm(num_groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv(out_ch, out_ch, zero=True)
        self.skip = _conv(in_ch, out_ch, kernel=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + append_dims(self.temb_proj(F.silu(temb)), h.ndim)  # inject the time embedding per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * _SKIP_SCALE


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, ch: int, num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, ch)
        self.qkv = _conv(ch, 3 * ch, kernel=1)
        self.proj = _conv(ch, ch, kernel=1, zero=True)

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)  # each [B, HW, C]
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, [B, HW, C]
        h = h.transpose(1, 2).reshape(B, C, H, W)
        return (x + self.proj(h)) * _SKIP_SCALE


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: ``[B, C, H, W] -> [B, C, H/2, W/2]``."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = _conv(ch, ch, stride=2)

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling and a 3x3 convolution: ``[B, C, H, W] -> [B, C, 2H, 2W]``."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = _conv(ch, ch)

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """DDPM++-style U-Net ``net(x, t)`` for square images.

    Args:
        in_channels: image channels ``C`` (1 for MNIST).
        image_size: height = width ``S`` of the images; must be divisible by ``2^(len(channel_mults) - 1)``.
        channels: base width; level ``i`` has ``channels * channel_mults[i]`` channels.
        channel_mults: width multipliers, one per resolution level (``S, S/2, S/4, ...``).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attn_resolutions: resolutions (side lengths) at which self-attention follows each residual
            block; each must occur among the levels. ``None`` means the lowest resolution only
            (``(7,)`` for 28x28 images with three levels).
        dropout: dropout rate inside the residual blocks.
        embed: time embedding, ``"fourier"`` (Gaussian-Fourier, scale ``fourier_scale``) or
            ``"positional"`` (sinusoidal of ``1000 t``).
        num_groups: GroupNorm groups; every width ``channels * mult`` must be divisible by it.
        fourier_scale: frequency scale of the Fourier embedding.
        num_classes: ``K`` for a class-conditional network ``net(x, t, y)``: a learned label
            embedding (with a null label for ``y=None`` or ``-1``) is added to the time embedding.

    Shapes: ``x`` ``[B, C, S, S]``, ``t`` ``[B]`` and ``y`` ``[B]`` or ``None`` -> ``[B, C, S, S]``.

    Examples: MNIST (28 -> 14 -> 7) with the defaults; a CPU-sized model with ``channels=16``,
    ``num_res_blocks=1``; 8x8 images with ``image_size=8`` (levels 8 -> 4 -> 2).

    ``self.config`` holds the constructor arguments (tuples as lists), so ``UNet(**net.config)``
    (or :func:`scoresde.nets.build_network`) rebuilds the same architecture.
    """

    kind = "unet"

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attn_resolutions: Optional[Sequence[int]] = None,
        dropout: float = 0.1,
        embed: str = "fourier",
        num_groups: int = 8,
        fourier_scale: float = 16.0,
        num_classes: Optional[int] = None,
    ):
        super().__init__()
        in_channels, image_size = positive_int(in_channels, "in_channels"), positive_int(image_size, "image_size")
        channels = positive_int(channels, "channels")
        if isinstance(channel_mults, (str, bytes)) or not isinstance(channel_mults, Sequence):
            raise OptionError(f"channel_mults must be a sequence of positive ints, got {channel_mults!r}")
        channel_mults = [positive_int(m, "channel_mults entry") for m in channel_mults]
        num_res_blocks = integer(num_res_blocks, "num_res_blocks", minimum=1, maximum=100)
        num_groups = positive_int(num_groups, "num_groups")
        dropout = finite_float(dropout, "dropout")
        fourier_scale = finite_float(fourier_scale, "fourier_scale", positive=True)
        if attn_resolutions is not None:
            if isinstance(attn_resolutions, (str, bytes)) or not isinstance(attn_resolutions, Sequence):
                raise OptionError(f"attn_resolutions must be a sequence of ints, got {attn_resolutions!r}")
            attn_resolutions = [positive_int(r, "attn_resolutions entry") for r in attn_resolutions]
        if in_channels < 1 or image_size < 1 or channels < 1 or num_res_blocks < 1 or num_groups < 1:
            raise OptionError(
                "in_channels, image_size, channels, num_res_blocks and num_groups must be positive, got "
                f"{in_channels}, {image_size}, {channels}, {num_res_blocks}, {num_groups}"
            )
        if not channel_mults or any(m < 1 for m in channel_mults):
            raise OptionError(f"channel_mults must be a non-empty sequence of positive ints, got {channel_mults}")
        if not 0.0 <= float(dropout) < 1.0:
            raise OptionError(f"dropout must lie in [0, 1), got {dropout}")
        choice(embed, "embed", list(EMBEDDINGS))
        n_down = len(channel_mults) - 1
        if image_size % (2**n_down):
            raise ShapeError(
                f"image_size={image_size} must be divisible by 2^(len(channel_mults) - 1) = {2**n_down} "
                f"to halve it {n_down} times (channel_mults={tuple(channel_mults)}); use fewer levels or pad the images"
            )
        resolutions = [image_size // 2**i for i in range(len(channel_mults))]
        if attn_resolutions is None:
            attn_resolutions = [resolutions[-1]]
        attn_resolutions = sorted({int(r) for r in attn_resolutions}, reverse=True)
        unknown = [r for r in attn_resolutions if r not in resolutions]
        if unknown:
            raise OptionError(f"attn_resolutions {unknown} do not occur; the resolutions of this U-Net are {resolutions}")
        bad = [channels * m for m in channel_mults if (channels * m) % num_groups]
        if bad:
            raise OptionError(f"GroupNorm needs every width channels*mult divisible by num_groups={num_groups}; got widths {bad}")

        self.config: Dict[str, Any] = dict(
            in_channels=in_channels, image_size=image_size, channels=channels, channel_mults=list(channel_mults),
            num_res_blocks=num_res_blocks, attn_resolutions=list(attn_resolutions), dropout=float(dropout),
            embed=embed, num_groups=num_groups, fourier_scale=float(fourier_scale),
        )
        self.in_channels, self.image_size = in_channels, image_size
        self.num_classes = class_count(num_classes, "num_classes", allow_none=True)
        if self.num_classes is not None:
            self.config["num_classes"] = self.num_classes

        # time embedding: t -> [B, channels] -> MLP -> [B, 4 * channels]
        temb_dim = 4 * channels
        embedding = EMBEDDINGS[embed](channels, float(fourier_scale)) if embed == "fourier" else EMBEDDINGS[embed](channels)
        self.time_embed = nn.Sequential(
            embedding, _default_init(nn.Linear(channels, temb_dim)), nn.SiLU(), _default_init(nn.Linear(temb_dim, temb_dim))
        )

        if self.num_classes is not None:
            self.label_embed = LabelEmbedding(self.num_classes, temb_dim)

        # encoder: record the width of every activation pushed on the skip stack
        self.conv_in = _conv(in_channels, channels)
        self.down = nn.ModuleList()
        skip_widths: List[int] = [channels]
        ch = channels
        for level, mult in enumerate(channel_mults):
            out_ch = channels * mult
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, out_ch, temb_dim, dropout, num_groups)]
                if resolutions[level] in attn_resolutions:
                    blocks.append(AttnBlock(out_ch, num_groups))
                self.down.append(nn.ModuleList(blocks))
                ch = out_ch
                skip_widths.append(ch)
            if level < n_down:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_widths.append(ch)

        # middle at the lowest resolution
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, temb_dim, dropout, num_groups), AttnBlock(ch, num_groups), ResBlock(ch, ch, temb_dim, dropout, num_groups)]
        )

        # decoder: each residual block consumes one skip activation by concatenation
        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mults))):
            out_ch = channels * channel_mults[level]
            for _ in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skip_widths.pop(), out_ch, temb_dim, dropout, num_groups)]
                if resolutions[level] in attn_resolutions:
                    blocks.append(AttnBlock(out_ch, num_groups))
                self.up.append(nn.ModuleList(blocks))
                ch = out_ch
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
        assert not skip_widths  # every skip is consumed (internal invariant)

        self.norm_out = nn.GroupNorm(num_groups, ch)
        self.conv_out = _conv(ch, in_channels, zero=True)

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Evaluate the network: ``x`` ``[B, C, S, S]``, ``t`` ``[B]``, ``y`` ``[B]`` or ``None`` -> ``[B, C, S, S]``."""
        check_batch(x, "x")
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ShapeError(f"UNet built for images {expected} got x of shape {tuple(x.shape)}")
        t = as_time(t, x, check_range=False)
        temb = self.time_embed(t)  # [B, 4 * channels]
        if self.num_classes is not None:
            temb = temb + self.label_embed(y, x.shape[0], x.device).to(temb.dtype)
        elif y is not None:
            raise LabelError("y was given to a network without classes; build it with num_classes=K")

        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, temb)
            hs.append(h)
        for block in self.mid:
            h = block(h, temb)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for block in blocks:
                h = block(h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))
