"""Building blocks of the NCSN++ / DDPM++ networks (Song et al. 2021) and of the original DDPM U-Net.

The attribute names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ``Conv2d_0``, ``W``, ``b``)
are part of the interface: they are the parameter names of the published score_sde checkpoints,
so a network built from these blocks loads those state dicts with ``strict=True``.

Contents:

* FIR resampling (Karras et al., StyleGAN2): :func:`upfirdn2d` (upsample by zero insertion, pad,
  filter with a 2-D FIR kernel, downsample by striding), :func:`fir_upsample`,
  :func:`fir_downsample` and :class:`FIRConv2d` (a 3x3 convolution fused with FIR up/downsampling);
* time embeddings: :func:`sinusoidal_embedding` (DDPM's positional embedding) and
  :class:`GaussianFourierProjection` (random Fourier features of ``log sigma``);
* layers: :class:`NIN` (a per-pixel dense layer), :class:`AttnBlock` (self-attention over pixels),
  :class:`Combine`, :class:`Upsample`, :class:`Downsample`;
* residual blocks: :class:`ResBlockDDPM` (DDPM's block) and :class:`ResBlockBigGAN` (BigGAN's
  block, which resamples inside the block).

All image tensors are ``[B, C, H, W]``; time embeddings are ``[B, D]``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OptionError

#: Activations by their config name.
ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU, "lrelu": lambda: nn.LeakyReLU(0.2)}


def get_activation(name: str) -> nn.Module:
    """The activation module named ``name`` (``swish``, ``relu``, ``elu`` or ``lrelu``, any case)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise OptionError(f"unknown nonlinearity {name!r}; valid names: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


# ---------------------------------------------------------------------------- initialisation


def variance_scaling_(weight: Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0) -> Tensor:
    """Fill ``weight`` in place from ``U(-a, a)`` with ``a^2 = 3 scale / fan_avg`` (DDPM's initialiser).

    ``fan_avg`` is the mean of fan-in and fan-out (``weight.shape[in_axis]`` and ``[out_axis]`` times
    the receptive field). A ``scale`` of 0 means ``1e-10``: a layer that starts at (almost) zero.
    """
    scale = 1e-10 if scale == 0 else float(scale)
    receptive = math.prod(weight.shape) / (weight.shape[in_axis] * weight.shape[out_axis])
    fan_avg = 0.5 * (weight.shape[in_axis] + weight.shape[out_axis]) * receptive
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    """A 3x3 convolution ``[B, in_ch, H, W] -> [B, out_ch, H', W']`` with DDPM's initialisation, zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    """A 1x1 convolution ``[B, in_ch, H, W] -> [B, out_ch, H, W]`` with DDPM's initialisation, zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer ``[B, in_dim] -> [B, out_dim]`` with DDPM's initialisation, zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    variance_scaling_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int, num_groups: Optional[int] = None) -> nn.GroupNorm:
    """GroupNorm over ``channels`` (``eps = 1e-6``); ``min(channels // 4, 32)`` groups unless given."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


def _skip_sum(x: Tensor, h: Tensor, rescale: bool) -> Tensor:
    """``x + h``, divided by ``sqrt(2)`` when ``rescale`` (keeps the variance of two unit branches)."""
    return (x + h) / math.sqrt(2.0) if rescale else x + h


# ---------------------------------------------------------------------------- FIR resampling


def fir_kernel_2d(kernel: Sequence[float], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The normalised 2-D filter of a separable 1-D FIR ``kernel`` (outer product, summing to 1): ``[k, k]``."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise OptionError(f"fir_kernel must be a 1-D list or a square 2-D filter, got shape {tuple(k.shape)}")
    k = k / k.sum()
    return k.to(dtype=torch.float32).to(dtype=dtype, device=device)


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: Tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample, FIR-filter and downsample each channel of ``x`` (the ``upfirdn2d`` of StyleGAN2).

    1. insert ``up - 1`` zeros after every pixel along both axes;
    2. pad ``pad[0]`` pixels before and ``pad[1]`` after along both axes (negative values crop);
    3. convolve with ``kernel`` (a true convolution: the filter is flipped);
    4. keep every ``down``-th pixel.

    Args:
        x: ``[B, C, H, W]``.
        kernel: ``[kh, kw]`` filter.

    Returns:
        ``[B, C, (H up + pad0 + pad1 - kh) // down + 1, (W up + pad0 + pad1 - kw) // down + 1]``.
    """
    B, C, H, W = x.shape
    if up > 1:
        # zero insertion: [B, C, H, 1, W, 1] padded to [B, C, H, up, W, up]
        x = F.pad(x.reshape(B, C, H, 1, W, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(B, C, H * up, W * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    kh, kw = kernel.shape
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device).expand(C, 1, kh, kw)
    x = F.conv2d(x, weight, groups=C)
    return x[:, :, ::down, ::down] if down > 1 else x


def fir_upsample(x: Tensor, fir_kernel: Sequence[float], factor: int = 2) -> Tensor:
    """FIR upsampling ``[B, C, H, W] -> [B, C, factor H, factor W]`` (a constant image stays constant)."""
    k = fir_kernel_2d(fir_kernel, device=x.device) * (factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x: Tensor, fir_kernel: Sequence[float], factor: int = 2) -> Tensor:
    """FIR downsampling ``[B, C, H, W] -> [B, C, H // factor, W // factor]`` (low-pass filter, then stride)."""
    k = fir_kernel_2d(fir_kernel, device=x.device)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def nearest_upsample(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling ``[B, C, H, W] -> [B, C, factor H, factor W]``."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def mean_downsample(x: Tensor, factor: int = 2) -> Tensor:
    """Average pooling over ``factor x factor`` blocks: ``[B, C, H, W] -> [B, C, H // factor, W // factor]``."""
    return F.avg_pool2d(x, factor, stride=factor)


class FIRConv2d(nn.Module):
    """A square convolution fused with FIR up- or downsampling by 2 (StyleGAN2's ``Conv2d``).

    * ``up=True``: a stride-2 transposed convolution, then the FIR filter (times 4) pads and smooths:
      ``[B, in_ch, H, W] -> [B, out_ch, 2H, 2W]``;
    * ``down=True``: the FIR filter pads and smooths, then a stride-2 convolution:
      ``[B, in_ch, H, W] -> [B, out_ch, H / 2, W / 2]``;
    * neither: a plain same-padded convolution.

    Parameters ``weight`` ``[out_ch, in_ch, k, k]`` and ``bias`` ``[out_ch]``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False, down: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True):
        super().__init__()
        if up and down:
            raise OptionError("FIRConv2d resamples one way: up and down cannot both be set")
        if kernel < 1 or kernel % 2 == 0:
            raise OptionError(f"FIRConv2d needs an odd kernel size, got {kernel}")
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel))
        variance_scaling_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down, self.kernel = bool(up), bool(down), int(kernel)
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, H', W']`` (``H' = 2H``, ``H / 2`` or ``H``)."""
        if self.up:
            x = self._up(x)
        elif self.down:
            k = fir_kernel_2d(self.fir_kernel, device=x.device)
            p = (k.shape[0] - 2) + (self.kernel - 1)
            x = F.conv2d(upfirdn2d(x, k, pad=((p + 1) // 2, p // 2)), self.weight, stride=2)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        return x + self.bias.reshape(1, -1, 1, 1) if self.bias is not None else x

    def _up(self, x: Tensor) -> Tensor:
        # The transposed convolution applies the spatially flipped kernel with in/out swapped.
        w = torch.flip(self.weight, (2, 3)).transpose(0, 1)
        x = F.conv_transpose2d(x, w, stride=2)  # [B, out, 2H + k - 2, 2W + k - 2]
        k = fir_kernel_2d(self.fir_kernel, device=x.device) * 4
        p = (k.shape[0] - 2) - (self.kernel - 1)
        return upfirdn2d(x, k, pad=((p + 1) // 2 + 1, p // 2 + 1))


# ---------------------------------------------------------------------------- time embeddings


def sinusoidal_embedding(timesteps: Tensor, dim: int, max_positions: int = 10000) -> Tensor:
    """DDPM's positional embedding of (possibly fractional) step indices: ``[B] -> [B, dim]``.

    ``[sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ..., cos(t f_{h-1})]`` with ``h = dim // 2`` and
    ``f_j = max_positions^(-j / (h - 1))``; a zero column is appended when ``dim`` is odd.
    Computed in float32 (or in the input's precision when that is wider).
    """
    if timesteps.ndim != 1:
        raise OptionError(f"timesteps must have shape [B], got {tuple(timesteps.shape)}")
    dtype = torch.float64 if timesteps.dtype == torch.float64 else torch.float32
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=timesteps.device) * -step)
    args = timesteps.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi W s), cos(2 pi W s)]`` of a scalar ``s`` per sample.

    ``W`` ``[embedding_size]`` is a parameter drawn from ``N(0, scale^2)`` and kept fixed
    (``requires_grad=False``; the score_sde EMA does not track it). Shapes: ``[B] -> [B, 2 embedding_size]``.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        """``s`` ``[B]`` -> ``[B, 2 embedding_size]``."""
        # The product is formed left to right, (s W) 2 pi, which fixes its float rounding.
        phase = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


# ---------------------------------------------------------------------------- layers


class NIN(nn.Module):
    """A dense layer applied at every pixel (a 1x1 convolution stored as ``W`` ``[in, out]``, ``b`` ``[out]``).

    Shapes: ``[B, in_dim, H, W] -> [B, num_units, H, W]``.
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(variance_scaling_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, num_units, H, W]``."""
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class AttnBlock(nn.Module):
    """Self-attention over the ``H W`` pixels with one head of ``C`` channels, in a residual branch.

    ``out = x + NIN_3(attention(NIN_0(n), NIN_1(n), NIN_2(n)))`` with ``n = GroupNorm_0(x)``
    (divided by ``sqrt(2)`` with ``skip_rescale``). ``num_groups`` ``None`` means ``min(C // 4, 32)``
    (NCSN++); DDPM uses 32. Shapes: ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0,
                 num_groups: Optional[int] = None):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, num_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = bool(skip_rescale)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        B, C, H, W = x.shape
        n = self.GroupNorm_0(x)
        q, k, v = (m(n).reshape(B, C, H * W) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (C ** -0.5), dim=-1)  # [B, HW (query), HW (key)]
        h = torch.bmm(v, weights.transpose(1, 2)).reshape(B, C, H, W)
        return _skip_sum(x, self.NIN_3(h), self.skip_rescale)


class Combine(nn.Module):
    """Merge an input-pyramid image into the features: ``Conv_0`` (1x1) maps ``dim1 -> dim2`` channels,
    then ``sum`` adds or ``cat`` concatenates. Shapes: ``x`` ``[B, dim1, H, W]``, ``y`` ``[B, dim2, H, W]``
    -> ``[B, dim2, H, W]`` (sum) or ``[B, 2 dim2, H, W]`` (cat)."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise OptionError(f"progressive_combine must be 'cat' or 'sum', got {method!r}")
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """See the class docstring for the shapes."""
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class Upsample(nn.Module):
    """Upsampling by 2: nearest neighbour (then ``Conv_0``, 3x3, with ``with_conv``), or FIR filtering
    (with ``with_conv``: the fused :class:`FIRConv2d` ``Conv2d_0``). ``[B, in_ch, H, W] -> [B, out_ch, 2H, 2W]``."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, up=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.with_conv, self.fir, self.fir_kernel = bool(with_conv), bool(fir), tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, 2H, 2W]``."""
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir_upsample(x, self.fir_kernel)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """Downsampling by 2: a stride-2 3x3 ``Conv_0`` (input padded on the bottom and right) or 2x2 average
    pooling; with ``fir``, the fused :class:`FIRConv2d` ``Conv2d_0`` or FIR filtering.
    ``[B, in_ch, H, W] -> [B, out_ch, H / 2, W / 2]``."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, down=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.with_conv, self.fir, self.fir_kernel = bool(with_conv), bool(fir), tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W]`` -> ``[B, out_ch, H / 2, W / 2]``."""
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir_downsample(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))  # TensorFlow's 'SAME' padding for stride 2
        return mean_downsample(x)


# ---------------------------------------------------------------------------- residual blocks


class ResBlockDDPM(nn.Module):
    """DDPM's residual block with a time-embedding bias.

    ``h = Conv_0(act(GroupNorm_0(x))) + Dense_0(act(temb))``, ``h = Conv_1(Dropout_0(act(GroupNorm_1(h))))``;
    the skip is ``x``, or ``NIN_0(x)`` (``Conv_2(x)`` with ``conv_shortcut``) when the channels change;
    the output is ``skip + h`` (divided by ``sqrt(2)`` with ``skip_rescale``).
    ``num_groups`` ``None`` means ``min(C // 4, 32)`` groups (DDPM++), DDPM itself uses 32.

    Shapes: ``x`` ``[B, in_ch, H, W]``, ``temb`` ``[B, temb_dim]`` or ``None`` -> ``[B, out_ch, H, W]``.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 conv_shortcut: bool = False, dropout: float = 0.1, skip_rescale: bool = False,
                 init_scale: float = 0.0, num_groups: Optional[int] = None):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, num_groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, num_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act = act
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv_shortcut, self.skip_rescale = bool(conv_shortcut), bool(skip_rescale)

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        """See the class docstring for the shapes."""
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return _skip_sum(x, h, self.skip_rescale)


class ResBlockBigGAN(nn.Module):
    """BigGAN's residual block (as in NCSN++/DDPM++), which can resample by 2 inside the block.

    ``h = act(GroupNorm_0(x))``; with ``up``/``down`` both ``h`` and the skip ``x`` are resampled (FIR
    with ``fir``, else nearest neighbour / average pooling); then ``h = Conv_0(h) + Dense_0(act(temb))``,
    ``h = Conv_1(Dropout_0(act(GroupNorm_1(h))))``; the skip passes ``Conv_2`` (1x1) when the channels
    change or the block resamples; the output is ``skip + h`` (divided by ``sqrt(2)`` with ``skip_rescale``).

    Shapes: ``x`` ``[B, in_ch, H, W]``, ``temb`` ``[B, temb_dim]`` or ``None`` -> ``[B, out_ch, H', W']``
    with ``H' = 2H`` (up), ``H / 2`` (down) or ``H``.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.has_shortcut = in_ch != out_ch or up or down
        if self.has_shortcut:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act = act
        self.up, self.down, self.fir, self.fir_kernel = bool(up), bool(down), bool(fir), tuple(fir_kernel)
        self.skip_rescale = bool(skip_rescale)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return fir_upsample(x, self.fir_kernel) if self.fir else nearest_upsample(x)
        if self.down:
            return fir_downsample(x, self.fir_kernel) if self.fir else mean_downsample(x)
        return x

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        """See the class docstring for the shapes."""
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.has_shortcut:
            x = self.Conv_2(x)
        return _skip_sum(x, h, self.skip_rescale)


__all__ = [
    "ACTIVATIONS", "get_activation", "variance_scaling_", "conv3x3", "conv1x1", "dense", "group_norm",
    "fir_kernel_2d", "upfirdn2d", "fir_upsample", "fir_downsample", "nearest_upsample", "mean_downsample",
    "FIRConv2d", "sinusoidal_embedding", "GaussianFourierProjection", "NIN", "AttnBlock", "Combine",
    "Upsample", "Downsample", "ResBlockDDPM", "ResBlockBigGAN",
]
