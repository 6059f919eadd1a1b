"""The NCSN++ / DDPM++ score network of Song et al. 2021 ("Score-Based Generative Modeling through SDEs").

One U-Net family covers both published models:

* **DDPM++** (VP / sub-VP SDEs): BigGAN residual blocks with nearest/average resampling, sinusoidal
  (positional) embedding of ``999 t``, data centred in ``[-1, 1]``, output an ``eps``-like quantity;
* **NCSN++** (VE SDE): FIR resampling with the ``[1, 3, 3, 1]`` filter, an output pyramid
  (``progressive='output_skip'``) and an input pyramid (``progressive_input='input_skip'``),
  Gaussian Fourier features of ``log sigma``, output divided by ``sigma`` (``scale_by_sigma``).

The constructor takes the fields of score_sde's ``config.model`` as keyword arguments (plus the image
size, channel count and data centring of ``config.data``), and the module's ``state_dict()`` keys
are exactly those of the published checkpoints with the ``module.`` prefix removed: ``sigmas`` and
``all_modules.<i>.<name>``, the sub-modules numbered in the order of construction below.

Layout (``L = len(ch_mult)`` levels, ``nf ch_mult[i]`` channels at level ``i``):

1. time embedding (``conditional``): Fourier features (``2 nf``) or sinusoidal (``nf``), then
   ``Dense -> act -> Dense`` to ``4 nf``;
2. a 3x3 input convolution; per level ``num_res_blocks`` residual blocks (each followed by attention at
   the resolutions in ``attn_resolutions``) and, between levels, a downsampling block (a BigGAN block
   with ``down=True``, or :class:`~scoresde.nets.ncsnpp_layers.Downsample` for DDPM blocks) plus the
   input-pyramid merge;
3. middle: residual block, attention, residual block;
4. per level from the coarsest, ``num_res_blocks + 1`` residual blocks fed the concatenated skips,
   attention, the output-pyramid head, and an upsampling block;
5. a ``GroupNorm -> act -> 3x3 conv`` head (unless the output pyramid already is the output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import OptionError, ShapeError
from . import ncsnpp_layers as L

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
RESBLOCK_TYPES = ("ddpm", "biggan")
EMBEDDING_TYPES = ("fourier", "positional")


def sigma_table(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """score_sde's discrete noise levels: ``num_scales`` geometric steps from ``sigma_max`` down to
    ``sigma_min`` (float64, ``[num_scales]``)."""
    return torch.from_numpy(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)))


@dataclass
class _Level:
    """Indices into ``all_modules`` for one resolution level (plain ints, so replicas stay consistent)."""

    blocks: List[int] = field(default_factory=list)  # residual blocks
    attn: List[Optional[int]] = field(default_factory=list)  # attention after each block (encoder) / level (decoder)
    resample: Optional[int] = None  # down- (encoder) or upsampling (decoder) block
    pyramid: List[int] = field(default_factory=list)  # input-pyramid merge (encoder) or output-pyramid head (decoder)


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++: ``net(x, cond) -> [B, C, H, W]`` for ``x`` ``[B, C, H, W]``.

    ``cond`` ``[B]`` is what score_sde feeds the network: the noise level ``sigma`` for Fourier
    embeddings (VE, continuous), ``999 t`` for VP/sub-VP continuous training, or a discrete step
    index (float or integer) for discrete training. ``x`` is on the data's own scale: in ``[0, 1]``
    when ``centered`` is False (the network maps it to ``2 x - 1`` itself).

    Args:
        image_size: ``H = W`` of the input; levels have sizes ``image_size / 2^i``.
        num_channels: ``C``.
        centered: whether the data is already in ``[-1, 1]``.
        nf: base channel count.
        ch_mult: channel multiplier per level.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        attn_resolutions: feature-map sizes that get self-attention.
        dropout: dropout rate inside residual blocks.
        resamp_with_conv: whether :class:`Upsample`/:class:`Downsample` (DDPM blocks, residual pyramids) convolve.
        conditional: whether the network sees ``cond`` at all.
        fir, fir_kernel: FIR resampling and its 1-D filter.
        skip_rescale: divide residual sums by ``sqrt(2)``.
        resblock_type: ``"biggan"`` or ``"ddpm"``.
        progressive: output pyramid, ``"none"``, ``"output_skip"`` or ``"residual"``.
        progressive_input: input pyramid, ``"none"``, ``"input_skip"`` or ``"residual"``.
        progressive_combine: how ``input_skip`` merges, ``"sum"`` or ``"cat"``.
        embedding_type: ``"fourier"`` (of ``log cond``) or ``"positional"`` (of ``cond``).
        fourier_scale: standard deviation of the Fourier frequencies.
        init_scale: initial scale of the layers that close a residual branch (0: start at zero).
        scale_by_sigma: divide the output by the noise level (``cond`` itself for Fourier embeddings,
            else ``sigmas[cond]``).
        nonlinearity: ``"swish"``, ``"relu"``, ``"elu"`` or ``"lrelu"``.
        sigma_min, sigma_max, num_scales: the discrete noise levels stored in the ``sigmas`` buffer.
    """

    def __init__(self, image_size: int, num_channels: int = 3, centered: bool = True, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.1, resamp_with_conv: bool = True, conditional: bool = True, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, resblock_type: str = "biggan",
                 progressive: str = "none", progressive_input: str = "none", progressive_combine: str = "sum",
                 embedding_type: str = "positional", fourier_scale: float = 16.0, init_scale: float = 0.0,
                 scale_by_sigma: bool = False, nonlinearity: str = "swish", sigma_min: float = 0.01,
                 sigma_max: float = 50.0, num_scales: int = 1000):
        super().__init__()
        resblock_type, progressive = resblock_type.lower(), progressive.lower()
        progressive_input, embedding_type = progressive_input.lower(), embedding_type.lower()
        progressive_combine = progressive_combine.lower()
        for name, value, valid in (("resblock_type", resblock_type, RESBLOCK_TYPES), ("progressive", progressive, PROGRESSIVE),
                                   ("progressive_input", progressive_input, PROGRESSIVE_INPUT),
                                   ("embedding_type", embedding_type, EMBEDDING_TYPES),
                                   ("progressive_combine", progressive_combine, ("sum", "cat"))):
            if value not in valid:
                raise OptionError(f"{name} must be one of {valid}, got {value!r}")
        n_levels = len(ch_mult)
        if n_levels < 1 or image_size % (2 ** (n_levels - 1)):
            raise OptionError(f"image_size {image_size} must be divisible by 2^(len(ch_mult) - 1) = {2 ** (n_levels - 1)}")
        self.image_size, self.num_channels, self.centered, self.nf = int(image_size), int(num_channels), bool(centered), int(nf)
        self.conditional, self.embedding_type, self.scale_by_sigma = bool(conditional), embedding_type, bool(scale_by_sigma)
        self.resblock_type, self.progressive, self.progressive_input = resblock_type, progressive, progressive_input
        self.skip_rescale, self.fir_kernel, self.fir = bool(skip_rescale), tuple(fir_kernel), bool(fir)
        self.act = act = L.get_activation(nonlinearity)
        self.register_buffer("sigmas", sigma_table(sigma_min, sigma_max, num_scales))
        resolutions = [image_size // 2**i for i in range(n_levels)]
        self.all_modules = nn.ModuleList()

        def add(module: nn.Module) -> int:
            self.all_modules.append(module)
            return len(self.all_modules) - 1

        temb_dim = 4 * nf
        self._fourier = add(L.GaussianFourierProjection(nf, fourier_scale)) if embedding_type == "fourier" else None
        embed_dim = 2 * nf if embedding_type == "fourier" else nf
        self._temb = [add(L.dense(embed_dim, temb_dim)), add(L.dense(temb_dim, temb_dim))] if conditional else []

        def resblock(in_ch: int, out_ch: Optional[int] = None, up: bool = False, down: bool = False) -> nn.Module:
            if resblock_type == "ddpm":
                return L.ResBlockDDPM(act, in_ch, out_ch, temb_dim, dropout=dropout, skip_rescale=skip_rescale,
                                      init_scale=init_scale)
            return L.ResBlockBigGAN(act, in_ch, out_ch, temb_dim, up=up, down=down, dropout=dropout, fir=fir,
                                    fir_kernel=fir_kernel, skip_rescale=skip_rescale, init_scale=init_scale)

        def attention(ch: int) -> nn.Module:
            return L.AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        # ---- encoder
        if progressive_input == "input_skip":
            self.pyramid_downsample = L.Downsample(num_channels, fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if progressive == "output_skip":
            self.pyramid_upsample = L.Upsample(num_channels, fir=fir, fir_kernel=fir_kernel, with_conv=False)
        self._conv_in = add(L.conv3x3(num_channels, nf))
        skip_channels, ch, pyramid_ch = [nf], nf, num_channels
        self._down: List[_Level] = []
        for i in range(n_levels):
            level = _Level()
            for _ in range(num_res_blocks):
                level.blocks.append(add(resblock(ch, nf * ch_mult[i])))
                ch = nf * ch_mult[i]
                level.attn.append(add(attention(ch)) if resolutions[i] in attn_resolutions else None)
                skip_channels.append(ch)
            if i != n_levels - 1:
                if resblock_type == "ddpm":
                    level.resample = add(L.Downsample(ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    level.resample = add(resblock(ch, down=True))
                if progressive_input == "input_skip":
                    level.pyramid.append(add(L.Combine(pyramid_ch, ch, method=progressive_combine)))
                    ch = 2 * ch if progressive_combine == "cat" else ch
                elif progressive_input == "residual":
                    level.pyramid.append(add(L.Downsample(pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)))
                    pyramid_ch = ch
                skip_channels.append(ch)
            self._down.append(level)

        # ---- middle
        ch = skip_channels[-1]
        self._mid = [add(resblock(ch)), add(attention(ch)), add(resblock(ch))]

        # ---- decoder
        self._up: List[_Level] = []
        for i in reversed(range(n_levels)):
            level = _Level()
            for _ in range(num_res_blocks + 1):
                level.blocks.append(add(resblock(ch + skip_channels.pop(), nf * ch_mult[i])))
                ch = nf * ch_mult[i]
            level.attn.append(add(attention(ch)) if resolutions[i] in attn_resolutions else None)
            if progressive == "output_skip":
                level.pyramid += [add(L.group_norm(ch)), add(L.conv3x3(ch, num_channels, init_scale=init_scale))]
            elif progressive == "residual" and i == n_levels - 1:
                level.pyramid += [add(L.group_norm(ch)), add(L.conv3x3(ch, ch))]
                pyramid_ch = ch
            elif progressive == "residual":
                level.pyramid.append(add(L.Upsample(pyramid_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)))
                pyramid_ch = ch
            if i != 0:
                if resblock_type == "ddpm":
                    level.resample = add(L.Upsample(ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    level.resample = add(resblock(ch, up=True))
            self._up.append(level)
        assert not skip_channels, "unbalanced skip connections"  # a bug, not a user error

        # ---- output head
        self._head = [] if progressive == "output_skip" else [add(L.group_norm(ch)), add(L.conv3x3(ch, num_channels, init_scale=init_scale))]

    # ------------------------------------------------------------------ forward

    def _embed(self, cond: Tensor) -> "tuple[Optional[Tensor], Optional[Tensor]]":
        """``(temb [B, 4 nf] or None, sigma [B] used by scale_by_sigma or None)``."""
        m = self.all_modules
        if self.embedding_type == "fourier":
            sigma = cond
            temb = m[self._fourier](torch.log(cond))
        else:
            sigma = self.sigmas[cond.long()] if self.scale_by_sigma else None
            temb = L.sinusoidal_embedding(cond, self.nf)
        if not self.conditional:
            return None, sigma
        temb = m[self._temb[0]](temb.to(m[self._temb[0]].weight.dtype))
        return m[self._temb[1]](self.act(temb)), sigma

    def _encode(self, x: Tensor, temb: Optional[Tensor]) -> List[Tensor]:
        """The encoder's outputs (the skip connections), finest first; the last one feeds the middle."""
        m = self.all_modules
        pyramid = x
        hs = [m[self._conv_in](x)]
        for level in self._down:
            for block, attn in zip(level.blocks, level.attn):
                h = m[block](hs[-1], temb)
                hs.append(m[attn](h) if attn is not None else h)
            if level.resample is None:
                continue
            h = m[level.resample](hs[-1]) if self.resblock_type == "ddpm" else m[level.resample](hs[-1], temb)
            if self.progressive_input == "input_skip":
                pyramid = self.pyramid_downsample(pyramid)
                h = m[level.pyramid[0]](pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = L._skip_sum(m[level.pyramid[0]](pyramid), h, self.skip_rescale)
                h = pyramid
            hs.append(h)
        return hs

    def _decode(self, h: Tensor, hs: List[Tensor], temb: Optional[Tensor]) -> Tensor:
        """Decoder from the middle's output ``h``, consuming the skips ``hs``; returns ``[B, C, H, W]``."""
        m = self.all_modules
        pyramid = None
        for level in self._up:
            for block in level.blocks:
                h = m[block](torch.cat([h, hs.pop()], dim=1), temb)
            if level.attn[0] is not None:
                h = m[level.attn[0]](h)
            if self.progressive == "output_skip":
                out = m[level.pyramid[1]](self.act(m[level.pyramid[0]](h)))
                pyramid = out if pyramid is None else self.pyramid_upsample(pyramid) + out
            elif self.progressive == "residual" and pyramid is None:
                pyramid = m[level.pyramid[1]](self.act(m[level.pyramid[0]](h)))
            elif self.progressive == "residual":
                pyramid = L._skip_sum(m[level.pyramid[0]](pyramid), h, self.skip_rescale)
                h = pyramid
            if level.resample is not None:
                h = m[level.resample](h) if self.resblock_type == "ddpm" else m[level.resample](h, temb)
        if self.progressive == "output_skip":
            return pyramid
        return m[self._head[1]](self.act(m[self._head[0]](h)))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x`` ``[B, C, H, W]``, ``cond`` ``[B]`` -> ``[B, C, H, W]`` (see the class docstring)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.num_channels, self.image_size, self.image_size):
            raise ShapeError(
                f"NCSNpp expects x of shape [B, {self.num_channels}, {self.image_size}, {self.image_size}], got {tuple(x.shape)}"
            )
        if cond.shape != (x.shape[0],):
            raise ShapeError(f"cond must have shape [B] = [{x.shape[0]}], got {tuple(cond.shape)}")
        temb, sigma = self._embed(cond)
        if not self.centered:
            x = 2 * x - 1.0
        hs = self._encode(x, temb)
        m = self.all_modules
        h = m[self._mid[0]](hs[-1], temb)
        h = m[self._mid[2]](m[self._mid[1]](h), temb)
        h = self._decode(h, hs, temb)
        if self.scale_by_sigma:
            h = h / sigma.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["NCSNpp", "sigma_table", "count_parameters", "PROGRESSIVE", "PROGRESSIVE_INPUT", "RESBLOCK_TYPES",
           "EMBEDDING_TYPES"]
