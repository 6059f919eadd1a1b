"""Latent score SDEs: an autoencoder compresses images, a score SDE models its codes, the decoder maps samples back.

The autoencoder is a VAE (:class:`scoresde.baselines.ConvVAE`: Gaussian encoder ``q(z|x)``, a discrete
decoder ``p(x|z)`` over the 256 levels of 8-bit images). The score SDE is trained, like any other, on the
codes ``u = s z`` of the training images, where ``z`` is the encoder's mean (``use="mean"``) or a draw
from ``q(z|x)`` (``use="sample"``) and the scale ``s`` makes the codes' standard deviation 1 (the
scale the SDE's prior expects; ``scale=1`` keeps them as they are). Sampling draws codes with any solver
and decodes them.

**A likelihood bound.** With ``p_SDE`` the score SDE's density of codes (exact, through the
probability-flow ODE), the marginal ``p(x) = int p(x|z) p_SDE(z) dz`` satisfies

    -log p(x) <= E_q[-log p(x|z)] - E_q[log p_SDE(z)] - H[q(z|x)],

where ``p_SDE(z) = p_u(s z) s^d`` (``d`` latent dimensions; the change of variables of the scaling) and
``H[q] = sum log std + d/2 log(2 pi e)`` is the encoder's entropy. The decoder is discrete, so the bound
is on ``-log P(x)`` of the 8-bit image itself, in bits per pixel after division by ``D ln 2``. The
expectation over ``q`` is a Monte-Carlo average over ``n_samples`` draws; :class:`LatentBound` reports
its standard error (which also covers the Hutchinson estimate of ``log p_SDE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ._validation import check_generator, choice, finite_float, positive_int
from .baselines._train import as_levels, check_images
from .baselines.vae import ConvVAE, gaussian_entropy
from .checkpoint import load_artifact, save_artifact
from .errors import CheckpointError, OptionError, ShapeError
from .likelihood import log_likelihood
from .noise import randn
from .sde.base import SDE, ScoreFn

__all__ = ["LatentSpace", "LatentBound", "latent_bound", "CODE_USES", "save_autoencoder", "load_autoencoder",
           "fit_code_scale"]

#: What a code is: the encoder's mean, or a draw from q(z|x).
CODE_USES = ("mean", "sample")
#: Artifact kind of an autoencoder file.
AUTOENCODER_KIND = "autoencoder"
AUTOENCODER_VERSION = 1
PathLike = Union[str, "Path"]


@dataclass
class LatentBound:
    """What :meth:`LatentSpace.bound` returns (per image, ``[B]``; float64, on the CPU).

    Attributes:
        bits_per_dim: the bound on ``-log2 P(x) / D``, averaged over the latent draws.
        stderr: its Monte-Carlo standard error over the draws (NaN with one draw).
        recon: ``E_q[log p(x|z)]`` in nats.
        log_prior: ``E_q[log p_SDE(z)]`` in nats.
        entropy: ``H[q(z|x)]`` in nats (analytic; the bound's estimator uses ``-log q(z|x)`` of each draw, whose
            mean it is).
        nfe: score evaluations of the likelihood ODEs.
    """

    bits_per_dim: Tensor
    stderr: Tensor
    recon: Tensor
    log_prior: Tensor
    entropy: Tensor
    nfe: int


class LatentSpace:
    """The autoencoder side of a latent score SDE: codes of images, images of codes, and the likelihood bound.

    Args:
        vae: a trained :class:`~scoresde.baselines.ConvVAE`.
        scale: ``s``, the codes are ``u = s z`` (a positive number).
        use: ``"mean"`` (codes of the encoder's means) or ``"sample"`` (of draws from ``q(z|x)``).

    Attributes:
        event_shape: the shape of one code, ``(c, H/4, W/4)``; image_shape: of one image, ``(C, H, W)``.
    """

    def __init__(self, vae: ConvVAE, scale: float = 1.0, use: str = "mean"):
        if not isinstance(vae, ConvVAE):
            raise OptionError(f"vae must be a scoresde.baselines.ConvVAE, got {type(vae).__name__}")
        self.vae = vae.eval().requires_grad_(False)
        self.scale = finite_float(scale, "scale", positive=True)
        self.use = choice(use, "use", CODE_USES)
        self.event_shape = tuple(vae.latent_shape)
        self.image_shape = tuple(vae.image_shape)

    @property
    def dims(self) -> int:
        """``D``, pixels per image."""
        return math.prod(self.image_shape)

    def to(self, device: Union[str, torch.device]) -> "LatentSpace":
        """Move the autoencoder to ``device``; returns ``self``."""
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, x: Tensor, generator: Optional[torch.Generator] = None, batch_size: int = 500) -> Tensor:
        """Codes ``u = s z`` ``[B, *event_shape]`` of images ``x`` ``[B, C, H, W]`` (levels or floats in ``[-1, 1]``)."""
        check_images(x, self.image_shape)
        check_generator(generator)
        device = next(self.vae.parameters()).device
        out = []
        for i in range(0, x.shape[0], positive_int(batch_size, "batch_size")):
            mu, log_std = self.vae.encode(x[i:i + batch_size].to(device))
            z = mu if self.use == "mean" else mu + torch.exp(log_std) * randn(mu.shape, generator, mu.device, mu.dtype)
            out.append(self.scale * z)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, u: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in ``[-1, 1]`` of codes ``u`` ``[B, *event_shape]`` (the decoder's mean image)."""
        if not isinstance(u, Tensor) or tuple(u.shape[1:]) != self.event_shape:
            raise ShapeError(f"codes must be [B, *{self.event_shape}], got {tuple(getattr(u, 'shape', ()))}")
        device = next(self.vae.parameters()).device
        return self.vae.decode_mean(u.to(device, torch.float32) / self.scale)

    def bound(self, x: Tensor, sde: SDE, score_fn: ScoreFn, *, n_samples: int = 1,
              generator: Optional[torch.Generator] = None, **likelihood_options: Any) -> LatentBound:
        """The bound on ``-log2 P(x) / D`` of 8-bit images ``x`` ``[B, C, H, W]`` (see the module notes).

        Args:
            x: images: integer levels or floats on the 8-bit grid of ``[-1, 1]``.
            sde, score_fn: the score SDE of the codes.
            n_samples: draws of ``z ~ q(z|x)`` per image (the standard error needs at least 2).
            generator: source of the draws and of the likelihood's probes.
            **likelihood_options: for :func:`scoresde.log_likelihood` (``trace``, ``rtol``, ``atol``, ...).
        """
        check_images(x, self.image_shape)
        device = next(self.vae.parameters()).device
        k = as_levels(x).to(device)
        with torch.no_grad():
            mu, log_std = self.vae.encode(k)
        return latent_bound(k, mu, log_std, self.vae.log_px_given_z, sde, score_fn, scale=self.scale, dims=self.dims,
                            n_samples=n_samples, generator=generator, **likelihood_options)

    def state(self) -> Dict[str, Any]:
        """What an autoencoder file holds (plain values and tensors)."""
        return {"config": dict(self.vae.config), "weights": {k: v.detach().cpu() for k, v in self.vae.state_dict().items()},
                "scale": self.scale, "use": self.use}


def latent_bound(x: Tensor, mu: Tensor, log_std: Tensor, log_px_given_z: Any, sde: SDE, score_fn: ScoreFn, *,
                 scale: float = 1.0, dims: int, n_samples: int = 1, generator: Optional[torch.Generator] = None,
                 **likelihood_options: Any) -> LatentBound:
    """``-log p(x) <= E_q[-log p(x|z)] - E_q[log p_SDE(z)] - H[q(z|x)]``, in bits per dimension, for any Gaussian encoder.

    Args:
        x: the data ``[B, *event]``, as ``log_px_given_z`` takes it.
        mu, log_std: the encoder's ``q(z|x) = N(mu, diag(exp(2 log_std)))``, each ``[B, *latent]``.
        log_px_given_z: ``f(x [B, *event], z [B, *latent]) -> [B]``, ``log p(x|z)`` in nats.
        sde, score_fn: the score SDE of the codes ``u = scale * z``; ``log p_SDE(z) = log p_u(scale z) + d log scale``.
        dims: ``D``, the dimension the bits are per.
        n_samples: draws of ``z`` per point (their spread gives the standard error).
        generator: source of the draws and of the likelihood's probes.
        **likelihood_options: for :func:`scoresde.log_likelihood`.
    """
    n = positive_int(n_samples, "n_samples")
    positive_int(dims, "dims")
    scale = finite_float(scale, "scale", positive=True)
    B, d = mu.shape[0], math.prod(mu.shape[1:])
    entropy = gaussian_entropy(log_std).double().cpu()  # [B]
    # all draws at once: point i's draws are rows i, B + i, 2B + i, ... of one batch [n B, *latent]
    eps = randn((n, *mu.shape), generator, mu.device, mu.dtype)
    z = (mu + torch.exp(log_std) * eps).reshape(n * B, *mu.shape[1:])
    log_q = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).reshape(n, B, -1).sum(2).double().cpu()
    x_rep = x.unsqueeze(0).expand(n, *x.shape).reshape(n * B, *x.shape[1:])
    with torch.no_grad():
        rec = log_px_given_z(x_rep, z).double().cpu().reshape(n, B)
    res = log_likelihood(sde, score_fn, (scale * z).double(), generator=generator, score_dtype=mu.dtype,
                         **likelihood_options)
    lp = (res.log_prob.detach().double().cpu() + d * math.log(scale)).reshape(n, B)  # p_z(z) = p_u(s z) s^d
    # -[log p(x|z) + log p(z) - log q(z|x)]: its mean over q is the bound, and it has no variance when q is the
    # exact posterior (the analytic entropy in its place has the same mean but keeps the variance)
    draws = -(rec + lp - log_q) / (dims * math.log(2.0))  # [n, B]
    stderr = draws.std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(draws[0], float("nan"))
    return LatentBound(draws.mean(0), stderr, rec.mean(0), lp.mean(0), entropy, res.nfe)


@torch.no_grad()
def fit_code_scale(vae: ConvVAE, images: Tensor, use: str = "mean", generator: Optional[torch.Generator] = None,
                   batch_size: int = 500) -> float:
    """The scale ``s = 1 / std`` that gives the codes of ``images`` ``[N, C, H, W]`` unit standard deviation."""
    codes = LatentSpace(vae, 1.0, use).encode(images, generator, batch_size)
    std = float(codes.double().std())
    if not (math.isfinite(std) and std > 0):
        raise OptionError(f"the codes of these images have standard deviation {std}; the autoencoder is degenerate")
    return 1.0 / std


#: A latent run's copy of its autoencoder.
AUTOENCODER_FILE = "autoencoder.pt"


def latent_space_of(config: Any, run: Optional[PathLike] = None) -> LatentSpace:
    """The autoencoder of a latent run: the run's own copy (``run/autoencoder.pt``) if there is one, else ``config.latent``."""
    own = None if run is None else Path(run) / AUTOENCODER_FILE
    space, _ = load_autoencoder(own if own is not None and own.is_file() else config.latent)
    return space


def save_autoencoder(path: PathLike, space: LatentSpace, **metadata: Any) -> Path:
    """Write a :class:`LatentSpace` (the VAE, the code scale and use, and ``metadata`` such as the data set)."""
    return save_artifact(path, AUTOENCODER_KIND, AUTOENCODER_VERSION, {**space.state(), "metadata": metadata})


def load_autoencoder(path: PathLike, device: Optional[Union[str, torch.device]] = None) -> Tuple[LatentSpace, Dict[str, Any]]:
    """Read an autoencoder file written by :func:`save_autoencoder` (or by ``scoresde train-autoencoder``).

    Returns:
        ``(space, metadata)``: the :class:`LatentSpace` on ``device`` and the stored metadata.

    Raises:
        CheckpointError: missing, unreadable, damaged, or not an autoencoder file.
    """
    state = load_artifact(path, AUTOENCODER_KIND, (AUTOENCODER_VERSION,),
                          hint="write one with `scoresde train-autoencoder`")
    try:
        vae = ConvVAE(**state["config"])
        vae.load_state_dict(state["weights"])
        space = LatentSpace(vae, float(state["scale"]), str(state["use"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the stored autoencoder cannot be rebuilt: {e}") from None
    if device is not None:
        space.to(device)
    return space, dict(state.get("metadata") or {})
