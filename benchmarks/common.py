"""Shared pieces of the benchmark suite: size profiles, test problems, metrics, timing, versions.

Everything here runs in torch on the requested device. The metrics compare generated samples
with the exact data distribution of a :class:`scoresde.exact.GaussianMixture`:

* ``sliced_w2``: the sliced Wasserstein-2 distance to samples of the true distribution,
  ``SW2(mu, nu) = (E_theta W2^2(theta#mu, theta#nu))^(1/2)`` over uniformly random directions
  ``theta`` on the unit sphere, each 1-D ``W2`` computed exactly from sorted projections.
* ``dlogp``: the mean true log-density of the samples minus its expectation under the data,
  ``mean_i log p(x_i) - E_{x ~ p}[log p(x)]``. Zero (within its standard error) for exact
  samples; positive when samples crowd the modes, negative when they spread out or miss them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde
from scoresde.exact import GaussianMixture
from scoresde.sde.base import SDE


# --------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run.

    ``smoke`` is for the test suite (seconds), ``quick`` for CI and the committed CPU results
    (minutes on 2 cores), ``full`` for a thorough run.
    """

    name: str
    # quality_vs_nfe
    quality_problems: Tuple[Tuple[str, str], ...]  # (problem, sde) pairs
    nfe_budgets: Tuple[int, ...]
    tolerances: Tuple[float, ...]
    n_samples: int  # generated samples per run
    n_reference: int  # true samples the SW2 compares against
    n_logp_reference: int  # true samples estimating E[log p]
    n_projections: int
    # solver_overhead
    mlp_batch: int
    mlp_hidden: int
    unet_batch: int
    unet_image: Tuple[int, int, int]  # (C, S, S)
    unet_channels: int
    overhead_nfe: int  # target NFE of each overhead solve
    overhead_repeats: int
    # peers
    peer_nfe: Tuple[int, ...]
    peer_seeds: int
    peer_samples: int
    #: quality configurations left out of this profile (by label), to keep it within its time budget
    skip_solvers: Tuple[str, ...] = ()
    # fewstep: (problem, sde) pairs, NFE budgets, seeds and samples per run
    fewstep_problems: Tuple[Tuple[str, str], ...] = ()
    fewstep_nfe: Tuple[int, ...] = (5, 8, 10, 20)
    fewstep_seeds: int = 3
    fewstep_samples: int = 10_000
    #: peer settings searched per scheduler: "all" (every spacing x lower_order_final x Karras) or "default"
    fewstep_peer_search: str = "all"


PROFILES: Dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        quality_problems=(("gmm2d", "vp"),),
        nfe_budgets=(6, 40),
        tolerances=(1e-3,),
        n_samples=1024,
        n_reference=2048,
        n_logp_reference=20_000,
        n_projections=64,
        mlp_batch=64,
        mlp_hidden=32,
        unet_batch=2,
        unet_image=(1, 8, 8),
        unet_channels=8,
        overhead_nfe=6,
        overhead_repeats=2,
        peer_nfe=(20,),
        skip_solvers=("torchsde:srk",),
        peer_seeds=1,
        peer_samples=512,
        fewstep_problems=(("fs2d", "vp"), ("fs2d", "ve")),
        fewstep_nfe=(5, 10),
        fewstep_seeds=2,
        fewstep_samples=512,
        fewstep_peer_search="default",
    ),
    "quick": Profile(
        name="quick",
        quality_problems=(("gmm2d", "vp"), ("gmm2d", "ve"), ("gmm16d", "vp")),
        nfe_budgets=(10, 20, 50, 100, 200),
        tolerances=(1e-2, 1e-3, 1e-4, 1e-5),
        n_samples=5000,
        n_reference=50_000,
        n_logp_reference=200_000,
        n_projections=256,
        mlp_batch=256,
        mlp_hidden=64,
        unet_batch=8,
        unet_image=(1, 16, 16),
        unet_channels=16,
        overhead_nfe=21,
        overhead_repeats=7,
        peer_nfe=(20, 50),
        skip_solvers=("torchsde:srk",),
        peer_seeds=3,
        peer_samples=5000,
        fewstep_problems=tuple((p, s) for p in ("fs2d", "fs8d", "fs32d") for s in ("vp", "ve")),
        fewstep_nfe=(5, 8, 10, 20),
        fewstep_seeds=3,
        fewstep_samples=5000,
    ),
    "full": Profile(
        name="full",
        quality_problems=(("gmm2d", "vp"), ("gmm2d", "ve"), ("gmm16d", "vp"), ("gmm16d", "ve")),
        nfe_budgets=(10, 20, 50, 100, 200, 500),
        tolerances=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
        n_samples=50_000,
        n_reference=200_000,
        n_logp_reference=1_000_000,
        n_projections=512,
        mlp_batch=1024,
        mlp_hidden=256,
        unet_batch=16,
        unet_image=(1, 28, 28),
        unet_channels=32,
        overhead_nfe=51,
        overhead_repeats=7,
        peer_nfe=(10, 20, 50, 100, 200),
        peer_seeds=5,
        peer_samples=50_000,
        fewstep_problems=tuple((p, s) for p in ("fs2d", "fs8d", "fs32d") for s in ("vp", "ve")),
        fewstep_nfe=(5, 6, 8, 10, 12, 15, 20),
        fewstep_seeds=5,
        fewstep_samples=50_000,
    ),
}


def get_profile(profile: "str | Profile | None" = None, quick: bool = True) -> Profile:
    """Resolve a profile by name (``smoke``, ``quick``, ``full``); ``None`` picks quick or full."""
    if isinstance(profile, Profile):
        return profile
    name = profile if profile is not None else ("quick" if quick else "full")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


# --------------------------------------------------------------------------- problems
def make_sde(name: str) -> SDE:
    """The SDEs of the benchmark: ``"vp"`` (VPSDE, beta in [0.1, 20]) or ``"ve"`` (VESDE, sigma in [0.01, 50])."""
    if name == "vp":
        return scoresde.VPSDE()
    if name == "ve":
        return scoresde.VESDE()
    raise ValueError(f"unknown SDE {name!r}; valid: vp, ve")


def make_mixture(name: str, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """The Gaussian-mixture data of the benchmark.

    * ``"gmm2d"``: 8 equal-weight isotropic components (std 0.2) on a circle of radius 2.
    * ``"gmm16d"``: 5 components in 16 dimensions with unequal weights, means drawn from
      ``N(0, 1.5^2 I)`` and per-dimension stds in ``[0.3, 0.8]`` (fixed seed).
    """
    if name == "gmm2d":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
        return GaussianMixture(torch.ones(8, dtype=dtype), means.to(dtype), torch.tensor(0.2, dtype=dtype))
    if name == "gmm16d":
        g = torch.Generator().manual_seed(1234)
        means = 1.5 * torch.randn(5, 16, generator=g, dtype=torch.float64)
        stds = 0.3 + 0.5 * torch.rand(5, 16, generator=g, dtype=torch.float64)
        weights = torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08], dtype=torch.float64)
        return GaussianMixture(weights.to(dtype), means.to(dtype), stds.to(dtype))
    if name in FEWSTEP_MIXTURES:
        return _fewstep_mixture(name, dtype)
    raise ValueError(f"unknown problem {name!r}; valid: gmm2d, gmm16d, {', '.join(FEWSTEP_MIXTURES)}")


#: The few-step benchmark's mixtures: narrow, well separated components in 2, 8 and 32 dimensions.
FEWSTEP_MIXTURES = ("fs2d", "fs8d", "fs32d")


def _fewstep_mixture(name: str, dtype: torch.dtype) -> GaussianMixture:
    """``fs2d``: 8 equal components (std 0.05) on a circle of radius 2; ``fs8d``: 6 components with
    means ``N(0, 2^2 I)`` and per-dimension stds in ``[0.05, 0.15]``; ``fs32d``: 10 components with
    means ``N(0, I)`` (about 8 apart) and stds in ``[0.05, 0.2]``. Weights unequal in 8-D and 32-D;
    fixed seeds."""
    if name == "fs2d":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
        return GaussianMixture(torch.ones(8, dtype=dtype), means.to(dtype), torch.tensor(0.05, dtype=dtype))
    k, d, spread, lo, hi = (6, 8, 2.0, 0.05, 0.15) if name == "fs8d" else (10, 32, 1.0, 0.05, 0.2)
    g = torch.Generator().manual_seed(4321 + d)
    means = spread * torch.randn(k, d, generator=g, dtype=torch.float64)
    stds = lo + (hi - lo) * torch.rand(k, d, generator=g, dtype=torch.float64)
    weights = 1.0 + torch.rand(k, generator=g, dtype=torch.float64) * 2.0
    return GaussianMixture(weights.to(dtype), means.to(dtype), stds.to(dtype))


def exact_score(mixture: GaussianMixture, sde: SDE) -> Callable[[Tensor, Tensor], Tensor]:
    """The mixture's exact score under ``sde``, ``(x [B, *event], t [B]) -> [B, *event]``.

    Times are clamped into ``[0, T]``: an adaptive solver's initial step-size probe may ask for
    a time just outside the integration interval, where the exact score refuses to evaluate.
    """
    T = float(sde.T)

    def score(x: Tensor, t: Tensor) -> Tensor:
        return mixture.score(x, sde, t.clamp(0.0, T))

    return score


# --------------------------------------------------------------------------- metrics
def random_directions(
    n: int,
    dim: int,
    generator: Optional[torch.Generator] = None,
    device: "str | torch.device" = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` directions uniform on the unit sphere of ``R^dim``, ``[n, dim]``."""
    theta = torch.randn(n, dim, generator=generator, dtype=dtype).to(device)
    return theta / theta.norm(dim=1, keepdim=True)


def _sorted_quantiles(y_sorted: Tensor, levels: Tensor) -> Tensor:
    """Linear interpolation of empirical quantiles: sorted rows ``y_sorted [P, M]`` at ``levels [N]`` -> ``[P, N]``."""
    M = y_sorted.shape[1]
    pos = (levels * M - 0.5).clamp(0, M - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(M - 1)
    w = (pos - lo.to(pos.dtype)).to(y_sorted.dtype)
    return (1 - w) * y_sorted[:, lo] + w * y_sorted[:, hi]


def _sorted_projections(x: Tensor, directions: Tensor) -> Tensor:
    """Projections of ``x [N, D]`` on ``directions [P, D]``, each row sorted: ``[P, N]`` in float32.

    On CPU the sort goes through numpy, whose sort is about 20 times faster than torch's CPU sort
    for these sizes (this is a metric outside every sampling loop); elsewhere ``torch.sort``.
    """
    proj = directions.to(device=x.device, dtype=torch.float32) @ x.to(torch.float32).T
    if proj.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sort(proj.numpy(), axis=1))
    return proj.sort(dim=1).values


def sliced_w2(
    x: Tensor,
    y: Tensor,
    n_projections: int = 256,
    generator: Optional[torch.Generator] = None,
    directions: Optional[Tensor] = None,
) -> float:
    """Sliced Wasserstein-2 distance between two empirical distributions.

    Args:
        x: samples ``[N, *event]``.
        y: samples ``[M, *event]`` (same event shape; ``M`` may differ from ``N``).
        n_projections: number of random directions (ignored when ``directions`` is given).
        generator: source of the directions.
        directions: optional fixed unit directions ``[P, D]`` with ``D = prod(event)``.

    Returns:
        ``sqrt(mean_theta W2^2(theta.x, theta.y))``, where each 1-D ``W2^2`` is the integral of the
        squared difference of the quantile functions, evaluated at the ``N`` levels
        ``(i + 1/2) / N`` (``y``'s quantiles linearly interpolated when ``M != N``). Projections
        are sorted in float32; the squared differences are averaged in float64.
    """
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1).to(x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same event size, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("x and y must hold at least one sample each")
    if directions is None:
        directions = random_directions(n_projections, x.shape[1], generator, x.device)
    directions = directions.to(x.device)
    px = _sorted_projections(x, directions)  # [P, N]
    py = _sorted_projections(y, directions)  # [P, M]
    if py.shape[1] != px.shape[1]:
        levels = (torch.arange(px.shape[1], device=x.device, dtype=torch.float64) + 0.5) / px.shape[1]
        py = _sorted_quantiles(py, levels)
    return float(((px.double() - py.double()) ** 2).mean().sqrt())


@dataclass
class QualityReference:
    """True samples and statistics that one problem's generated samples are scored against.

    Attributes:
        mixture: the data distribution.
        reference: true samples ``[M, *event]`` for the SW2.
        directions: fixed projection directions ``[P, D]`` (the same for every solver).
        n_samples: the number of generated samples each run produces (``N``).
        logp_mean: ``E[log p(x)]`` estimated from many true samples.
        logp_std: standard deviation of ``log p(x)`` under the data (sets the stderr of ``dlogp``).
        sw2_floor: mean SW2 of ``N`` fresh true samples against ``reference`` over several draws:
            what an exact sampler scores (the finite-sample floor; on multimodal data it is
            dominated by the random share of samples each mode receives).
        sw2_floor_sd: the standard deviation of that SW2 over the draws.
    """

    mixture: GaussianMixture
    reference: Tensor
    directions: Tensor
    n_samples: int
    logp_mean: float = float("nan")
    logp_std: float = float("nan")
    sw2_floor: float = float("nan")
    sw2_floor_sd: float = float("nan")
    _quantiles: Optional[Tensor] = None

    def sw2(self, samples: Tensor) -> float:
        """SW2 of ``samples [N, *event]`` against the reference (reference quantiles cached per ``N``)."""
        x = samples.detach().reshape(samples.shape[0], -1).cpu()
        if self._quantiles is None or self._quantiles.shape[1] != x.shape[0]:
            py = _sorted_projections(self.reference.reshape(self.reference.shape[0], -1), self.directions)
            levels = (torch.arange(x.shape[0], dtype=torch.float64) + 0.5) / x.shape[0]
            self._quantiles = _sorted_quantiles(py, levels).double()
        px = _sorted_projections(x, self.directions).double()
        return float(((px - self._quantiles) ** 2).mean().sqrt())

    def score(self, samples: Tensor) -> Dict[str, float]:
        """``{"sw2", "dlogp", "dlogp_stderr", "sw2_floor", "sw2_floor_sd"}`` of generated ``samples [N, *event]``."""
        samples = samples.detach().cpu()
        if not bool(torch.isfinite(samples).all()):
            return dict(
                sw2=float("nan"),
                dlogp=float("nan"),
                dlogp_stderr=float("nan"),
                sw2_floor=self.sw2_floor,
                sw2_floor_sd=self.sw2_floor_sd,
            )
        lp = self.mixture.log_prob(samples.to(self.mixture.means.dtype)).double()
        return dict(
            sw2=self.sw2(samples),
            dlogp=float(lp.mean()) - self.logp_mean,
            dlogp_stderr=self.logp_std / math.sqrt(samples.shape[0]),
            sw2_floor=self.sw2_floor,
            sw2_floor_sd=self.sw2_floor_sd,
        )


def quality_reference(
    problem: str, profile: Profile, seed: int = 0, n_samples: Optional[int] = None, floor_draws: int = 5
) -> QualityReference:
    """Build the :class:`QualityReference` of a problem (on CPU, statistics in float64).

    ``E[log p]`` comes from ``profile.n_logp_reference`` true samples; the SW2 floor from
    ``floor_draws`` fresh sets of ``n_samples`` true samples.
    """
    mixture = make_mixture(problem)
    n = n_samples or profile.n_samples
    g = torch.Generator().manual_seed(10_000 + seed)
    reference = mixture.sample(profile.n_reference, generator=g)
    directions = random_directions(profile.n_projections, reference[0].numel(), g)
    ref = QualityReference(mixture=mixture, reference=reference, directions=directions, n_samples=n)
    big = mixture.sample(profile.n_logp_reference, generator=g)
    lp = torch.cat([mixture.log_prob(chunk).double() for chunk in big.split(50_000)])
    ref.logp_mean, ref.logp_std = float(lp.mean()), float(lp.std())
    floors = torch.tensor([ref.sw2(mixture.sample(n, generator=g)) for _ in range(max(2, floor_draws))])
    ref.sw2_floor, ref.sw2_floor_sd = float(floors.mean()), float(floors.std())
    return ref


# --------------------------------------------------------------------------- timing
def synchronize(device: "str | torch.device") -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: "str | torch.device" = "cpu") -> Tuple[float, Any]:
    """Run ``fn()`` once; return ``(seconds, result)`` with the device synchronised around it."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[], Any], repeats: int, device: "str | torch.device" = "cpu", warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device)[0] for _ in range(max(1, repeats)))


def check_device(device: str) -> torch.device:
    """Validate ``device`` (``"cpu"`` or ``"cuda[:i]"``); raise ``ValueError`` when unavailable."""
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return dev


# --------------------------------------------------------------------------- environment
def package_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_description(device: "str | torch.device") -> str:
    """A human-readable description of the device (CPU model and threads, or GPU name)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {cpu}, torch threads {torch.get_num_threads()}"


def environment(device: "str | torch.device", profile: Profile) -> Dict[str, Any]:
    """The ``meta`` block of the results: device, library versions, profile and date."""
    import numpy

    return {
        "device": str(torch.device(device)),
        "device_description": device_description(device),
        "torch": torch.__version__,
        "scoresde": scoresde.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "torchdiffeq": package_version("torchdiffeq"),
        "torchsde": package_version("torchsde"),
        "scipy": package_version("scipy"),
        "peers": {name: package_version(name) for name in ("diffusers", "k-diffusion")},
        "quick": profile.name != "full",
        "profile": profile.name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def error_text(e: BaseException) -> str:
    """One line naming an exception: ``"TypeName: message"`` (message cut at 300 characters)."""
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:300]}"


def rows_to_markdown(
    rows: Sequence[Dict[str, Any]], columns: Sequence[Tuple[str, str]], formats: Optional[Dict[str, str]] = None
) -> str:
    """A markdown table of ``rows`` with ``columns`` given as ``(key, header)`` pairs."""
    formats = formats or {}
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _ in columns:
            v = row.get(key, "")
            if isinstance(v, float):
                cells.append("nan" if math.isnan(v) else format(v, formats.get(key, ".3g")))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "Profile",
    "PROFILES",
    "get_profile",
    "make_sde",
    "make_mixture",
    "exact_score",
    "random_directions",
    "sliced_w2",
    "QualityReference",
    "quality_reference",
    "synchronize",
    "timed",
    "median_time",
    "check_device",
    "package_version",
    "device_description",
    "environment",
    "error_text",
    "rows_to_markdown",
]
