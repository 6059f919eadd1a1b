"""Side-by-side comparison with peer libraries on the same exact score function and NFE.

Peers (installed through the ``[bench]`` extra, never by the core install):

* diffusers: ``ScoreSdeVeScheduler`` (the predictor–corrector sampler of score SDEs, VE) against
  our ``pc``; and its discrete-time schedulers on the DDPM schedule, driven by the same score
  through the noise-prediction convention: ``DDIMScheduler`` (vs ``ddim``),
  ``EulerDiscreteScheduler`` (Karras et al.'s Euler, which on VP is DDIM again),
  ``HeunDiscreteScheduler`` (vs ``ode:heun``), ``DPMSolverMultistepScheduler`` (DPM-Solver++(2M),
  no direct analog here), ``EulerAncestralDiscreteScheduler`` and ``DDPMScheduler`` (vs ``ancestral``).
* k-diffusion: ``sample_euler``, ``sample_heun``, ``sample_dpmpp_2m``, ``sample_euler_ancestral``
  and ``log_likelihood``, on the denoiser convention ``D(x; sigma)``, when its ``sampling``
  module imports (it is loaded on its own, without the package's heavy top-level imports).

The mapping between conventions is exact. With the kernel ``x_t = scale(t) x_0 + std(t) z`` the
noise-to-signal ratio ``sigma = std / scale`` labels the noise level in every library: a peer
asking for the model at ``sigma`` gets our score at ``t = t(sigma)`` (inverting
:meth:`scoresde.SDE.noise_to_signal`), with

    eps(x_vp; sigma)   = -std(t) score(x_vp, t)                      (diffusers, VP)
    D(x_sigma; sigma)  = (x + std^2 score(x, t)) / scale,  x = scale x_sigma   (k-diffusion)
    score(x; sigma)    = score(x, t)                                  (ScoreSdeVeScheduler)

with the conversions of :mod:`scoresde.score` (``score_to_eps``, ``tweedie_denoise``). Quality is
the same as in ``solvers_bench.py``: SW2 to true samples and ``dlogp``, averaged over seeds, with the
standard error over seeds. Model calls are counted with :class:`scoresde.CountedScore`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
import os
import statistics
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde
from scoresde import SDE, CountedScore, append_dims
from scoresde.checkpoint import build_sde
from scoresde.exact import Gaussian
from scoresde.score import score_to_eps, tweedie_denoise

from common import Profile, error_text, exact_score, get_profile, mean_se, package_version, quality_reference, timed
from solvers_bench import FIXED_CONFIGS, SolverConfig, fit_steps

_CONFIGS = {c.label: c for c in FIXED_CONFIGS}
#: Our deterministic solvers, the candidates for "our best at this NFE" against a method we lack.
DETERMINISTIC = ("ddim", "ode:euler", "ode:heun", "ode:rk4")


# --------------------------------------------------------------------------- score conventions
def time_at_sigma(sde: SDE, sigma: Tensor) -> Tensor:
    """The time ``t`` with ``std(t) / scale(t) = sigma``, clamped to ``[0, T]``; ``[B] -> [B]``."""
    return sde.time_at_noise_to_signal(sigma.double()).clamp(0.0, sde.T).to(sigma.dtype)


def eps_model(sde: SDE, score_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Noise prediction at noise-to-signal ratio ``sigma``: ``(x_vp [B, *event], sigma [B]) -> eps``."""

    def eps(x: Tensor, sigma: Tensor) -> Tensor:
        t = time_at_sigma(sde, sigma)
        return score_to_eps(sde, score_fn(x, t), t)

    return eps


def denoiser(sde: SDE, score_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """k-diffusion's denoiser ``D(x_sigma; sigma) = E[x_0 | x_sigma]`` with ``x_sigma = x_t / scale(t)``."""

    def D(x_sigma: Tensor, sigma: Tensor) -> Tensor:
        t = time_at_sigma(sde, sigma)
        scale, _ = sde.marginal_coeffs(t)
        return tweedie_denoise(sde, score_fn, append_dims(scale, x_sigma.ndim) * x_sigma, t)

    return D


# --------------------------------------------------------------------------- peers: loading
def load_diffusers() -> types.ModuleType:
    """Import diffusers (raises ``ImportError`` with the reason when it is missing)."""
    import diffusers

    return diffusers


def load_k_diffusion_sampling() -> types.ModuleType:
    """Import ``k_diffusion.sampling`` without running the package's ``__init__``.

    The package's top level imports its training, evaluation and model code (with clean-fid,
    CLIP, kornia, wandb, ...); the sampling module needs only ``k_diffusion.utils`` beside torch,
    scipy, torchdiffeq and torchsde. The installed package directory is registered as a bare
    package and ``sampling`` imported from it; nothing is replaced. Raises ``ImportError`` with the
    reason when that fails.
    """
    try:
        dist = importlib.metadata.distribution("k-diffusion")
    except importlib.metadata.PackageNotFoundError as e:
        raise ImportError("k-diffusion is not installed (pip install 'scoresde[bench]')") from e
    files = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith("k_diffusion/sampling.py")]
    if not files:
        raise ImportError("k-diffusion is installed but k_diffusion/sampling.py was not found")
    pkg_dir = os.path.dirname(str(dist.locate_file(files[0])))
    if "k_diffusion" in sys.modules and hasattr(sys.modules["k_diffusion"], "sampling"):
        return sys.modules["k_diffusion"].sampling
    created = "k_diffusion" not in sys.modules
    if created:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = [pkg_dir]  # a bare package: submodules import, __init__ does not run
        sys.modules["k_diffusion"] = pkg
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception as e:
        for name in [m for m in sys.modules if m == "k_diffusion" or m.startswith("k_diffusion.")]:
            if created:
                del sys.modules[name]
        raise ImportError(f"k_diffusion.sampling does not import: {error_text(e)}") from e


# --------------------------------------------------------------------------- diffusers drivers
def diffusers_pc_sample(
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    steps: int,
    generator: torch.Generator,
    snr: float,
    eps: float,
    correct_steps: int = 1,
) -> Tuple[Tensor, int]:
    """Sample with diffusers' ``ScoreSdeVeScheduler`` as its ``ScoreSdeVePipeline`` does.

    The pipeline's loop (which needs a ``UNet2DModel``) with the model replaced by our score at
    the scheduler's noise level: ``correct_steps`` Langevin corrections, then the reverse-diffusion
    predictor, for each of ``steps`` levels; the output is the last predictor mean.

    Returns:
        ``(samples [B, *event], nfe)``.
    """
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(
        snr=snr, sigma_min=sde.sigma_min, sigma_max=sde.sigma_max, sampling_eps=eps, correct_steps=correct_steps
    )
    log_ratio = math.log(sde.sigma_max / sde.sigma_min)
    # the scheduler's sigma is the VE schedule's sigma(t) = sigma_min (sigma_max / sigma_min)^t
    model = CountedScore(lambda x, sigma: score_fn(x, (torch.log(sigma / sde.sigma_min) / log_ratio).clamp(0.0, sde.T)))
    sched.set_timesteps(steps)
    sched.set_sigmas(steps)
    x = torch.randn(tuple(shape), generator=generator) * sched.init_noise_sigma
    x_mean = x
    for i, t in enumerate(sched.timesteps):
        sigma_t = sched.sigmas[i] * torch.ones(shape[0])
        for _ in range(sched.config.correct_steps):
            x = sched.step_correct(model(x, sigma_t), x, generator=generator).prev_sample
        out = sched.step_pred(model(x, sigma_t), t, x, generator=generator)
        x, x_mean = out.prev_sample, out.prev_sample_mean
    return x_mean, model.nfe


#: The diffusers discrete-time schedulers compared, with our counterpart(s) and constructor options.
DIFFUSERS_DISCRETE: Tuple[Tuple[str, Tuple[str, ...], Dict[str, Any]], ...] = (
    ("DDIMScheduler", ("ddim",), {"clip_sample": False, "timestep_spacing": "trailing", "set_alpha_to_one": True}),
    ("EulerDiscreteScheduler", ("ddim", "ode:euler"), {"timestep_spacing": "linspace"}),
    ("HeunDiscreteScheduler", ("ode:heun",), {"timestep_spacing": "linspace"}),
    (
        "DPMSolverMultistepScheduler",
        DETERMINISTIC,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "linspace"},
    ),
    ("EulerAncestralDiscreteScheduler", ("ancestral",), {"timestep_spacing": "linspace"}),
    ("DDPMScheduler", ("ancestral",), {"clip_sample": False, "timestep_spacing": "trailing"}),
)
_DDPM_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon"
)


def diffusers_discrete_sample(
    scheduler_name: str,
    options: Dict[str, Any],
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    steps: int,
    generator: torch.Generator,
    record_sigmas: Optional[List[float]] = None,
) -> Tuple[Tensor, int]:
    """Sample with a diffusers scheduler on the DDPM linear-beta schedule (1000 steps, 1e-4 to 0.02).

    The scheduler sees a noise-prediction model; the noise level of each call is decoded from
    the timestep with the scheduler's own training schedule,
    ``sigma(k) = sqrt((1 - alphabar_k) / alphabar_k)`` (linearly interpolated at fractional ``k``,
    as the schedulers do), and the model returns ``-std(t) score(x, t)`` at ``t = t(sigma)`` of
    our VP SDE, whose kernel at that ``t`` has exactly that noise-to-signal ratio. The noise level
    of every call is appended to ``record_sigmas`` when given (the peer's time grid).

    Returns:
        ``(samples [B, *event], nfe)``.
    """
    import diffusers

    cls = getattr(diffusers, scheduler_name)
    sched = cls(**_DDPM_SCHEDULE, **options)
    alphas_cumprod = sched.alphas_cumprod.double()
    train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    eps = CountedScore(eps_model(sde, score_fn))

    def sigma_at(timestep: Tensor) -> Tensor:
        k = torch.as_tensor(timestep, dtype=torch.float64).clamp(0, len(train_sigmas) - 1)
        lo = k.floor().long()
        hi = (lo + 1).clamp_max(len(train_sigmas) - 1)
        w = k - lo.double()
        return (1 - w) * train_sigmas[lo] + w * train_sigmas[hi]

    sched.set_timesteps(steps)
    accepts_generator = "generator" in inspect.signature(sched.step).parameters
    x = torch.randn(tuple(shape), generator=generator) * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        sigma = sigma_at(t).to(x.dtype).expand(shape[0])
        if record_sigmas is not None:
            record_sigmas.append(float(sigma[0]))
        out = eps(x_in, sigma)
        kwargs = {"generator": generator} if accepts_generator else {}
        x = sched.step(out, t, x, **kwargs).prev_sample
    return x, eps.nfe


# --------------------------------------------------------------------------- k-diffusion drivers
#: k-diffusion samplers compared, with our counterpart(s).
K_SAMPLERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("sample_euler", ("ddim", "ode:euler")),
    ("sample_heun", ("ode:heun",)),
    ("sample_dpmpp_2m", DETERMINISTIC),
    ("sample_euler_ancestral", ("ancestral",)),
)


def k_sigmas(sde: SDE, nfe: int, sampler: str, eps: float = 1e-3) -> Tensor:
    """k-diffusion sigmas for ``nfe`` evaluations on our uniform time grid from ``T`` to ``eps``, then 0.

    ``[sigma(t_0), ..., sigma(t_{n-1}), 0]``: ``n`` steps, the last from ``sigma(eps)`` to 0 being
    the final denoising step our solvers also take. Heun uses two evaluations per step except
    the last (``n = (nfe + 1) / 2`` steps).
    """
    n = (nfe + 1) // 2 if sampler == "sample_heun" else nfe
    t = torch.linspace(sde.T, eps, n, dtype=torch.float64)
    return torch.cat([sde.noise_to_signal(t), torch.zeros(1, dtype=torch.float64)])


def k_sample(
    sampling: types.ModuleType,
    sampler: str,
    sde: SDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    nfe: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Tuple[Tensor, int]:
    """Sample with a k-diffusion sampler; ``x`` starts at our prior draw divided by ``scale(T)``.

    k-diffusion draws its ancestral noise from the global generator; it is seeded from
    ``generator`` inside a forked RNG state, so the global state is left alone.
    """
    model = CountedScore(denoiser(sde, score_fn))
    sigmas = k_sigmas(sde, nfe, sampler).to(dtype)
    scale_T, _ = sde.marginal_coeffs(torch.full((1,), sde.T, dtype=torch.float64))
    x = sde.prior_sample(shape, generator=generator, dtype=dtype) / float(scale_T)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = getattr(sampling, sampler)(model, x, sigmas, disable=True)
    return out, model.nfe


# --------------------------------------------------------------------------- comparison rows
def verdict(ours: Sequence[float], peer: Sequence[float], rel_tol: float = 0.02) -> str:
    """``"better"``, ``"equal within noise"`` or ``"worse"`` for per-seed SW2 values (lower is better).

    Both sides run with the same seeds (the same prior noise for samplers that draw it the same
    way), so the comparison uses the paired differences ``d_s = ours_s - peer_s``: equal when
    ``|mean d| <= max(2 se(d), rel_tol * mean peer)`` (two standard errors of the mean
    difference, or a 2 % practical tolerance), else better or worse by the sign of ``mean d``.
    """
    pairs = [(o, p) for o, p in zip(ours, peer) if not (math.isnan(o) or math.isnan(p))]
    if not pairs:
        return "n/a"
    d = [o - p for o, p in pairs]
    mean_d = statistics.fmean(d)
    se_d = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    if abs(mean_d) <= max(2 * se_d, rel_tol * statistics.fmean(p for _, p in pairs)):
        return "equal within noise"
    return "better" if mean_d < 0 else "worse"


def _ours(
    label: str,
    sde: SDE,
    score: Callable,
    shape: Sequence[int],
    nfe: int,
    seed: int,
    denoise: Optional[bool] = None,
    **overrides: Any,
) -> Tuple[Tensor, int, float]:
    """Sample with our solver ``label`` at the largest step count within ``nfe``; ``(samples, nfe, seconds)``."""
    cfg = _CONFIGS[label]
    config = SolverConfig(cfg.label, cfg.solver, dict(cfg.options, **overrides))
    steps = fit_steps(config, sde, shape[1:], nfe, denoise=denoise)
    secs, res = timed(
        lambda: scoresde.solve(
            sde,
            score,
            shape,
            solver=config.solver,
            steps=steps,
            denoise=denoise,
            generator=torch.Generator().manual_seed(seed),
            **config.options,
        )
    )
    return res.samples, res.nfe, secs


def peer_times(sde: SDE, sigmas: Sequence[float]) -> Tensor:
    """The decreasing times of a peer's noise levels (duplicates, e.g. Heun's shared stage, dropped).

    ``sigmas`` are the noise-to-signal ratios at which a peer evaluated the model; our solver runs
    from ``t(sigmas[0])`` to ``t(sigmas[-1])`` through every level (passed as ``grid=``) and then
    takes its final denoising step, which is what the peers' last step to ``sigma = 0`` does.
    """
    levels = torch.tensor(list(dict.fromkeys(round(s, 12) for s in sigmas)), dtype=torch.float64)
    return time_at_sigma(sde, levels)


def _ours_on_grid(
    label: str, sde: SDE, score: Callable, shape: Sequence[int], sigmas: Sequence[float], seed: int
) -> Tuple[Tensor, int, float]:
    """Our solver on the peer's noise levels; ``(samples, nfe, seconds)``."""
    cfg = _CONFIGS[label]
    times = peer_times(sde, sigmas)

    def run():
        g = torch.Generator().manual_seed(seed)
        x_T = sde.prior_sample(tuple(shape), generator=g)  # the prior draw, started at the peer's first level
        return scoresde.solve(sde, score, None, solver=cfg.solver, grid=times, generator=g, x_init=x_T, **cfg.options)

    secs, res = timed(run)
    return res.samples, res.nfe, secs


class Memo:
    """Memoise sampling runs: several rows compare the same sampler at the same NFE and seed."""

    def __init__(self) -> None:
        self.results: Dict[Tuple[Any, ...], Any] = {}

    def __call__(self, key: Tuple[Any, ...], run: Callable[[], Any]) -> Any:
        if key not in self.results:
            self.results[key] = run()
        return self.results[key]


def compare(
    peer: str,
    peer_method: str,
    ours_labels: Sequence[str],
    problem: str,
    sde_name: str,
    nfe: int,
    peer_fn: Callable[[int], Tuple[Any, ...]],
    ours_fn: Callable[[str, int], Tuple[Tensor, int, float]],
    reference,
    seeds: int,
    analog: str,
) -> List[Dict[str, Any]]:
    """Rows comparing one peer sampler with our counterpart(s) at equal NFE, over ``seeds`` seeds.

    ``peer_fn(seed) -> (samples, nfe)`` (timed here) or ``(samples, nfe, seconds)`` (timed by the
    caller, e.g. a memoised run); ``ours_fn(label, seed) -> (samples, nfe, seconds)``.
    For a method without a direct analog (``analog`` starting ``"no direct analog"``) one row
    compares with the best of ``ours_labels`` at that NFE.
    """
    peer_stats: Dict[str, List[float]] = {"sw2": [], "dlogp": [], "seconds": []}
    peer_nfe = None
    for s in range(seeds):
        secs, out = timed(lambda: peer_fn(s))
        x, n = out[0], out[1]
        secs = out[2] if len(out) > 2 else secs
        q = reference.score(x)
        peer_stats["sw2"].append(q["sw2"])
        peer_stats["dlogp"].append(q["dlogp"])
        peer_stats["seconds"].append(secs)
        peer_nfe = n
    ours_rows = []
    for label in ours_labels:
        st: Dict[str, List[float]] = {"sw2": [], "dlogp": [], "seconds": []}
        ours_nfe = None
        for s in range(seeds):
            x, n, secs = ours_fn(label, s)
            q = reference.score(x)
            st["sw2"].append(q["sw2"])
            st["dlogp"].append(q["dlogp"])
            st["seconds"].append(secs)
            ours_nfe = n
        ours_rows.append((label, st, ours_nfe))
    if analog.startswith("no direct analog"):
        ours_rows = [min(ours_rows, key=lambda r: statistics.fmean(r[1]["sw2"]))]
    p_sw2, p_se = mean_se(peer_stats["sw2"])
    rows = []
    for label, st, ours_nfe in ours_rows:
        o_sw2, o_se = mean_se(st["sw2"])
        rows.append(
            {
                "peer": peer,
                "peer_method": peer_method,
                "ours": label,
                "analog": analog,
                "problem": problem,
                "sde": sde_name,
                "nfe": peer_nfe,
                "target_nfe": nfe,
                "peer_nfe": peer_nfe,
                "ours_nfe": ours_nfe,
                "peer_sw2": p_sw2,
                "peer_sw2_se": p_se,
                "ours_sw2": o_sw2,
                "ours_sw2_se": o_se,
                "peer_dlogp": mean_se(peer_stats["dlogp"])[0],
                "ours_dlogp": mean_se(st["dlogp"])[0],
                "peer_seconds": statistics.fmean(peer_stats["seconds"]),
                "ours_seconds": statistics.fmean(st["seconds"]),
                "sw2_floor": reference.sw2_floor,
                "seeds": seeds,
                "verdict": verdict(st["sw2"], peer_stats["sw2"]),
            }
        )
    return rows


def diffusers_rows(profile: Profile, refs: Dict[str, Any]) -> List[Dict[str, Any]]:
    """diffusers' PC (VE) and discrete-time schedulers (VP) against ours at equal NFE."""
    rows: List[Dict[str, Any]] = []
    pc_eps, snr = 1e-5, 0.16
    cache = Memo()
    for problem, ref in refs.items():
        event = tuple(ref.mixture.event_shape)
        shape = (profile.peer_samples, *event)
        ve = build_sde("ve")
        score = exact_score(ref.mixture, ve)
        for nfe in profile.peer_nfe:
            steps = nfe // 2  # one corrector and one predictor evaluation per level
            rows += (
                compare(
                    "diffusers",
                    "ScoreSdeVeScheduler (PC, snr=0.16, 1 corrector step)",
                    ("pc",),
                    problem,
                    "ve",
                    2 * steps,
                    lambda s: diffusers_pc_sample(
                        ve, score, shape, steps, torch.Generator().manual_seed(s), snr, pc_eps
                    ),
                    lambda label, s: cache(
                        (problem, "ve", label, 2 * steps, s, "pc-peer"),
                        lambda: _ours(label, ve, score, shape, 2 * steps, s, denoise=False, snr=snr),
                    ),
                    ref,
                    profile.peer_seeds,
                    "same method",
                )
                if steps >= 1
                else []
            )
        vp = build_sde("vp")
        score_vp = exact_score(ref.mixture, vp)
        for name, ours, options in DIFFUSERS_DISCRETE:
            for nfe in profile.peer_nfe:
                steps = (nfe + 1) // 2 if name == "HeunDiscreteScheduler" else nfe  # Heun: 2 evals/step, 1 at the end
                analog = "no direct analog (best of ours)" if ours == DETERMINISTIC else "same method"
                grid: List[float] = []

                def peer_run(s: int) -> Tuple[Tensor, int, float]:
                    def run() -> Tuple[Tensor, int, float]:
                        record = grid if s == 0 else None
                        g = torch.Generator().manual_seed(s)
                        secs, (x, n) = timed(
                            lambda: diffusers_discrete_sample(name, options, vp, score_vp, shape, steps, g, record)
                        )
                        return x, n, secs

                    return cache((problem, name, nfe, s), run)

                rows += compare(
                    "diffusers",
                    name,
                    ours,
                    problem,
                    "vp",
                    nfe,
                    peer_run,
                    lambda label, s: cache(
                        (problem, "vp", label, nfe, s), lambda: _ours(label, vp, score_vp, shape, nfe, s)
                    ),
                    ref,
                    profile.peer_seeds,
                    analog,
                )
                if analog == "same method":  # the same comparison on the peer's own noise levels
                    rows += compare(
                        "diffusers",
                        name,
                        ours,
                        problem,
                        "vp",
                        nfe,
                        peer_run,
                        lambda label, s: _ours_on_grid(label, vp, score_vp, shape, grid, s),
                        ref,
                        profile.peer_seeds,
                        "same method, same grid",
                    )
    return rows


def k_diffusion_rows(sampling: types.ModuleType, profile: Profile, refs: Dict[str, Any]) -> List[Dict[str, Any]]:
    """k-diffusion's samplers against ours on the VP SDE at equal NFE, on the same time grid."""
    rows: List[Dict[str, Any]] = []
    vp = build_sde("vp")
    cache = Memo()
    for problem, ref in refs.items():
        shape = (profile.peer_samples, *tuple(ref.mixture.event_shape))
        score = exact_score(ref.mixture, vp)
        for sampler, ours in K_SAMPLERS:
            # the k-diffusion sigmas are our own time grid, so these compare implementations directly
            analog = "no direct analog (best of ours)" if ours == DETERMINISTIC else "same method, same grid"
            for nfe in profile.peer_nfe:
                rows += compare(
                    "k-diffusion",
                    sampler,
                    ours,
                    problem,
                    "vp",
                    nfe,
                    lambda s: k_sample(sampling, sampler, vp, score, shape, nfe, torch.Generator().manual_seed(s)),
                    lambda label, s: cache((problem, label, nfe, s), lambda: _ours(label, vp, score, shape, nfe, s)),
                    ref,
                    profile.peer_seeds,
                    analog,
                )
    return rows


def k_likelihood_rows(sampling: types.ModuleType, profile: Profile, tol: float = 1e-4) -> List[Dict[str, Any]]:
    """k-diffusion's ``log_likelihood`` against ours on Gaussian data with an exact density (VE).

    Both integrate the probability-flow ODE with dopri5 at ``rtol = atol = tol`` between the same
    noise levels, with one Rademacher probe (k-diffusion's estimator) and, for ours, also the
    exact trace. The target is the exact log-density of the data convolved with the smallest noise.
    ``abs_error`` is the mean absolute error per sample (probe noise included), ``mean_error`` the
    signed mean over the batch (probe noise averaged out); both include the small error of
    replacing ``p_T`` by the prior, common to both libraries.
    """
    g = torch.Generator().manual_seed(0)
    D = 4
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    data = Gaussian(
        torch.randn(D, generator=g, dtype=torch.float64), A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    )
    sde = build_sde("ve")
    score = data.score_fn(sde)
    eps = 1e-5
    sigma_min = float(sde.marginal_coeffs(torch.tensor([eps], dtype=torch.float64))[1])
    sigma_max = float(sde.marginal_coeffs(torch.tensor([sde.T], dtype=torch.float64))[1])
    x = data.sample(min(profile.peer_samples, 256), generator=g)
    exact = data.log_prob(x, sde, eps)
    rows = []
    model = CountedScore(denoiser(sde, lambda y, t: score(y, t.clamp(eps, sde.T))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        secs, (ll, _info) = timed(lambda: sampling.log_likelihood(model, x, sigma_min, sigma_max, atol=tol, rtol=tol))
    rows.append(
        {
            "peer": "k-diffusion",
            "method": "log_likelihood (hutchinson, 1 probe)",
            "nfe": int(model.nfe),
            "seconds": secs,
            "abs_error": float((ll - exact).abs().mean()),
            "mean_error": float((ll - exact).mean()),
            "tol": tol,
        }
    )
    for trace in ("hutchinson", "exact"):
        secs, res = timed(
            lambda: scoresde.log_likelihood(
                sde, score, x, eps=eps, rtol=tol, atol=tol, trace=trace, generator=torch.Generator().manual_seed(0)
            )
        )
        err = res.log_prob - exact
        rows.append(
            {
                "peer": "scoresde",
                "method": f"log_likelihood ({trace})",
                "nfe": int(res.nfe),
                "seconds": secs,
                "abs_error": float(err.abs().mean()),
                "mean_error": float(err.mean()),
                "tol": tol,
            }
        )
    return rows


def peers(device: str = "cpu", quick: bool = True, profile: "str | Profile | None" = None) -> Dict[str, Any]:
    """Run every available peer comparison (on CPU: the peers' loops are CPU-bound at these sizes).

    Returns:
        ``{"versions": {peer: version or None}, "status": {peer: "ok" | "unavailable: <reason>"},
        "rows": [sampler comparison rows], "likelihood": [log-likelihood comparison rows]}``.
        Each sampler row: ``{"peer", "peer_method", "ours", "analog", "problem", "sde", "nfe",
        "peer_nfe", "ours_nfe", "peer_sw2", "peer_sw2_se", "ours_sw2", "ours_sw2_se", "peer_dlogp",
        "ours_dlogp", "peer_seconds", "ours_seconds", "sw2_floor", "seeds", "verdict"}``.
    """
    del device  # the comparisons run on CPU
    prof = get_profile(profile, quick)
    problems = sorted({p for p, _ in prof.quality_problems})
    refs = {p: quality_reference(p, prof, seed=1, n_samples=prof.peer_samples) for p in problems}
    out: Dict[str, Any] = {
        "versions": {"diffusers": package_version("diffusers"), "k-diffusion": package_version("k-diffusion")},
        "status": {},
        "rows": [],
        "likelihood": [],
    }
    try:
        load_diffusers()
        out["rows"] += diffusers_rows(prof, refs)
        out["status"]["diffusers"] = "ok"
    except ImportError as e:
        out["status"]["diffusers"] = f"unavailable: {error_text(e)}"
    except Exception as e:
        out["status"]["diffusers"] = f"failed: {error_text(e)}"
    try:
        sampling = load_k_diffusion_sampling()
    except ImportError as e:
        out["status"]["k-diffusion"] = f"unavailable: {e}"
    else:
        try:
            out["rows"] += k_diffusion_rows(sampling, prof, refs)
            out["likelihood"] += k_likelihood_rows(sampling, prof)
            out["status"]["k-diffusion"] = "ok"
        except Exception as e:
            out["status"]["k-diffusion"] = f"failed: {error_text(e)}"
    return out


__all__ = [
    "time_at_sigma",
    "eps_model",
    "denoiser",
    "load_diffusers",
    "load_k_diffusion_sampling",
    "diffusers_pc_sample",
    "diffusers_discrete_sample",
    "k_sigmas",
    "k_sample",
    "verdict",
    "compare",
    "diffusers_rows",
    "k_diffusion_rows",
    "k_likelihood_rows",
    "peers",
]
