"""A small convolutional VAE with a discretized-logistic decoder for 8-bit images.

The encoder is Gaussian, ``q(z|x) = N(mu(x), diag(exp(2 log_std(x))))``, over a **spatial latent**
``[B, latent_channels, H/4, W/4]`` (``4 x 7 x 7`` for MNIST), a shape a score SDE on the codes can
treat as a small image. The prior is ``N(0, I)``.

The decoder's likelihood is **discrete**: for 8-bit images (level ``k`` at ``x_k = -1 + 2k/255``)
each pixel gets a logistic with location ``mu`` and log-scale ``log s`` and the probability of its bin,

    P(k) = sigma((x_k + 1/255 - mu) / s) - sigma((x_k - 1/255 - mu) / s),

with the first and last bins stretched to ``-inf`` and ``+inf`` (Salimans et al. 2017), so the
probabilities of the 256 levels sum to one. ``-log p(x|z)`` is therefore a proper discrete NLL and
``-ELBO / (D ln 2)`` bounds ``-log2 P(x) / D`` directly, with no dequantization term
(:meth:`ConvVAE.bits_per_dim`). A Bernoulli decoder is available for binarised data.

For a latent score SDE the pieces of ``-log p(x) <= E_q[-log p(x|z)] - E_q[log p_SDE(z)] - H[q(z|x)]``
are separate: :meth:`ConvVAE.encode`, :meth:`ConvVAE.log_px_given_z` and :func:`gaussian_entropy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_generator, finite_float, integer, positive_int
from ..errors import DataError, OptionError, ShapeError
from ..noise import randn
from ._train import LEVELS, as_levels, as_model_range, check_image_shape, check_images, nats_to_bits_per_dim, param_device_dtype

DECODERS = ("logistic", "bernoulli")
KL_ESTIMATORS = ("analytic", "sampled")
#: Lower bound on the decoder's log-scale (as in PixelCNN++): bins stay resolvable and gradients finite.
MIN_LOG_SCALE = -7.0
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class ELBOResult:
    """Per-image terms of the evidence lower bound, in nats.

    Attributes:
        elbo: ``recon - kl`` ``[B]``, a lower bound on ``log p(x)``.
        recon: ``E_q[log p(x|z)]`` ``[B]`` (Monte Carlo over ``n_samples`` draws of ``z``).
        kl: ``KL(q(z|x) || N(0, I))`` ``[B]`` (analytic, or Monte Carlo with ``kl="sampled"``).
        objective: ``recon - kl_weight * kl`` ``[B]``, the training objective (``elbo`` when ``kl_weight = 1``).
    """

    elbo: Tensor
    recon: Tensor
    kl: Tensor
    objective: Tensor


@dataclass
class DecoderParams:
    """The decoder's per-pixel parameters for latents ``z``.

    Attributes:
        loc: ``[B, C, H, W]``: the logistic locations ``mu`` (model range) for the logistic decoder,
            the Bernoulli logits for the Bernoulli decoder.
        log_scale: ``[B, C, H, W]`` logistic log-scales (``>= MIN_LOG_SCALE``); ``None`` for Bernoulli.
    """

    loc: Tensor
    log_scale: Optional[Tensor]


def _flat_sum(v: Tensor, start: int) -> Tensor:
    """Sum over dims ``start:`` (``[..., *event] -> [...]``)."""
    return v.flatten(start).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of ``N(mu, diag(exp(2 log_std)))`` in nats: ``sum(log_std) + d/2 (1 + log 2 pi)``.

    Args:
        log_std: ``[B, *latent]``.

    Returns:
        ``[B]``.
    """
    d = log_std[0].numel()
    return _flat_sum(log_std, 1) + 0.5 * d * (1.0 + _LOG_2PI)


def gaussian_kl_standard(mu: Tensor, log_std: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(2 log_std))) || N(0, I))`` in nats: ``sum(mu^2 + sigma^2 - 1 - 2 log_std) / 2``.

    Args:
        mu, log_std: ``[B, *latent]``.

    Returns:
        ``[B]``.
    """
    return 0.5 * _flat_sum(mu.square() + torch.exp(2.0 * log_std) - 1.0 - 2.0 * log_std, 1)


def gaussian_elbo(
    x: Tensor,
    mu: Tensor,
    log_std: Tensor,
    log_px_given_z: Callable[[Tensor, Tensor], Tensor],
    *,
    n_samples: int = 1,
    generator: Optional[torch.Generator] = None,
    kl: str = "analytic",
    kl_weight: float = 1.0,
) -> ELBOResult:
    """The ELBO of a model with prior ``N(0, I)`` and Gaussian encoder ``q(z|x) = N(mu, diag(exp(2 log_std)))``.

    ``z = mu + exp(log_std) * eps`` with ``eps ~ N(0, I)`` from ``generator`` (reparameterised, so the
    result is differentiable in ``mu``, ``log_std`` and the decoder), ``n_samples`` draws per image:

        recon = mean_j log p(x | z_j),      elbo = recon - KL(q || N(0, I)).

    With ``kl="analytic"`` the KL is exact; with ``kl="sampled"`` it is ``mean_j [log q(z_j|x) - log N(z_j; 0, I)]``,
    whose sum with ``recon`` is the ``log p(x, z) - log q(z|x)`` estimator: it has zero variance when
    ``q`` is the exact posterior (then every draw gives ``log p(x)``).

    Args:
        x: data ``[B, *event]`` (any dtype ``log_px_given_z`` accepts).
        mu, log_std: encoder outputs ``[B, *latent]``.
        log_px_given_z: ``f(x [N, *event], z [N, *latent]) -> [N]`` in nats.
        n_samples: draws of ``z`` per image.
        generator: source of ``eps``.
        kl: ``"analytic"`` or ``"sampled"``.
        kl_weight: weight of the KL in ``objective`` (not in ``elbo``), ``>= 0``.

    Returns:
        An :class:`ELBOResult` with ``[B]`` entries.

    Raises:
        ShapeError: ``mu``/``log_std`` shapes differ or do not match ``x``'s batch, or ``log_px_given_z``
            returns the wrong shape.
        OptionError: a bad ``n_samples``, ``kl``, ``kl_weight`` or ``generator``.
    """
    n = positive_int(n_samples, "n_samples")
    kl_weight = finite_float(kl_weight, "kl_weight")
    if kl_weight < 0:
        raise OptionError(f"kl_weight must be >= 0, got {kl_weight}")
    if kl not in KL_ESTIMATORS:
        raise OptionError(f"kl must be one of {KL_ESTIMATORS}, got {kl!r}")
    if mu.shape != log_std.shape or mu.ndim < 2 or mu.shape[0] != x.shape[0]:
        raise ShapeError(
            f"mu and log_std must both be [B, *latent] with B = {x.shape[0]}, got {tuple(mu.shape)} and {tuple(log_std.shape)}"
        )
    B, latent = mu.shape[0], mu.shape[1:]
    eps = randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)  # [n, B, *latent]
    z = mu + torch.exp(log_std) * eps
    x_rep = x.unsqueeze(0).expand(n, *x.shape).reshape(n * B, *x.shape[1:])
    log_px = log_px_given_z(x_rep, z.reshape(n * B, *latent))
    if not isinstance(log_px, Tensor) or log_px.shape != (n * B,):
        raise ShapeError(f"log_px_given_z must return one value per image, [{n * B}], got {getattr(log_px, 'shape', log_px)}")
    recon = log_px.reshape(n, B).mean(0)
    if kl == "analytic":
        kl_value = gaussian_kl_standard(mu, log_std)
    else:
        log_q = _flat_sum(-0.5 * eps.square() - log_std - 0.5 * _LOG_2PI, 2)  # [n, B]
        log_prior = _flat_sum(-0.5 * z.square() - 0.5 * _LOG_2PI, 2)
        kl_value = (log_q - log_prior).mean(0)
    return ELBOResult(recon - kl_value, recon, kl_value, recon - kl_weight * kl_value)


def discretized_logistic_log_prob(k: Tensor, loc: Tensor, log_scale: Tensor, levels: int = LEVELS) -> Tensor:
    """Log-probability of integer levels under per-pixel discretized logistics on ``[-1, 1]``.

    Level ``k`` has centre ``x_k = -1 + 2k/(levels-1)`` and bin ``[x_k - w/2, x_k + w/2]`` with
    ``w = 2/(levels-1)``; the end bins extend to ``-inf`` and ``+inf``. With ``a = (x_k + w/2 - loc)/s``
    and ``b = (x_k - w/2 - loc)/s`` the inner bins have

        log(sigma(a) - sigma(b)) = log(-expm1(b - a)) + log sigma(a) + log sigma(-b),

    an exact identity that stays accurate in both tails; the end bins have ``log sigma(a)`` and ``log sigma(-b)``.

    Args:
        k: integer levels in ``0..levels-1``, broadcastable with ``loc``.
        loc: logistic locations (model range), any shape.
        log_scale: log-scales ``log s``, shaped like ``loc``.
        levels: number of levels.

    Returns:
        Element-wise log-probabilities (nats), the broadcast shape of ``k`` and ``loc``.
    """
    levels = integer(levels, "levels", minimum=2)
    # bin edges from the odd integers 2k +- 1, so the upper edge of bin k and the lower edge of bin k + 1
    # are the same float and the probabilities telescope to one in any precision
    two_k = 2 * k.to(loc.dtype)
    inv_s = torch.exp(-log_scale)
    a = ((two_k + 1.0) / (levels - 1) - 1.0 - loc) * inv_s
    b = ((two_k - 1.0) / (levels - 1) - 1.0 - loc) * inv_s
    log_upper = F.logsigmoid(a)  # log P(X <= x_k + w/2)
    log_lower_tail = F.logsigmoid(-b)  # log P(X > x_k - w/2)
    inner = torch.log(-torch.expm1(b - a)) + log_upper + log_lower_tail
    return torch.where(k <= 0, log_upper, torch.where(k >= levels - 1, log_lower_tail, inner))


def _encoder(c: int, hidden: int, latent_channels: int) -> nn.Sequential:
    h2 = 2 * hidden
    return nn.Sequential(
        nn.Conv2d(c, hidden, 3, padding=1), nn.SiLU(),
        nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU(),  # H/2
        nn.Conv2d(hidden, h2, 4, stride=2, padding=1), nn.SiLU(),  # H/4
        nn.Conv2d(h2, h2, 3, padding=1), nn.SiLU(),
        nn.Conv2d(h2, 2 * latent_channels, 3, padding=1),  # mu, log_std
    )


def _decoder(c_out: int, hidden: int, latent_channels: int) -> nn.Sequential:
    h2 = 2 * hidden
    return nn.Sequential(
        nn.Conv2d(latent_channels, h2, 3, padding=1), nn.SiLU(),
        nn.Conv2d(h2, h2, 3, padding=1), nn.SiLU(),
        nn.ConvTranspose2d(h2, hidden, 4, stride=2, padding=1), nn.SiLU(),  # H/2
        nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.SiLU(),  # H
        nn.Conv2d(hidden, c_out, 3, padding=1),
    )


class ConvVAE(nn.Module):
    """Convolutional VAE for 8-bit images ``[B, C, H, W]`` in ``[-1, 1]`` with a spatial latent ``[B, c, H/4, W/4]``.

    The encoder halves the resolution twice (stride-2 convolutions) and outputs ``mu`` and
    ``log_std``; the decoder mirrors it with transposed convolutions and outputs, per pixel, a
    logistic location and log-scale (``decoder="logistic"``) or a Bernoulli logit
    (``decoder="bernoulli"``, for images whose pixels are all black or white).

    Args:
        image_shape: ``(C, H, W)``, ``H`` and ``W`` multiples of 4.
        latent_channels: ``c``, channels of the latent.
        hidden: channel width at full resolution (twice that at ``H/4``).
        decoder: ``"logistic"`` (discretized logistic, 256 levels) or ``"bernoulli"``.

    ``config`` holds the constructor arguments; ``latent_shape`` is ``(c, H/4, W/4)``.
    """

    kind = "vae"
    default_lr = 1e-3

    def __init__(
        self, image_shape: Sequence[int] = (1, 28, 28), latent_channels: int = 4, hidden: int = 48,
        decoder: str = "logistic",
    ):
        super().__init__()
        c, h, w = check_image_shape(image_shape, multiple=4)
        latent_channels = positive_int(latent_channels, "latent_channels")
        hidden = positive_int(hidden, "hidden")
        if decoder not in DECODERS:
            raise OptionError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.image_shape = (c, h, w)
        self.latent_shape = (latent_channels, h // 4, w // 4)
        self.decoder_kind = decoder
        self.config: Dict[str, Any] = {
            "image_shape": [c, h, w], "latent_channels": latent_channels, "hidden": hidden, "decoder": decoder,
        }
        self.encoder = _encoder(c, hidden, latent_channels)
        self.decoder = _decoder(2 * c if decoder == "logistic" else c, hidden, latent_channels)

    @property
    def dims(self) -> int:
        """``D = C * H * W``, the number of pixels per image."""
        return math.prod(self.image_shape)

    def encode(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Parameters of ``q(z|x)``.

        Args:
            x: images ``[B, C, H, W]``: floats in ``[-1, 1]`` (used as given) or integer levels ``0..255``.

        Returns:
            ``(mu, log_std)``, each ``[B, *latent_shape]``.
        """
        check_images(x, self.image_shape)
        device, dtype = param_device_dtype(self)
        out = self.encoder(as_model_range(x, dtype).to(device))
        mu, log_std = out.chunk(2, dim=1)
        return mu, log_std

    def decode(self, z: Tensor) -> DecoderParams:
        """The decoder's per-pixel parameters for latents ``z`` ``[B, *latent_shape]`` (a :class:`DecoderParams`)."""
        check_images(z, self.latent_shape, "z")
        out = self.decoder(z)
        if self.decoder_kind == "bernoulli":
            return DecoderParams(out, None)
        loc, log_scale = out.chunk(2, dim=1)
        return DecoderParams(loc, log_scale.clamp(min=MIN_LOG_SCALE))

    def decode_mean(self, z: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in ``[-1, 1]`` for latents ``z``: the logistic locations clipped to
        ``[-1, 1]``, or ``2 p - 1`` for the Bernoulli decoder (the mean image, not a draw)."""
        params = self.decode(z)
        if self.decoder_kind == "bernoulli":
            return 2.0 * torch.sigmoid(params.loc) - 1.0
        return params.loc.clamp(-1.0, 1.0)

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x|z)`` in nats, a discrete log-probability.

        Args:
            x: 8-bit images ``[B, C, H, W]``: integer levels or floats on the grid ``-1 + 2k/255``.
                The Bernoulli decoder needs every pixel at level 0 or 255.
            z: latents ``[B, *latent_shape]``.

        Returns:
            ``[B]``.

        Raises:
            DataError: values off the 8-bit grid (or not binary, for the Bernoulli decoder).
            ShapeError: wrong shapes or batch sizes that differ.
        """
        check_images(x, self.image_shape)
        if z.shape[0] != x.shape[0]:
            raise ShapeError(f"x and z must have the same batch size, got {x.shape[0]} and {z.shape[0]}")
        k = as_levels(x).to(z.device)
        params = self.decode(z)
        if self.decoder_kind == "logistic":
            return _flat_sum(discretized_logistic_log_prob(k, params.loc, params.log_scale), 1)
        if bool(((k != 0) & (k != LEVELS - 1)).any()):
            raise DataError("the Bernoulli decoder needs binary images: every pixel at level 0 (-1.0) or 255 (1.0)")
        target = (k == LEVELS - 1).to(params.loc.dtype)
        return -_flat_sum(F.binary_cross_entropy_with_logits(params.loc, target, reduction="none"), 1)

    def elbo(
        self, x: Tensor, generator: Optional[torch.Generator] = None, n_samples: int = 1, kl_weight: float = 1.0
    ) -> ELBOResult:
        """The ELBO of 8-bit images, in nats (see :func:`gaussian_elbo`; analytic KL against ``N(0, I)``).

        Args:
            x: ``[B, C, H, W]`` integer levels or floats on the 8-bit grid of ``[-1, 1]``.
            generator: source of the latent draws.
            n_samples: latent draws per image.
            kl_weight: weight of the KL in ``objective`` (``elbo`` always has weight 1).

        Returns:
            An :class:`ELBOResult` with ``[B]`` entries.
        """
        check_images(x, self.image_shape)
        check_generator(generator)
        k = as_levels(x).to(param_device_dtype(self)[0])
        mu, log_std = self.encode(k)
        return gaussian_elbo(k, mu, log_std, self.log_px_given_z, n_samples=n_samples, generator=generator,
                             kl_weight=kl_weight)

    def bits_per_dim(self, x: Tensor, generator: Optional[torch.Generator] = None, n_samples: int = 1) -> Tensor:
        """Upper bound on ``-log2 P(x) / D`` from the ELBO: ``-elbo / (D ln 2)``, per image ``[B]``.

        The decoder is discrete, so this bounds the probability of the 8-bit image itself; no
        dequantization term enters. It is a stochastic bound (``n_samples`` latent draws).
        For the Bernoulli decoder it is bits per binary pixel of binarised data.
        """
        return nats_to_bits_per_dim(-self.elbo(x, generator, n_samples).elbo, self.dims)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in ``[-1, 1]``: ``decode_mean(z)`` for ``z ~ N(0, I)`` from ``generator``."""
        n = positive_int(n, "n")
        device, dtype = param_device_dtype(self)
        z = randn((n, *self.latent_shape), generator=generator, device=device, dtype=dtype)
        with torch.no_grad():
            return self.decode_mean(z)

    def configure_optimizers(self, lr: Optional[float] = None) -> Tuple[torch.optim.Optimizer]:
        """``(Adam,)`` with learning rate ``lr`` (default :attr:`default_lr`)."""
        lr = finite_float(self.default_lr if lr is None else lr, "lr", positive=True)
        return (torch.optim.Adam(self.parameters(), lr=lr),)

    def train_step(
        self, x: Tensor, opt: torch.optim.Optimizer, generator: Optional[torch.Generator] = None, kl_weight: float = 1.0
    ) -> Dict[str, float]:
        """One Adam step on ``-objective`` of a batch ``[B, C, H, W]``.

        Returns:
            ``{"loss": -objective in bits/dim, "kl": KL in nats per image}``, batch means.
        """
        result = self.elbo(x, generator, kl_weight=kl_weight)
        loss = nats_to_bits_per_dim(-result.objective.mean(), self.dims)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), 100.0)
        opt.step()
        return {"loss": float(loss.detach()), "kl": float(result.kl.detach().mean())}


__all__ = [
    "ConvVAE", "ELBOResult", "DecoderParams", "gaussian_elbo", "gaussian_entropy", "gaussian_kl_standard",
    "discretized_logistic_log_prob", "DECODERS", "MIN_LOG_SCALE",
]
