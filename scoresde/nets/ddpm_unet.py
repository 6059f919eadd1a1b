"""The original DDPM U-Net (Ho et al. 2020) with the parameter names of score_sde's ``ddpm`` model.

Used by score_sde's ``vp/ddpm/*``, ``subvp/cifar10_ddpm_continuous`` and ``ve/cifar10_ddpm`` configs.
The ``state_dict()`` keys are those of the published checkpoints without the ``module.`` prefix:
``sigmas`` and ``all_modules.<i>.<name>`` in the order of construction:

1. ``Dense -> act -> Dense`` on the sinusoidal embedding (``nf -> 4 nf -> 4 nf``) when ``conditional``;
2. a 3x3 input convolution; per level ``num_res_blocks`` DDPM residual blocks (plus attention at
   ``attn_resolutions``) and, between levels, a stride-2 :class:`~scoresde.nets.ncsnpp_layers.Downsample`;
3. middle: residual block, attention, residual block;
4. per level from the coarsest, ``num_res_blocks + 1`` residual blocks on concatenated skips,
   attention, and a nearest-neighbour :class:`~scoresde.nets.ncsnpp_layers.Upsample`;
5. ``GroupNorm -> act -> 3x3 conv``.

All normalisations use 32 groups, so every channel count must be a multiple of 32.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import OptionError, ShapeError
from . import ncsnpp_layers as L
from .ncsnpp import sigma_table


class DDPMUNet(nn.Module):
    """DDPM's U-Net: ``net(x, labels) -> [B, C, H, W]`` for ``x`` ``[B, C, H, W]`` and ``labels`` ``[B]``.

    ``labels`` are the (possibly fractional) step indices embedded sinusoidally (``999 t`` for continuous
    VP/sub-VP training, ``t (N - 1)`` for discrete VP, integer indices for discrete VE). ``x`` is in
    ``[0, 1]`` when ``centered`` is False (the network maps it to ``2 x - 1``).

    Args:
        image_size, num_channels, centered: the data (``H = W = image_size``, ``C = num_channels``).
        nf, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv, conditional, nonlinearity:
            as score_sde's ``config.model`` fields.
        scale_by_sigma: divide the output by ``sigmas[labels]`` (integer ``labels``).
        sigma_min, sigma_max, num_scales: the discrete noise levels of the ``sigmas`` buffer.
    """

    def __init__(self, image_size: int, num_channels: int = 3, centered: bool = True, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.1, resamp_with_conv: bool = True, conditional: bool = True,
                 scale_by_sigma: bool = False, nonlinearity: str = "swish", sigma_min: float = 0.01,
                 sigma_max: float = 50.0, num_scales: int = 1000):
        super().__init__()
        n_levels = len(ch_mult)
        if n_levels < 1 or image_size % (2 ** (n_levels - 1)):
            raise OptionError(f"image_size {image_size} must be divisible by 2^(len(ch_mult) - 1) = {2 ** (n_levels - 1)}")
        if nf % 32 or any((nf * c) % 32 for c in ch_mult):
            raise OptionError(f"the DDPM U-Net normalises with 32 groups: nf * ch_mult must be multiples of 32, got nf={nf}, ch_mult={tuple(ch_mult)}")
        self.image_size, self.num_channels, self.centered, self.nf = int(image_size), int(num_channels), bool(centered), int(nf)
        self.conditional, self.scale_by_sigma = bool(conditional), bool(scale_by_sigma)
        self.act = act = L.get_activation(nonlinearity)
        self.register_buffer("sigmas", sigma_table(sigma_min, sigma_max, num_scales))
        self.all_modules = nn.ModuleList()
        resolutions = [image_size // 2**i for i in range(n_levels)]
        temb_dim = 4 * nf

        def add(module: nn.Module) -> int:
            self.all_modules.append(module)
            return len(self.all_modules) - 1

        def resblock(in_ch: int, out_ch: Optional[int] = None) -> nn.Module:
            return L.ResBlockDDPM(act, in_ch, out_ch, temb_dim, dropout=dropout, num_groups=32)

        def attention(ch: int) -> Optional[int]:
            return add(L.AttnBlock(ch, num_groups=32))

        self._temb = [add(L.dense(nf, temb_dim)), add(L.dense(temb_dim, temb_dim))] if conditional else []
        self._conv_in = add(L.conv3x3(num_channels, nf))
        skip_channels, ch = [nf], nf
        # encoder: per level a list of (block, attention or None) and the downsampler (or None)
        self._down: List[tuple] = []
        for i in range(n_levels):
            blocks = []
            for _ in range(num_res_blocks):
                block = add(resblock(ch, nf * ch_mult[i]))
                ch = nf * ch_mult[i]
                blocks.append((block, attention(ch) if resolutions[i] in attn_resolutions else None))
                skip_channels.append(ch)
            down = add(L.Downsample(ch, with_conv=resamp_with_conv)) if i != n_levels - 1 else None
            if down is not None:
                skip_channels.append(ch)
            self._down.append((blocks, down))
        self._mid = [add(resblock(ch)), attention(ch), add(resblock(ch))]
        # decoder: per level the blocks, attention (or None) and the upsampler (or None)
        self._up: List[tuple] = []
        for i in reversed(range(n_levels)):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(add(resblock(ch + skip_channels.pop(), nf * ch_mult[i])))
                ch = nf * ch_mult[i]
            attn = attention(ch) if resolutions[i] in attn_resolutions else None
            up = add(L.Upsample(ch, with_conv=resamp_with_conv)) if i != 0 else None
            self._up.append((blocks, attn, up))
        self._head = [add(L.group_norm(ch, 32)), add(L.conv3x3(ch, num_channels, init_scale=0.0))]

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """``x`` ``[B, C, H, W]``, ``labels`` ``[B]`` -> ``[B, C, H, W]``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.num_channels, self.image_size, self.image_size):
            raise ShapeError(
                f"DDPMUNet expects x of shape [B, {self.num_channels}, {self.image_size}, {self.image_size}], got {tuple(x.shape)}"
            )
        if labels.shape != (x.shape[0],):
            raise ShapeError(f"labels must have shape [B] = [{x.shape[0]}], got {tuple(labels.shape)}")
        m = self.all_modules
        temb = None
        if self.conditional:
            temb = L.sinusoidal_embedding(labels, self.nf).to(m[self._temb[0]].weight.dtype)
            temb = m[self._temb[1]](self.act(m[self._temb[0]](temb)))
        h = x if self.centered else 2 * x - 1.0
        hs = [m[self._conv_in](h)]
        for blocks, down in self._down:
            for block, attn in blocks:
                h = m[block](hs[-1], temb)
                hs.append(m[attn](h) if attn is not None else h)
            if down is not None:
                hs.append(m[down](hs[-1]))
        h = m[self._mid[2]](m[self._mid[1]](m[self._mid[0]](hs[-1], temb)), temb)
        for blocks, attn, up in self._up:
            for block in blocks:
                h = m[block](torch.cat([h, hs.pop()], dim=1), temb)
            if attn is not None:
                h = m[attn](h)
            if up is not None:
                h = m[up](h)
        h = m[self._head[1]](self.act(m[self._head[0]](h)))
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype).reshape(-1, 1, 1, 1)
        return h


__all__ = ["DDPMUNet"]
