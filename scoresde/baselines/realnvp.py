"""RealNVP (Dinh, Sohl-Dickstein and Bengio, 2017): an exact-likelihood normalizing flow for 8-bit images.

Spaces and the bits/dim convention:

* Data are 8-bit levels ``k in {0..255}^D`` (or the same images in the model range, ``-1 + 2k/255``).
* **Dequantization**: ``u = (k + v) / 256`` with ``v ~ U[0, 1)^D``, so ``u in [0, 1)^D``. The flow is a
  density on this unit cube; :meth:`RealNVP.forward`, :meth:`RealNVP.inverse` and
  :meth:`RealNVP.log_prob` work in ``u``.
* **Logit pre-processing**: ``y = logit(alpha + (1 - 2 alpha) u)`` (``alpha = 0.05`` by default), whose
  log-determinant ``sum[log(1 - 2 alpha) - log p - log(1 - p)]`` (``p = alpha + (1 - 2 alpha) u``) is part
  of ``log_det``.
* **Bits/dim** (:meth:`RealNVP.bits_per_dim`): ``-(log p(u) - D log 256) / (D ln 2)``, the standard
  upper bound on ``-log2 P(k) / D`` of uniformly dequantized data (exact up to the Jensen gap of
  the dequantization; no other bound). It equals what :func:`scoresde.bits_per_dim` reports for a
  density on the model range with ``data_range = scoresde.data.dequantization_range(256)``.

Architecture: at each scale but the last, three affine couplings with checkerboard masks, a 2x2
squeeze (space to depth), three couplings with channel masks, and half the channels factored out
to the latent; the last scale has four checkerboard couplings. A coupling keeps the masked part
``x_a`` and maps the rest to ``x_b * exp(s) + t`` with ``(s_raw, t) = net(x_a)`` and
``s = scale * tanh(s_raw)``. The coupling networks are small ResNets with no normalization layers,
so every layer acts on each image alone and train and eval modes give the same exact density;
their last convolutions start at zero, so a fresh model is the logit transform of a standard normal.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._validation import check_generator, finite_float, positive_int
from ..errors import DataError, OptionError
from ..noise import rand, randn
from ._train import LEVELS, as_levels, check_image_shape, check_images, nats_to_bits_per_dim, param_device_dtype

_LOG_2PI = math.log(2.0 * math.pi)


def squeeze2x2(x: Tensor) -> Tensor:
    """Space to depth: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``; output channel ``4c + 2i + j`` holds pixel ``(i, j)`` of each 2x2 block."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze2x2(x: Tensor) -> Tensor:
    """Inverse of :func:`squeeze2x2`: ``[B, 4C, H, W] -> [B, C, 2H, 2W]``."""
    B, C4, H, W = x.shape
    x = x.reshape(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(B, C4 // 4, 2 * H, 2 * W)


def checkerboard(h: int, w: int, parity: int, device=None, dtype=None) -> Tensor:
    """``[1, 1, h, w]`` mask: 1 where ``(i + j) % 2 == parity``."""
    i = torch.arange(h, device=device).reshape(h, 1)
    j = torch.arange(w, device=device).reshape(1, w)
    return ((i + j) % 2 == parity).to(dtype or torch.get_default_dtype()).reshape(1, 1, h, w)


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``x + conv(relu(conv(relu(x))))``, shape-preserving."""
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


def _coupling_net(c_in: int, c_out: int, hidden: int, num_blocks: int) -> nn.Sequential:
    """``[B, c_in, H, W] -> [B, c_out, H, W]``: conv, residual blocks, ReLU, a zero-initialised conv."""
    last = nn.Conv2d(hidden, c_out, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(c_in, hidden, 3, padding=1), *[_ResBlock(hidden) for _ in range(num_blocks)], nn.ReLU(), last
    )


class AffineCoupling(nn.Module):
    """One affine coupling layer on ``[B, C, H, W]`` with a checkerboard or channel mask.

    Checkerboard: the pixels with ``(i + j) % 2 == parity`` condition the others (the network also
    sees the mask as an extra channel). Channel: the first half of the channels conditions the
    second (``parity = 0``) or the reverse (``parity = 1``). The transformed part becomes
    ``x * exp(s) + t`` with ``s = scale * tanh(s_raw)``, ``scale`` a learned per-channel factor.
    """

    def __init__(self, channels: int, hidden: int, num_blocks: int, mask: str, parity: int):
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise OptionError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        self.mask, self.parity = mask, int(parity)
        c_in, c_t = (channels + 1, channels) if mask == "checkerboard" else (channels // 2, channels // 2)
        self.net = _coupling_net(c_in, 2 * c_t, hidden, num_blocks)
        self.scale = nn.Parameter(torch.ones(1, c_t, 1, 1))

    def _s_t(self, x_cond: Tensor) -> Tuple[Tensor, Tensor]:
        s_raw, t = self.net(x_cond).chunk(2, dim=1)
        return self.scale * torch.tanh(s_raw), t

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``x [B, C, H, W] -> (y [B, C, H, W], log|det dy/dx| [B])``."""
        if self.mask == "checkerboard":
            b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)
            s, t = self._s_t(torch.cat([x * b, b.expand(x.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - b), t * (1 - b)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        x_a, x_b = x.chunk(2, dim=1) if self.parity == 0 else x.chunk(2, dim=1)[::-1]
        s, t = self._s_t(x_a)
        y_b = x_b * torch.exp(s) + t
        y = torch.cat([x_a, y_b] if self.parity == 0 else [y_b, x_a], dim=1)
        return y, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """``y [B, C, H, W] -> x``, the inverse of :meth:`forward`."""
        if self.mask == "checkerboard":
            b = checkerboard(y.shape[2], y.shape[3], self.parity, y.device, y.dtype)
            s, t = self._s_t(torch.cat([y * b, b.expand(y.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - b), t * (1 - b)
            return (y - t) * torch.exp(-s)
        y_a, y_b = y.chunk(2, dim=1) if self.parity == 0 else y.chunk(2, dim=1)[::-1]
        s, t = self._s_t(y_a)
        x_b = (y_b - t) * torch.exp(-s)
        return torch.cat([y_a, x_b] if self.parity == 0 else [x_b, y_a], dim=1)


class RealNVP(nn.Module):
    """Multi-scale RealNVP for 8-bit images ``[B, C, H, W]`` (see the module docstring for the spaces).

    Args:
        image_shape: ``(C, H, W)``, ``H`` and ``W`` multiples of ``2 ** (num_scales - 1)``. For MNIST
            (1x28x28) and ``num_scales = 2``: 3 checkerboard couplings on 1x28x28, squeeze to 4x14x14,
            3 channel couplings, factor out 2 channels, 4 checkerboard couplings on 2x14x14.
            ``num_scales = 3`` adds a scale at 4x7x7.
        num_scales: number of scales (``num_scales - 1`` squeezes).
        hidden: channels of the coupling networks.
        num_blocks: residual blocks per coupling network.
        alpha: the logit pre-processing constant, ``0 < alpha < 0.5``.

    ``config`` holds the constructor arguments.
    """

    kind = "realnvp"
    default_lr = 1e-3

    def __init__(
        self, image_shape: Sequence[int] = (1, 28, 28), num_scales: int = 2, hidden: int = 32, num_blocks: int = 2,
        alpha: float = 0.05,
    ):
        super().__init__()
        num_scales = positive_int(num_scales, "num_scales")
        c, h, w = check_image_shape(image_shape, multiple=2 ** (num_scales - 1))
        hidden = positive_int(hidden, "hidden")
        num_blocks = positive_int(num_blocks, "num_blocks")
        alpha = finite_float(alpha, "alpha", positive=True)
        if not alpha < 0.5:
            raise OptionError(f"alpha must lie in (0, 0.5), got {alpha}")
        self.image_shape, self.num_scales, self.alpha = (c, h, w), num_scales, alpha
        self.config: Dict[str, Any] = {
            "image_shape": [c, h, w], "num_scales": num_scales, "hidden": hidden, "num_blocks": num_blocks, "alpha": alpha,
        }
        self.checker, self.channel = nn.ModuleList(), nn.ModuleList()
        ch = c
        for i in range(num_scales):
            last = i == num_scales - 1
            n_checker = 4 if last else 3
            self.checker.append(nn.ModuleList(
                AffineCoupling(ch, hidden, num_blocks, "checkerboard", j % 2) for j in range(n_checker)))
            self.channel.append(nn.ModuleList(
                [] if last else [AffineCoupling(4 * ch, hidden, num_blocks, "channel", j % 2) for j in range(3)]))
            ch *= 2

    @property
    def dims(self) -> int:
        """``D = C * H * W``."""
        return math.prod(self.image_shape)

    def _logit(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        """``u -> y = logit(alpha + (1 - 2 alpha) u)`` and its log-determinant ``[B]``."""
        p = self.alpha + (1.0 - 2.0 * self.alpha) * u
        y = torch.log(p) - torch.log1p(-p)
        log_det = (math.log1p(-2.0 * self.alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return y, log_det

    def _flow(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        """The coupling stack on logit space: ``y [B, C, H, W] -> (z [B, C, H, W], log_det [B])``."""
        log_det = h.new_zeros(h.shape[0])
        factored = []
        for i in range(self.num_scales):
            for layer in self.checker[i]:
                h, ld = layer(h)
                log_det = log_det + ld
            if i == self.num_scales - 1:
                break
            h = squeeze2x2(h)
            for layer in self.channel[i]:
                h, ld = layer(h)
                log_det = log_det + ld
            z_i, h = h.chunk(2, dim=1)  # factor out half the channels
            factored.append(z_i)
        for z_i in reversed(factored):  # reassemble z in the input's shape
            h = unsqueeze2x2(torch.cat([z_i, h], dim=1))
        return h, log_det

    def _flow_inverse(self, z: Tensor) -> Tensor:
        factored, h = [], z
        for _ in range(self.num_scales - 1):
            z_i, h = squeeze2x2(h).chunk(2, dim=1)
            factored.append(z_i)
        for i in reversed(range(self.num_scales)):
            if i < self.num_scales - 1:
                h = torch.cat([factored[i], h], dim=1)
                for layer in reversed(self.channel[i]):
                    h = layer.inverse(h)
                h = unsqueeze2x2(h)
            for layer in reversed(self.checker[i]):
                h = layer.inverse(h)
        return h

    def forward(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        """The flow from dequantized data to the latent.

        Args:
            u: dequantized images ``[B, C, H, W]`` in ``[0, 1]`` (not the ``[-1, 1]`` model range).

        Returns:
            ``(z, log_det)``: ``z`` ``[B, C, H, W]`` (standard normal under the model) and
            ``log|det dz/du|`` ``[B]``, the logit pre-processing included.

        Raises:
            DataError: values where the logit is undefined, outside ``(-r, 1 + r)`` with ``r = alpha / (1 - 2 alpha)``
                (model-range images in ``[-1, 1]`` need :meth:`bits_per_dim`, or ``u = (x + 1) / 2``).
        """
        check_images(u, self.image_shape, "u")
        reach = self.alpha / (1.0 - 2.0 * self.alpha)  # logit(alpha + (1 - 2 alpha) u) is finite for |u - 1/2| < 1/2 + reach
        if u.numel() and not float((u.detach() - 0.5).abs().max()) < 0.5 + reach:
            raise DataError(
                f"u must lie in [0, 1] (dequantized data (k + v) / 256), got values in [{float(u.min()):.4g}, {float(u.max()):.4g}]"
            )
        y, log_det = self._logit(u)
        z, ld = self._flow(y)
        return z, log_det + ld

    def inverse(self, z: Tensor) -> Tensor:
        """Latents ``z`` ``[B, C, H, W]`` to dequantized images ``u`` ``[B, C, H, W]`` (in ``[0, 1]`` up to rounding)."""
        check_images(z, self.image_shape, "z")
        y = self._flow_inverse(z)
        return (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)

    def log_prob(self, u: Tensor) -> Tensor:
        """Exact log-density of dequantized images ``u`` ``[B, C, H, W]`` in ``[0, 1]``: ``[B]``, nats.

        ``log p(u) = log N(z; 0, I) + log|det dz/du|`` with ``(z, log_det) = forward(u)``.
        """
        z, log_det = self(u)
        return -0.5 * z.flatten(1).square().sum(1) - 0.5 * self.dims * _LOG_2PI + log_det

    def dequantize(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``u = (k + v) / 256`` with ``v ~ U[0, 1)`` from ``generator``: ``[B, C, H, W]`` in ``[0, 1)``.

        Args:
            x: 8-bit images: integer levels or floats on the grid ``-1 + 2k/255``.
        """
        check_images(x, self.image_shape)
        device, dtype = param_device_dtype(self)
        k = as_levels(x).to(device=device, dtype=dtype)
        return (k + rand(k.shape, generator, device, dtype)) / LEVELS

    def bits_per_dim(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Bits/dim of 8-bit images under uniform dequantization: ``-(log p(u) - D log 256) / (D ln 2)``, ``[B]``.

        One dequantization draw per image from ``generator``; average several calls to shrink its noise.
        """
        check_generator(generator)
        u = self.dequantize(x, generator)
        return nats_to_bits_per_dim(-(self.log_prob(u) - self.dims * math.log(LEVELS)), self.dims)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, temperature: float = 1.0) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in ``[-1, 1]``: ``u = inverse(temperature * eps)``, ``eps ~ N(0, I)``,
        mapped affinely from ``[0, 1]`` onto the dequantization range ``[-1 - 1/255, 1 + 1/255]`` and clipped
        to ``[-1, 1]`` (so ``scoresde.data.to_levels`` returns the level whose bin ``u`` fell in)."""
        n = positive_int(n, "n")
        temperature = finite_float(temperature, "temperature")
        if temperature < 0:
            raise OptionError(f"temperature must be >= 0, got {temperature}")
        device, dtype = param_device_dtype(self)
        z = temperature * randn((n, *self.image_shape), generator=generator, device=device, dtype=dtype)
        with torch.no_grad():
            u = self.inverse(z)
        half_bin = 1.0 / (LEVELS - 1)
        return (u * (2.0 + 2.0 * half_bin) - 1.0 - half_bin).clamp(-1.0, 1.0)

    def configure_optimizers(self, lr: Optional[float] = None) -> Tuple[torch.optim.Optimizer]:
        """``(Adam,)`` with learning rate ``lr`` (default :attr:`default_lr`) and a small weight decay (5e-5)."""
        lr = finite_float(self.default_lr if lr is None else lr, "lr", positive=True)
        return (torch.optim.Adam(self.parameters(), lr=lr, weight_decay=5e-5),)

    def train_step(self, x: Tensor, opt: torch.optim.Optimizer, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """One Adam step on the mean bits/dim of a batch ``[B, C, H, W]``; returns ``{"loss": bits/dim}``."""
        loss = self.bits_per_dim(x, generator).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), 100.0)
        opt.step()
        return {"loss": float(loss.detach())}


__all__ = ["RealNVP", "AffineCoupling", "squeeze2x2", "unsqueeze2x2", "checkerboard"]
