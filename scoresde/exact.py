"""Data distributions whose diffused marginals, scores and densities are known in closed form.

For an SDE with kernel ``x_t = scale(t) x_0 + std(t) z``, Gaussian data ``N(m, S)`` diffuses to
``N(scale m, scale^2 S + std^2 I)`` and a Gaussian mixture to the mixture of the diffused
components. These give exact score functions for testing samplers and likelihoods, and exact
densities to compare against.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._utils import append_dims, as_time, randn
from .errors import ShapeError
from .sde.base import SDE


class Gaussian:
    """Gaussian data ``N(mean, cov)`` on vectors of dimension ``D``.

    Args:
        mean: ``[D]``.
        cov: ``[D, D]`` symmetric positive (semi-)definite covariance.
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        mean = torch.as_tensor(mean)
        cov = torch.as_tensor(cov, dtype=mean.dtype)
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ShapeError(f"need mean [D] and cov [D, D], got {tuple(mean.shape)} and {tuple(cov.shape)}")
        self.mean, self.cov = mean, cov
        self.dim = mean.shape[0]
        # cov = U diag(lam) U^T: every diffused covariance scale^2 cov + std^2 I shares the eigenbasis U
        self._lam, self._U = torch.linalg.eigh(cov)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw ``[n, D]`` samples."""
        L = torch.linalg.cholesky(self.cov + 1e-12 * torch.eye(self.dim, dtype=self.cov.dtype))
        return self.mean + randn((n, self.dim), generator=generator, dtype=self.mean.dtype) @ L.T

    def marginal(self, sde: SDE, t: Tensor):
        """Mean ``[B, D]`` and covariance ``[B, D, D]`` of ``p_t`` at times ``t`` ``[B]``."""
        scale, std = sde.marginal_coeffs(t)
        mean = scale[:, None] * self.mean.to(t)
        cov = scale[:, None, None] ** 2 * self.cov.to(t) + std[:, None, None] ** 2 * torch.eye(self.dim).to(t)
        return mean, cov

    def log_prob(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """``log p_t(x)``, ``[B, D] -> [B]`` (``p_0`` when ``sde`` is ``None``)."""
        mean, cov = self._moments(x, sde, t)
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)

    def score(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """``grad_x log p_t(x) = -C_t^{-1} (x - scale m)``, ``[B, D] -> [B, D]``."""
        U, lam = self._U.to(x), self._lam.to(x)
        if sde is None:
            scale, var = torch.ones_like(x[:, 0]), lam.expand(x.shape[0], -1)
        else:
            scale, std = sde.marginal_coeffs(as_time(t, x, sde.T))
            var = scale[:, None] ** 2 * lam + std[:, None] ** 2  # eigenvalues of C_t, [B, D]
        r = (x - scale[:, None] * self.mean.to(x)) @ U
        return -(r / var) @ U.T

    def score_fn(self, sde: SDE):
        """The exact score function ``(x, t) -> score`` of the diffused data under ``sde``."""
        return lambda x, t: self.score(x, sde, t)

    def entropy(self) -> float:
        """Differential entropy of the data distribution in nats."""
        return float(0.5 * torch.logdet(2 * math.pi * math.e * self.cov.double()))

    def _moments(self, x: Tensor, sde: Optional[SDE], t):
        if sde is None:
            B = x.shape[0]
            return self.mean.to(x).expand(B, -1), self.cov.to(x).expand(B, -1, -1)
        return self.marginal(sde, as_time(t, x, sde.T))


class GaussianMixture:
    """Mixture of Gaussians with diagonal covariances on data of any event shape.

    Args:
        weights: ``[K]`` mixture weights (normalised internally).
        means: ``[K, *event]`` component means.
        stds: ``[K, *event]`` or ``[K]`` (isotropic) component standard deviations.
    """

    def __init__(self, weights: Union[Sequence[float], Tensor], means: Tensor, stds: Union[Tensor, float]):
        means = torch.as_tensor(means)
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if weights.ndim != 1 or means.shape[0] != weights.shape[0] or means.ndim < 2:
            raise ShapeError(f"need weights [K] and means [K, *event], got {tuple(weights.shape)} and {tuple(means.shape)}")
        stds = torch.as_tensor(stds, dtype=means.dtype)
        if stds.ndim <= 1:
            stds = append_dims(stds.expand(means.shape[0]), means.ndim).expand_as(means)
        if stds.shape != means.shape:
            raise ShapeError(f"stds must be [K] or shaped like means {tuple(means.shape)}, got {tuple(stds.shape)}")
        if not (bool(torch.isfinite(weights).all()) and bool((weights >= 0).all()) and float(weights.sum()) > 0):
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights.tolist()}")
        if not (bool(torch.isfinite(stds).all()) and bool((stds > 0).all())):
            raise ValueError("stds must be finite and positive")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite")
        self.weights = weights / weights.sum()
        self.means, self.stds = means, stds.clone()
        self.event_shape = means.shape[1:]

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def sample(self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False):
        """Draw ``[n, *event]`` samples (and their component labels ``[n]`` if asked)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = randn((n, *self.event_shape), generator=generator, dtype=self.means.dtype)
        x = self.means[k] + self.stds[k] * z
        return (x, k) if return_labels else x

    def _component_log_probs(self, x: Tensor, sde: Optional[SDE], t) -> Tensor:
        """``log w_k + log N(x; scale m_k, scale^2 s_k^2 + std^2)``: ``[B, K]``."""
        means, stds = self.means.to(x), self.stds.to(x)
        if sde is None:
            mu = means.unsqueeze(0)
            var = (stds**2).unsqueeze(0)
        else:
            t = as_time(t, x, sde.T)
            scale, std = sde.marginal_coeffs(t)
            sc = append_dims(scale, x.ndim + 1)
            mu = sc * means.unsqueeze(0)
            var = sc**2 * (stds**2).unsqueeze(0) + append_dims(std, x.ndim + 1) ** 2
        diff = x.unsqueeze(1) - mu
        lp = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var))
        return lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1) + self.weights.to(x).log(), diff, var

    def log_prob(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """``log p_t(x)``: ``[B, *event] -> [B]`` (``p_0`` when ``sde`` is ``None``)."""
        lp, _, _ = self._component_log_probs(x, sde, t)
        return torch.logsumexp(lp, dim=1)

    def responsibilities(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """Posterior component probabilities ``[B, K]``."""
        lp, _, _ = self._component_log_probs(x, sde, t)
        return torch.softmax(lp, dim=1)

    def score(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """``grad_x log p_t(x)``, shaped like ``x``."""
        lp, diff, var = self._component_log_probs(x, sde, t)
        r = append_dims(torch.softmax(lp, dim=1), diff.ndim)
        return (r * (-diff / var)).sum(1)

    def score_fn(self, sde: SDE):
        """The exact score function ``(x, t) -> score`` of the diffused data under ``sde``."""
        return lambda x, t: self.score(x, sde, t)

    def mean(self) -> Tensor:
        """Mixture mean, ``[*event]``."""
        return (append_dims(self.weights, self.means.ndim) * self.means).sum(0)
