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

from ._utils import append_dims, as_time
from ._validation import boolean, check_generator, positive_int
from .errors import LabelError, OptionError, ShapeError
from .noise import randn
from .sde.base import SDE


def _rowwise_matmul(a: Tensor, m: Tensor, max_elements: int = 2**22) -> Tensor:
    """``a @ m`` (``[B, D] @ [D, K] -> [B, K]``) computed row by row with the same operations whatever ``B``.

    A matrix product blocks its sums differently for different batch sizes, so row ``i`` of ``a @ m`` may
    change in the last bit with the batch. A broadcast product summed over ``D`` reduces every output
    entry in the same order for any ``B``: the exact scores stay batch-invariant bit for bit, which the
    per-sample seeds and step control rely on. Rows are taken in chunks of at most ``max_elements`` products.
    """
    rows = max(1, max_elements // max(1, m.numel()))
    return torch.cat([(a[i:i + rows, :, None] * m[None]).sum(1) for i in range(0, a.shape[0], rows)])


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
        n = positive_int(n, "n")
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
        r = _rowwise_matmul(x - scale[:, None] * self.mean.to(x), U)  # coordinates in the eigenbasis
        return -_rowwise_matmul(r / var, U.T)

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

    def conditional(
        self, x_known: Tensor, mask: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0
    ) -> "tuple[Tensor, Tensor]":
        """Exact conditional of the unknown entries given the known ones (Schur complement).

        With ``K`` the known and ``U`` the unknown entries of ``x ~ p_t = N(mu, C)`` (``p_0`` when
        ``sde`` is ``None``)::

            x_U | x_K ~ N(mu_U + C_UK C_KK^{-1} (x_K - mu_K),  C_UU - C_UK C_KK^{-1} C_KU)

        Args:
            x_known: ``[B, D]``; only the entries where ``mask == 1`` are read (others may be NaN).
            mask: ``[D]`` or ``[B, D]``, 1 (or ``True``) where the entry is known.
            sde, t: condition the diffused data ``p_t`` instead of ``p_0``.

        Returns:
            ``(mean [B, D], cov [B, D, D])``: the known entries of ``mean`` equal ``x_known`` and the
            rows and columns of ``cov`` belonging to known entries are zero.
        """
        if x_known.ndim != 2 or x_known.shape[1] != self.dim:
            raise ShapeError(f"x_known must be [B, {self.dim}], got {tuple(x_known.shape)}")
        B = x_known.shape[0]
        known = torch.as_tensor(mask, device=x_known.device).bool().expand(B, self.dim)
        if sde is None:
            mu, C = self.mean.to(x_known).expand(B, -1), self.cov.to(x_known).expand(B, -1, -1)
        else:
            mu, C = self.marginal(sde, as_time(t, x_known, sde.T))
        means, covs = [], []
        for b in range(B):  # a closed form for tests, not a sampling loop
            k, u = known[b], ~known[b]
            m, c = mu[b].clone(), torch.zeros_like(C[b])
            xk = x_known[b, k]
            if bool(u.any()):
                Cuk, Ckk = C[b][u][:, k], C[b][k][:, k]
                gain = torch.linalg.solve(Ckk, Cuk.T).T if bool(k.any()) else Cuk  # C_UK C_KK^{-1}
                m[u] = mu[b, u] + (gain @ (xk - mu[b, k]) if bool(k.any()) else 0)
                cuu = C[b][u][:, u] - (gain @ Cuk.T if bool(k.any()) else 0)
                idx = u.nonzero().squeeze(1)
                c[idx[:, None], idx[None, :]] = cuu
            m[k] = xk
            means.append(m)
            covs.append(c)
        return torch.stack(means), torch.stack(covs)


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
            raise OptionError(f"weights must be finite, non-negative and not all zero, got {weights.tolist()}")
        if not (bool(torch.isfinite(stds).all()) and bool((stds > 0).all())):
            raise OptionError("stds must be finite and positive")
        if not bool(torch.isfinite(means).all()):
            raise OptionError("means must be finite")
        self.weights = weights / weights.sum()
        self.means, self.stds = means, stds.clone()
        self.event_shape = means.shape[1:]

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def sample(self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False):
        """Draw ``[n, *event]`` samples (and their component labels ``[n]`` if asked)."""
        n, return_labels = positive_int(n, "n"), boolean(return_labels, "return_labels")
        check_generator(generator)
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

    # ----------------------------------------------------------- class-conditional quantities
    def _check_labels(self, y: Tensor, x: Tensor) -> Tensor:
        y = torch.as_tensor(y, device=x.device)
        if y.ndim == 0:
            y = y.expand(x.shape[0])
        if y.shape != (x.shape[0],) or y.is_floating_point():
            raise ShapeError(f"y must be integer component labels [B] = [{x.shape[0]}], got {tuple(y.shape)} {y.dtype}")
        K = self.n_components
        if y.numel() and (bool((y < 0).any()) or bool((y >= K).any())):
            raise LabelError(f"y must hold component labels in [0, {K}), got values in [{int(y.min())}, {int(y.max())}]")
        return y.long()

    def component_score(self, x: Tensor, y: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """``grad_x log p_t(x | y)``: the diffused score of component ``y[b]`` for each sample.

        Args:
            x: ``[B, *event]``.
            y: ``[B]`` integer component labels (or one int for every sample).

        Returns:
            Shaped like ``x``: ``-(x - scale m_y) / (scale^2 s_y^2 + std^2)``.
        """
        y = self._check_labels(y, x)
        _, diff, var = self._component_log_probs(x, sde, t)  # [B, K, *event] each
        idx = append_dims(y, diff.ndim).expand(-1, 1, *diff.shape[2:])
        return -(diff.gather(1, idx) / var.expand_as(diff).gather(1, idx)).squeeze(1)

    def conditional_score_fn(self, sde: SDE):
        """The exact conditional score ``(x, t, y) -> grad_x log p_t(x | y)``.

        ``y`` is a ``[B]`` tensor of component labels, or ``None`` for the mixture score
        ``grad_x log p_t(x)``; entries equal to ``-1`` (:data:`scoresde.guidance.NULL_LABEL`) also give
        the mixture score for those samples. This is the ``cond_score_fn`` of :mod:`scoresde.guidance`
        with the component as the class.
        """
        def cond_score(x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
            if y is None:
                return self.score(x, sde, t)
            null = torch.as_tensor(y, device=x.device) < 0  # NULL_LABEL (-1): the unconditional score for that sample
            if not bool(null.any()):
                return self.component_score(x, y, sde, t)
            s_c = self.component_score(x, torch.where(null, torch.zeros_like(y), y), sde, t)
            return torch.where(append_dims(null, x.ndim), self.score(x, sde, t), s_c)

        cond_score.num_classes = self.n_components  # type: ignore[attr-defined]
        cond_score.accepts_null_label = True  # type: ignore[attr-defined]
        return cond_score

    def posterior_logits(self, x: Tensor, sde: Optional[SDE] = None, t: Union[Tensor, float] = 0.0) -> Tensor:
        """Logits ``[B, K]`` of the exact noisy posterior ``p(y | x_t)``.

        ``log w_k + log N(x; scale m_k, scale^2 s_k^2 + std^2)``; their softmax is
        :meth:`responsibilities` and ``grad_x log_softmax(logits)[y] = grad log p_t(x | y) - grad log p_t(x)``.
        """
        lp, _, _ = self._component_log_probs(x, sde, t)
        return lp

    def classifier(self, sde: SDE):
        """The exact noise-conditional classifier ``(x, t) -> logits [B, K]`` (see :meth:`posterior_logits`)."""
        def clf(x: Tensor, t: Tensor) -> Tensor:
            return self.posterior_logits(x, sde, t)

        clf.num_classes = self.n_components  # type: ignore[attr-defined]
        return clf
