"""Shared pieces of the benchmark suite: size profiles, test problems, metrics, timing, versions.

Scripts in this folder import it as a local module (``import common``: a script's own folder is on
``sys.path``). The metrics compare generated samples with the exact data distribution of a
:class:`scoresde.exact.GaussianMixture`:

* ``sw2``: :func:`scoresde.metrics.sliced_wasserstein` to true samples of the same size, over the
  same random directions for every solver (one fixed seed per problem).
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
from scoresde.metrics import SlicedReference, mean_and_stderr, sliced_wasserstein


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
    n_samples: int  # generated samples per run (and true samples the SW2 compares against)
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
    #: our grids tried with every few-step solver (``None`` for a default grid); ``None``: all of ``fewstep_bench.OUR_GRIDS``
    fewstep_grids: Optional[Tuple[Optional[str], ...]] = None


PROFILES: Dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        quality_problems=(("gmm2d", "vp"),),
        nfe_budgets=(6, 40),
        tolerances=(1e-3,),
        n_samples=1024,
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
        # representative few-step points; the whole sweep is the full profile's
        fewstep_problems=(("fs8d", "vp"), ("fs8d", "ve")),
        fewstep_nfe=(5, 10),
        fewstep_seeds=3,
        fewstep_samples=5000,
        fewstep_peer_search="default",
        fewstep_grids=(None, "gits"),
    ),
    "full": Profile(
        name="full",
        quality_problems=(("gmm2d", "vp"), ("gmm2d", "ve"), ("gmm16d", "vp"), ("gmm16d", "ve")),
        nfe_budgets=(10, 20, 50, 100, 200, 500),
        tolerances=(1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
        n_samples=50_000,
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


def exact_score(mixture: GaussianMixture, sde: scoresde.SDE) -> Callable[[Tensor, Tensor], Tensor]:
    """The mixture's exact score under ``sde``, ``(x [B, *event], t [B]) -> [B, *event]``.

    Times are clamped into ``[0, T]``: an adaptive solver's initial step-size probe may ask for
    a time just outside the integration interval, where the exact score refuses to evaluate.
    """
    T = float(sde.T)

    def score(x: Tensor, t: Tensor) -> Tensor:
        return mixture.score(x, sde, t.clamp(0.0, T))

    return score


# --------------------------------------------------------------------------- metrics
def mean_se(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and standard error of the finite ``values`` (:func:`scoresde.metrics.mean_and_stderr`); NaNs when none."""
    vals = [float(v) for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return mean_and_stderr(torch.tensor(vals, dtype=torch.float64))


@dataclass
class QualityReference:
    """True samples and statistics that one problem's generated samples are scored against.

    Attributes:
        mixture: the data distribution.
        reference: true samples ``[N, *event]`` for the SW2.
        n_samples: the number of generated samples each run produces (``N``).
        n_projections: random directions of the SW2.
        projection_seed: seed of the directions, the same for every solver (paired comparisons).
        logp_mean: ``E[log p(x)]`` estimated from many true samples.
        logp_std: standard deviation of ``log p(x)`` under the data (sets the stderr of ``dlogp``).
        sw2_floor: mean SW2 of ``N`` fresh true samples against ``reference`` over several draws:
            what an exact sampler scores (the finite-sample floor; on multimodal data it is
            dominated by the random share of samples each mode receives).
        sw2_floor_sd: the standard deviation of that SW2 over the draws.
    """

    mixture: GaussianMixture
    reference: Tensor
    n_samples: int
    n_projections: int
    projection_seed: int
    logp_mean: float = float("nan")
    logp_std: float = float("nan")
    sw2_floor: float = float("nan")
    sw2_floor_sd: float = float("nan")

    def sw2(self, samples: Tensor) -> float:
        """:func:`scoresde.metrics.sliced_wasserstein` of ``samples [N, *event]`` against the reference.

        The reference's sorted projections (on fixed directions from ``projection_seed``) are computed once.
        """
        if getattr(self, "_sliced", None) is None:
            gen = torch.Generator().manual_seed(self.projection_seed)
            self._sliced = SlicedReference(self.reference, self.n_projections, gen)
        return sliced_wasserstein(samples.detach().cpu(), self._sliced)

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
    ref = QualityReference(
        mixture=mixture,
        reference=mixture.sample(n, generator=g),
        n_samples=n,
        n_projections=profile.n_projections,
        projection_seed=20_000 + seed,
    )
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
    "make_mixture",
    "exact_score",
    "mean_se",
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
