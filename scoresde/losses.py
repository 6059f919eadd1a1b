"""Denoising score matching (DSM) losses for training score networks.

For an SDE with Gaussian kernel ``x_t = scale(t) x_0 + std(t) eps``, ``eps ~ N(0, I)``, the
weighted DSM objective (Vincent 2011; Song et al. 2021, eq. 7) is

    L(theta) = E_{t ~ U[eps, T]} E_{x_0} E_{eps} [ lambda(t) || s_theta(x_t, t) + eps / std(t) ||^2 ],

since ``grad_{x_t} log p_{0t}(x_t | x_0) = -eps / std(t)``. Writing ``eps_hat = -std(t) s_theta`` (the
noise prediction every parameterisation of :class:`scoresde.NetworkScore` provides), the same
quantity is ``lambda(t) / std(t)^2 || eps_hat - eps ||^2``, which is how it is computed here: no
division by a tiny ``std`` is ever squared.

Weightings ``lambda(t)``:

* ``"std2"``: ``lambda = std(t)^2``, i.e. ``|| eps_hat - eps ||^2``. With an ``eps``-network this is exactly
  the DDPM loss (Ho et al. 2020, "L_simple"); with a score network on the VE SDE it is the NCSN loss
  (Song & Ermon 2019) without its factor 1/2.
* ``"likelihood"``: ``lambda = g(t)^2`` (Song, Durkan, Murray & Ermon 2021), which makes
  ``(T - eps) / 2 * L`` (with ``reduction="sum"``) part of an upper bound on the negative
  log-likelihood; see :func:`dsm_loss`. Optionally with importance sampling of ``t``.
* ``"min_snr"``: Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
  Strategy"): the noise loss ``|| eps_hat - eps ||^2`` weighted by ``min(SNR(t), gamma) / SNR(t)`` with
  ``SNR = scale^2 / std^2`` and ``gamma = 5``, i.e. ``lambda = std^2 min(SNR, gamma) / SNR``. It caps the
  weight of the nearly noise-free times, whose targets are hardest to predict and whose gradients
  otherwise dominate, and in short trainings reaches a given sample quality in fewer steps.

Reductions: ``"mean"`` averages over every element (a per-dimension loss), ``"sum"`` sums over the
event dimensions and averages over the batch, ``"none"`` returns the per-sample sums ``[B]``.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ._utils import append_dims, as_time, batch_sum, check_batch, event_numel
from ._validation import boolean, finite_float
from .errors import DataError, IncompatibleSDEError, OptionError, ShapeError
from .noise import rand, randn_like
from .score import score_to_eps
from .sde.base import SDE

WEIGHTINGS = ("std2", "likelihood", "min_snr")

#: ``gamma`` of the ``"min_snr"`` weighting (the value Hang et al. 2023 recommend).
MIN_SNR_GAMMA = 5.0
REDUCTIONS = ("mean", "sum", "none")
TIME_SAMPLINGS = ("uniform", "stratified")

#: Number of geometric grid cells of the importance-sampling table.
IS_GRID_SIZE = 16384


# --------------------------------------------------------------------------- time sampling
class ImportanceSampler:
    """Draw ``t`` on ``[eps, T]`` with density ``q(t)`` close to ``g(t)^2 / std(t)^2 / Z``.

    The target ``f(t) = g(t)^2 / std(t)^2`` (the likelihood weighting of ``|| eps_hat - eps ||^2``)
    behaves like ``1/t`` near 0, so the uniform-``t`` estimator of the likelihood-weighted loss has a
    huge variance; sampling ``t ~ f / Z`` and weighting by ``f(t) / ((T - eps) q(t))`` (nearly the
    constant ``Z / (T - eps)``) removes it (Song et al. 2021, Sec. 5).

    Construction (once per ``(sde, eps)``, in float64): a geometric grid ``eps = t_0 < ... < t_n = T``;
    cell masses ``p_i`` from the trapezoidal rule for ``int f(t) dt = int f(t) t d(log t)``; the
    cumulative masses ``C_i``. Sampling: ``u ~ U[0, 1)``, find the cell ``i`` with ``C_i <= u < C_{i+1}``,
    and set ``log t = log t_i + (u - C_i) / p_i * (log t_{i+1} - log t_i)``. The density of this scheme
    is exactly ``q(t) = p_i / (t log(t_{i+1} / t_i))``, so the weights make the estimator exactly
    unbiased, whatever the grid's quadrature error.

    Args:
        sde: an SDE with a Gaussian kernel and ``g(t)^2 / std(t)^2`` finite and positive on ``[eps, T]``.
        eps: lower end of the time interval (``> 0``).
        n: number of grid cells.
    """

    def __init__(self, sde: SDE, eps: float, n: int = IS_GRID_SIZE):
        if not 0 < eps < sde.T:
            raise OptionError(f"importance sampling needs 0 < eps < T = {sde.T}, got eps={eps}")
        self.sde, self.eps, self.T = sde, float(eps), float(sde.T)
        log_t = torch.linspace(math.log(self.eps), math.log(self.T), n + 1, dtype=torch.float64)
        t = log_t.exp()
        f = _likelihood_factor(sde, t)  # g^2 / std^2, [n + 1]
        if not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
            raise IncompatibleSDEError(
                f"importance sampling needs g(t)^2/std(t)^2 finite and positive on [{eps}, {sde.T}] for {sde!r}"
            )
        h = f * t  # integrand in log t
        d_log = log_t[1:] - log_t[:-1]  # [n]
        mass = 0.5 * (h[:-1] + h[1:]) * d_log  # [n], trapezoidal rule per cell
        self.Z = float(mass.sum())  # ~ int_eps^T g^2 / std^2 dt
        self._tables: Dict[Tuple[str, torch.dtype], Tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        p = mass / mass.sum()  # cell probabilities p_i
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), p.cumsum(0)])  # C_0 = 0, ..., C_n = 1
        self._cpu = (log_t, d_log, p, cdf)

    def _table(self, device: torch.device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        key = (str(device), dtype)
        if key not in self._tables:
            self._tables[key] = tuple(a.to(device=device, dtype=dtype) for a in self._cpu)
        return self._tables[key]

    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, device: Union[str, torch.device] = "cpu",
        dtype: torch.dtype = torch.float32, stratified: bool = False,
    ) -> Tuple[Tensor, Tensor]:
        """Draw ``n`` times and their importance weights.

        ``stratified``: one draw of ``u`` in each of ``n`` equal strata of ``[0, 1)`` (so one ``t`` in each
        ``1/n`` of the mass of ``q``); the batch mean stays unbiased with a lower variance.

        Returns:
            ``(t, w)``, each ``[n]`` in ``dtype`` on ``device``: ``t ~ q`` and
            ``w = f(t) / ((T - eps) q(t))``, so ``E_q[w(t) h(t)] = E_{U[eps, T]}[f(t) h(t)]`` for any ``h``.
        """
        log_t, d_log, p, cdf = self._table(torch.device(device))
        u = rand((n,), generator, torch.device(device), log_t.dtype, stratified)
        i = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, p.shape[0] - 1)  # cell index
        v = ((u - cdf[i]) / p[i]).clamp(0.0, 1.0)  # position inside the cell, in [0, 1]
        t = torch.exp(log_t[i] + v * d_log[i]).clamp(self.eps, self.T).to(dtype)  # t ~ q
        t_hi = t.to(log_t.dtype)
        q = p[i] / (t_hi * d_log[i])  # exact density of the scheme at t
        w = _likelihood_factor(self.sde, t_hi) / ((self.T - self.eps) * q)
        return t, w.to(dtype)


_IS_CACHE: "weakref.WeakKeyDictionary[SDE, Dict[Tuple[float, int], ImportanceSampler]]" = weakref.WeakKeyDictionary()


def importance_sampler(sde: SDE, eps: float, n: int = IS_GRID_SIZE) -> ImportanceSampler:
    """The :class:`ImportanceSampler` of ``(sde, eps)``, built once and cached (weakly, per SDE object)."""
    per_sde = _IS_CACHE.setdefault(sde, {})
    key = (float(eps), int(n))
    if key not in per_sde:
        per_sde[key] = ImportanceSampler(sde, eps, n)
    return per_sde[key]


def _likelihood_factor(sde: SDE, t: Tensor) -> Tensor:
    """``g(t)^2 / std(t)^2``, shape ``[B]``: the likelihood weight of ``|| eps_hat - eps ||^2``."""
    _, std = sde.marginal_coeffs(t)
    g = sde.diffusion(t)
    return (g / std) ** 2


# --------------------------------------------------------------------------- the loss
def _check_options(
    sde: SDE, weighting: str, importance_sampling: bool, eps: float, reduction: str, time_sampling: str = "uniform"
) -> None:
    if time_sampling not in TIME_SAMPLINGS:
        raise OptionError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
    if weighting not in WEIGHTINGS:
        raise OptionError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduction not in REDUCTIONS:
        raise OptionError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not sde.has_kernel:
        raise IncompatibleSDEError(f"denoising score matching needs an SDE with a Gaussian kernel; {type(sde).__name__} has none")
    boolean(importance_sampling, "importance_sampling")
    if not (0.0 <= finite_float(eps, "eps") < sde.T):
        raise OptionError(f"eps must lie in [0, T) = [0, {sde.T}), got {eps}")
    if weighting == "likelihood" and not eps > 0:
        raise OptionError("likelihood weighting needs eps > 0 (g^2/std^2 is not integrable at t = 0)")
    if importance_sampling and weighting != "likelihood":
        raise OptionError("importance_sampling applies to weighting='likelihood' only")


def _predict_eps(sde: SDE, model: Any, x_t: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
    """Noise prediction ``eps_hat = -std(t) s(x_t, t[, y])`` from a NetworkScore (or any score function)."""
    extra = () if y is None else (y,)
    out = model.eps(x_t, t, *extra) if hasattr(model, "eps") else score_to_eps(sde, model(x_t, t, *extra), t)
    if out.shape != x_t.shape:
        raise ShapeError(f"the model returned shape {tuple(out.shape)} for x of shape {tuple(x_t.shape)}")
    return out


def dsm_loss(
    sde: SDE,
    model: Any,
    x0: Tensor,
    *,
    weighting: str = "std2",
    importance_sampling: bool = False,
    eps: float = 1e-5,
    reduction: str = "mean",
    generator: Optional[torch.Generator] = None,
    t: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    y: Optional[Tensor] = None,
    p_uncond: float = 0.0,
    time_sampling: str = "uniform",
) -> Tensor:
    """Weighted denoising score matching loss, a Monte-Carlo estimate over one batch.

    ``L = E_t E_{x0} E_eps [ lambda(t) || s_theta(x_t, t) + eps / std(t) ||^2 ]`` with
    ``x_t = scale(t) x0 + std(t) eps``, computed as ``lambda(t) / std(t)^2 || eps_hat - eps ||^2``.

    Args:
        sde: an SDE with a Gaussian kernel (``marginal_coeffs``).
        model: a :class:`scoresde.NetworkScore` (any parameterisation; its ``eps`` method gives the
            noise prediction), or any score function ``score_fn(x, t)``.
        x0: clean data ``[B, *event]``.
        weighting: ``"std2"`` (``lambda = std^2``: the DDPM eps-loss / NCSN loss), ``"likelihood"``
            (``lambda = g^2``) or ``"min_snr"`` (``lambda = std^2 min(SNR, 5) / SNR``, see the module notes).
        importance_sampling: with likelihood weighting, draw ``t`` from ``q(t) ~ g^2 / std^2`` on
            ``[eps, T]`` (see :class:`ImportanceSampler`) and reweight so the expectation is unchanged.
        eps: smallest time; ``t ~ U[eps, T]``.
        time_sampling: ``"uniform"`` (independent times) or ``"stratified"``: the ``i``-th of the ``B``
            times is drawn in the ``i``-th of ``B`` equal slices of ``[eps, T]`` (of the importance
            distribution's mass, with importance sampling). The loss keeps its expectation, with a lower
            variance; the batch must not be sorted by anything the times should not follow (the trainer's
            batches are random draws).
        reduction: ``"mean"`` (average over all elements), ``"sum"`` (sum over event dims, average over
            the batch) or ``"none"`` (per-sample sums over event dims, shape ``[B]``).
        generator: source of ``t`` and noise.
        t: times ``[B]`` to use instead of random ones (not with importance sampling).
        noise: the ``eps`` ``[B, *event]`` to use instead of random noise.
        y: class labels ``[B]`` (integers in ``[0, K)``) for a class-conditional model, called as
            ``model(x_t, t, y)``; ``None`` trains the unconditional score.
        p_uncond: label dropout for classifier-free guidance: each label is replaced by the null
            label ``-1`` with this probability (drawn from ``generator`` after ``t`` and the noise), so
            one network learns both ``s(x, t, y)`` and ``s(x, t, None)``. Ho & Salimans use 0.1 to 0.2.

    Returns:
        A scalar (``[B]`` for ``reduction="none"``).

    With ``weighting="likelihood"`` and ``reduction="sum"`` the expectation of the loss relates to the
    negative log-likelihood of Song et al. (2021, Thm. 1) as, for ``x ~ p_eps`` and ``D`` event elements,

        -E log p_theta(x) <= -E log pi(x_T) + (T - eps) / 2 * E[loss] - D / 2 * log(std(T)^2 / std(eps)^2)

    for SDEs with linear drift (the last term is ``1/2 int_eps^T E[g^2 ||grad log p_0t||^2 + 2 div f] dt``).
    """
    _check_options(sde, weighting, importance_sampling, eps, reduction, time_sampling)
    check_batch(x0, "x0")
    if not x0.is_floating_point():
        raise DataError(f"x0 must be a floating-point tensor, got {x0.dtype}; convert the data first (e.g. to_model_range)")
    if x0.ndim < 2:
        raise ShapeError(f"x0 must have shape [B, *event] with at least one event dim, got {tuple(x0.shape)}")
    # x0- and std-scaled score networks divide by std(t), which vanishes at t = 0
    needs_positive_t = getattr(model, "parameterization", "eps") == "x0" or getattr(model, "scale_by_std", False)
    if needs_positive_t and not eps > 0:
        raise OptionError(f"a {model.parameterization!r}-parameterised model needs eps > 0 (it divides by std(t))")
    B = x0.shape[0]
    if t is None:
        if importance_sampling:
            t, is_weight = importance_sampler(sde, eps).sample(B, generator, x0.device, x0.dtype, time_sampling == "stratified")
        else:
            t = eps + (sde.T - eps) * rand((B,), generator, x0.device, x0.dtype, time_sampling == "stratified")  # t ~ U[eps, T]
    else:
        if importance_sampling:
            raise OptionError("t cannot be given together with importance_sampling=True (the sampler draws t)")
        t = as_time(t, x0, sde.T)
        if needs_positive_t and bool((t <= 0).any()):
            raise OptionError(f"a {model.parameterization!r}-parameterised model needs t > 0 (it divides by std(t))")
    if noise is None:
        noise = randn_like(x0, generator)  # eps ~ N(0, I)
    elif noise.shape != x0.shape:
        raise ShapeError(f"noise must be shaped like x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    else:
        noise = noise.to(x0)

    if not (0.0 <= float(p_uncond) <= 1.0):
        raise OptionError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    if y is not None:
        from .guidance import NULL_LABEL, check_labels

        k = getattr(model, "num_classes", None) if y.device.type == "cpu" else None  # no device sync per step
        y = check_labels(y, k, "y", batch=B).to(x0.device)
        if p_uncond > 0:  # label dropout: the null label with probability p_uncond
            drop = rand((B,), generator, x0.device, x0.dtype) < p_uncond
            y = torch.where(drop, torch.full_like(y, NULL_LABEL), y)
    elif p_uncond:
        raise OptionError("p_uncond applies to class-conditional training; pass the labels y")

    scale, std = sde.marginal_coeffs(t)  # [B] each
    x_t = append_dims(scale, x0.ndim) * x0 + append_dims(std, x0.ndim) * noise  # x_t ~ p_0t(. | x0)
    eps_hat = _predict_eps(sde, model, x_t, t, y)  # -std * s_theta(x_t, t[, y])
    err = batch_sum((eps_hat - noise) ** 2)  # ||eps_hat - eps||^2 = std^2 ||s_theta + eps/std||^2, [B]

    if weighting == "likelihood":
        # lambda / std^2 = g^2 / std^2; under importance sampling the weight is f(t) / ((T - eps) q(t))
        w = is_weight if importance_sampling else _likelihood_factor(sde, t)
        err = w.to(err.dtype) * err
    elif weighting == "min_snr":
        snr = (scale / std) ** 2  # [B]; std > 0 for t > 0 (inf at t = 0 gives weight 0)
        err = (snr.clamp(max=MIN_SNR_GAMMA) / snr).to(err.dtype) * err

    if reduction == "none":
        return err
    if reduction == "sum":
        return err.mean()
    return err.mean() / event_numel(x0)


def ddpm_loss(sde: SDE, model: Any, x0: Tensor, **kwargs: Any) -> Tensor:
    """The DDPM loss ``E || eps_theta(x_t, t) - eps ||^2`` (Ho et al. 2020), per dimension by default.

    :func:`dsm_loss` with ``weighting="std2"`` for a network that predicts noise
    (``parameterization="eps"``); usually with :class:`scoresde.VPSDE`. Keyword arguments are passed
    on (``eps``, ``reduction``, ``generator``, ``t``, ``noise``).

    Raises:
        ValueError: if ``model`` is not an ``eps``-parameterised network or a weighting is given.
    """
    return _std2_special_case("ddpm_loss", "eps", sde, model, x0, kwargs)


def ncsn_loss(sde: SDE, model: Any, x0: Tensor, **kwargs: Any) -> Tensor:
    """The NCSN loss ``E sigma^2 || s_theta(x_t, sigma) + (x_t - x0) / sigma^2 ||^2`` (Song & Ermon 2019).

    :func:`dsm_loss` with ``weighting="std2"`` for a network that predicts the score
    (``parameterization="score"``); usually with :class:`scoresde.VESDE`, where ``x_t = x0 + sigma eps``
    and ``(x_t - x0) / sigma^2 = eps / sigma``. This is twice the loss as written by Song & Ermon
    (no factor 1/2). Keyword arguments are passed on.

    Raises:
        ValueError: if ``model`` is not a ``score``-parameterised network or a weighting is given.
    """
    return _std2_special_case("ncsn_loss", "score", sde, model, x0, kwargs)


def _std2_special_case(name: str, parameterization: str, sde: SDE, model: Any, x0: Tensor, kwargs: dict) -> Tensor:
    """:func:`dsm_loss` with std^2 weighting for a ``parameterization`` network (DDPM and NCSN losses)."""
    if getattr(model, "parameterization", None) != parameterization:
        raise OptionError(f"{name} needs a NetworkScore with parameterization={parameterization!r}")
    if kwargs.pop("weighting", "std2") != "std2" or kwargs.pop("importance_sampling", False):
        raise OptionError(f"{name} uses weighting='std2' without importance sampling; call dsm_loss for others")
    return dsm_loss(sde, model, x0, weighting="std2", **kwargs)


class DSMLoss:
    """A denoising score matching loss with fixed options: ``loss_fn(model, x0, generator) -> scalar``.

    Args:
        sde: the SDE whose kernel perturbs the data.
        weighting: ``"std2"`` or ``"likelihood"`` (see :func:`dsm_loss`).
        importance_sampling: importance-sample ``t`` (likelihood weighting only).
        eps: smallest training time.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        p_uncond: label dropout of class-conditional training (used when labels are passed).
        time_sampling: ``"uniform"`` or ``"stratified"`` times in a batch (see :func:`dsm_loss`).

    Options are validated, and the importance-sampling table built, at construction. ``config``
    holds the options as plain values (for checkpoints and logs).
    """

    def __init__(
        self, sde: SDE, weighting: str = "std2", importance_sampling: bool = False, eps: float = 1e-5,
        reduction: str = "mean", p_uncond: float = 0.0, time_sampling: str = "uniform",
    ):
        _check_options(sde, weighting, importance_sampling, eps, reduction, time_sampling)
        self.time_sampling = time_sampling
        if not (0.0 <= float(p_uncond) <= 1.0):
            raise OptionError(f"p_uncond must lie in [0, 1], got {p_uncond}")
        self.p_uncond = float(p_uncond)
        self.sde = sde
        self.weighting, self.importance_sampling = weighting, bool(importance_sampling)
        self.eps, self.reduction = float(eps), reduction
        if self.importance_sampling:
            importance_sampler(sde, self.eps)  # build (and cache) the table now

    @property
    def config(self) -> Dict[str, Any]:
        """The options as a dict (without the SDE)."""
        opts = dict(weighting=self.weighting, importance_sampling=self.importance_sampling, eps=self.eps, reduction=self.reduction)
        if self.p_uncond:
            opts["p_uncond"] = self.p_uncond
        if self.time_sampling != "uniform":
            opts["time_sampling"] = self.time_sampling
        return opts

    def __call__(
        self, model: Any, x0: Tensor, generator: Optional[torch.Generator] = None, *,
        t: Optional[Tensor] = None, noise: Optional[Tensor] = None, y: Optional[Tensor] = None,
    ) -> Tensor:
        """Loss of ``model`` on the batch ``x0`` ``[B, *event]`` (labels ``y`` ``[B]`` for a conditional model)."""
        return dsm_loss(
            self.sde, model, x0, weighting=self.weighting, importance_sampling=self.importance_sampling,
            eps=self.eps, reduction=self.reduction, generator=generator, t=t, noise=noise, y=y,
            p_uncond=self.p_uncond if y is not None else 0.0, time_sampling=self.time_sampling,
        )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"DSMLoss({self.sde!r}, {opts})"


__all__ = [
    "dsm_loss", "ddpm_loss", "ncsn_loss", "DSMLoss", "ImportanceSampler", "importance_sampler",
    "WEIGHTINGS", "REDUCTIONS", "TIME_SAMPLINGS",
]
