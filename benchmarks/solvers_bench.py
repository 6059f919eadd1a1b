"""Solver benchmarks: the solvers' own overhead, and sample quality against the number of score evaluations.

* :func:`solver_overhead`: for each solver, ``ratio = wall time of a solve / (NFE x time of one
  bare score evaluation)`` on the same batch, with a small MLP and with a U-Net as the score
  network. The limit is 1.0: a solver that did nothing but call the network.
* :func:`quality_vs_nfe`: every solver on Gaussian mixtures with an exact score, over a range of
  NFE budgets, scored by the sliced Wasserstein-2 distance to true samples and by ``dlogp``
  (see ``common.py``). The data behind "how to choose a solver".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde
from scoresde import SDE
from scoresde.checkpoint import build_sde
from scoresde.exact import Gaussian

from common import Profile, error_text, exact_score, get_profile, quality_reference, timed


@dataclass(frozen=True)
class SolverConfig:
    """One solver configuration of the benchmark.

    Attributes:
        label: name in the tables, e.g. ``"ode:heun"``.
        solver: key in :data:`scoresde.SOLVERS`.
        options: keyword options of the solver.
        adaptive: whether the solver picks its own steps (then NFE follows from the tolerance).
    """

    label: str
    solver: str
    options: Dict[str, Any] = field(default_factory=dict)
    adaptive: bool = False

    def with_tolerance(self, tol: float) -> "SolverConfig":
        """A copy with ``rtol = atol = tol`` (adaptive ODE methods)."""
        opts = dict(self.options, rtol=tol, atol=tol)
        return SolverConfig(f"{self.label}(tol={tol:g})", self.solver, opts, True)


#: Fixed-step configurations, one per solver family and method.
FIXED_CONFIGS: Tuple[SolverConfig, ...] = (
    SolverConfig("euler_maruyama", "euler_maruyama"),
    SolverConfig("reverse_diffusion", "reverse_diffusion"),
    SolverConfig("ancestral", "ancestral"),
    SolverConfig("ddim", "ddim"),
    SolverConfig("ode:euler", "ode", {"method": "euler"}),
    SolverConfig("ode:heun", "ode", {"method": "heun"}),
    SolverConfig("ode:rk4", "ode", {"method": "rk4"}),
    SolverConfig(
        "pc", "pc", {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "corrector_steps": 1}
    ),
    SolverConfig("langevin", "langevin", {"snr": 0.16, "corrector_steps": 1}),
    SolverConfig("annealed_langevin", "annealed_langevin", {"steps_per_level": 2}),
    SolverConfig("torchsde:euler", "torchsde", {"method": "euler"}),
    SolverConfig("torchsde:srk", "torchsde", {"method": "srk"}),
)

#: Adaptive configuration; run at each tolerance of the profile.
ADAPTIVE_CONFIG = SolverConfig("ode:dopri5", "ode", {"method": "dopri5"}, adaptive=True)


_NFE_CACHE: Dict[Tuple[Any, ...], int] = {}


def solver_nfe(
    config: SolverConfig, sde: SDE, event_shape: Sequence[int], steps: int, denoise: Optional[bool] = None
) -> int:
    """NFE that ``config`` reports for ``steps`` steps, measured with a tiny solve on an analytic score.

    This follows the driver's own counting (final denoising included) instead of a table, so
    solvers whose count is not ``per_step * steps + 1`` (torchsde) are handled too.
    """
    key = (config.label, tuple(sorted(config.options.items())), repr(sde), tuple(event_shape), steps, denoise)
    if key not in _NFE_CACHE:
        # the exact score of N(0, I) data, on the flattened event: stable for every solver and SDE
        dim = math.prod(event_shape)
        data = Gaussian(torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64))

        def unit_gaussian_score(x: Tensor, t: Tensor) -> Tensor:
            return data.score(x.flatten(1), sde, t).view_as(x)

        res = scoresde.solve(
            sde,
            unit_gaussian_score,
            (2, *event_shape),
            solver=config.solver,
            steps=steps,
            denoise=denoise,
            generator=torch.Generator().manual_seed(0),
            **config.options,
        )
        _NFE_CACHE[key] = int(res.nfe)
    return _NFE_CACHE[key]


def nfe_pattern(
    config: SolverConfig, sde: SDE, event_shape: Sequence[int] = (2,), denoise: Optional[bool] = None
) -> Tuple[int, int]:
    """``(evals_per_step, extra_evals)`` of a fixed-step configuration, from solves of 2 and 3 steps
    (some solvers refuse a single step)."""
    n2 = solver_nfe(config, sde, event_shape, 2, denoise)
    n3 = solver_nfe(config, sde, event_shape, 3, denoise)
    return n3 - n2, n2 - 2 * (n3 - n2)


def steps_for_nfe(target: int, pattern: Tuple[int, int]) -> Optional[int]:
    """Largest ``steps`` with ``per_step * steps + extra <= target`` (``None`` if below 1)."""
    per_step, extra = pattern
    steps = (target - extra) // max(per_step, 1)
    return int(steps) if steps >= 1 else None


def fit_steps(
    config: SolverConfig, sde: SDE, event_shape: Sequence[int], target: int, denoise: Optional[bool] = None
) -> Optional[int]:
    """The largest number of steps whose reported NFE does not exceed ``target`` (``None`` if none fits).

    Starts from the linear NFE pattern and corrects it against measured counts; a step count the
    solver refuses (:class:`scoresde.OptionError`, e.g. one step of a solver that needs two) does not fit.
    """
    steps = steps_for_nfe(target, nfe_pattern(config, sde, event_shape, denoise))
    if steps is None:
        return None

    def fits(n: int) -> bool:
        try:
            return solver_nfe(config, sde, event_shape, n, denoise) <= target
        except scoresde.OptionError:
            return False

    while steps >= 1 and not fits(steps):
        steps -= 1
    if steps < 1:
        return None
    while fits(steps + 1):
        steps += 1
    return steps


# --------------------------------------------------------------------------- overhead
def _networks(profile: Profile, device: torch.device) -> List[Tuple[str, torch.nn.Module, Tuple[int, ...]]]:
    """The score networks: a small MLP on 2-D data and a U-Net on images (eval mode, on ``device``)."""
    from scoresde.nets import MLP, UNet

    C, S, _ = profile.unet_image
    with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the global RNG alone
        torch.manual_seed(0)
        mlp = MLP(dim=2, hidden=profile.mlp_hidden, depth=2)
        unet = UNet(
            in_channels=C,
            image_size=S,
            channels=profile.unet_channels,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            dropout=0.0,
        )
        with torch.no_grad():  # the U-Net's output layer starts at zero; give it a non-trivial output
            unet.conv_out.weight.normal_(0, 0.05)
    return [
        (f"mlp(hidden={profile.mlp_hidden})", mlp.to(device).eval(), (profile.mlp_batch, 2)),
        (f"unet({C}x{S}x{S}, ch={profile.unet_channels})", unet.to(device).eval(), (profile.unet_batch, C, S, S)),
    ]


def overhead_configs(profile: Profile) -> List[SolverConfig]:
    """Every solver once: the fixed-step configurations and dopri5 at a loose tolerance."""
    return list(FIXED_CONFIGS) + [ADAPTIVE_CONFIG.with_tolerance(1e-3)]


def measure_overhead(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    shape: Sequence[int],
    config: SolverConfig,
    steps: Optional[int],
    device: torch.device,
    repeats: int,
    seed: int = 0,
) -> Dict[str, Any]:
    """Overhead ratio of one solver: ``solve seconds / (nfe x seconds of one bare evaluation)``.

    The bare evaluation is ``score_fn(x, t)`` on one batch of the solve's shape. Each repeat times
    a block of ``nfe`` bare evaluations of that batch and then one solve, so both see the same
    machine load. Reported:

    * ``ratio``: the minimum solve time over the minimum bare-block time (timeit's rule: the
      fastest repeat is the one least disturbed by other processes);
    * ``ratio_median``: the median over repeats of the per-repeat ratios;
    * ``bare_ms``: the bare evaluation time (fastest block divided by ``nfe``).

    One untimed solve warms up and fixes ``nfe``.

    Returns:
        ``{"nfe", "steps", "ratio", "ratio_median", "ratio_min", "ratio_max", "seconds", "bare_ms", "repeats"}``.
    """
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sample(shape, generator=g, device=device)
    t = torch.full((shape[0],), 0.5, device=device)

    def run() -> scoresde.SampleResult:
        return scoresde.solve(
            sde,
            score_fn,
            shape,
            solver=config.solver,
            steps=steps,
            device=device,
            generator=torch.Generator().manual_seed(seed),
            **config.options,
        )

    with torch.no_grad():
        nfe = run().nfe  # warm-up (allocator, lazy initialisation) and the NFE of this configuration

        def bare_block() -> None:
            for _ in range(nfe):
                score_fn(x, t)

        bare_block()
        solve_s, block_s = [], []
        for _ in range(max(1, repeats)):
            block_s.append(timed(bare_block, device)[0])
            s, res = timed(run, device)
            if res.nfe != nfe:
                raise RuntimeError(f"{config.label}: NFE changed between runs ({nfe} -> {res.nfe})")
            solve_s.append(s)
    ratios = [s / b for s, b in zip(solve_s, block_s)]
    return {
        "nfe": int(nfe),
        "steps": steps,
        "ratio": min(solve_s) / min(block_s),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "seconds": min(solve_s),
        "bare_ms": 1e3 * min(block_s) / nfe,
        "repeats": len(ratios),
    }


def solver_overhead(
    device: str = "cpu",
    quick: bool = True,
    profile: "str | Profile | None" = None,
    configs: Optional[Sequence[SolverConfig]] = None,
) -> List[Dict[str, Any]]:
    """Overhead ratio of every solver on a small MLP and on a U-Net-sized network.

    The score is the network wrapped as :class:`scoresde.NetworkScore` (``eps`` parameterization)
    of a VP SDE. The ratio's limit is 1.0: all time spent in the network.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        quick: use the quick profile (ignored when ``profile`` is given).
        profile: ``"smoke"``, ``"quick"``, ``"full"`` or a :class:`Profile`.
        configs: solver configurations (default: :func:`overhead_configs`).

    Returns:
        One row per (network, solver): ``{"network", "solver", "nfe", "ratio", "ratio_median",
        "ratio_min", "ratio_max", "seconds", "bare_ms", "batch", "steps", "repeats", "device", "name",
        "options"}`` (``name`` and ``options`` rebuild the solver; see
        :func:`measure_overhead`); a row whose solve fails
        holds ``"error"`` instead of the measurements.
    """
    prof = get_profile(profile, quick)
    dev = torch.device(device)
    sde = build_sde("vp")
    rows: List[Dict[str, Any]] = []
    for net_name, net, shape in _networks(prof, dev):
        score = scoresde.NetworkScore(net, sde, "eps")
        for cfg in configs or overhead_configs(prof):
            row: Dict[str, Any] = {
                "network": net_name,
                "solver": cfg.label,
                "name": cfg.solver,
                "options": dict(cfg.options),
                "batch": list(shape),
                "device": str(dev),
            }
            try:
                steps = None if cfg.adaptive else fit_steps(cfg, sde, shape[1:], prof.overhead_nfe)
                if not cfg.adaptive and steps is None:
                    continue
                row.update(measure_overhead(score, sde, shape, cfg, steps, dev, prof.overhead_repeats))
            except Exception as e:  # a failing solver is a result, not a crash of the suite
                row["error"] = error_text(e)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- quality
def quality_configs(profile: Profile) -> List[Tuple[SolverConfig, Optional[int]]]:
    """``(config, target_nfe)`` pairs: every fixed config (less ``profile.skip_solvers``) at every budget,
    dopri5 at every tolerance."""
    pairs: List[Tuple[SolverConfig, Optional[int]]] = [
        (c, n) for c in FIXED_CONFIGS if c.label not in profile.skip_solvers for n in profile.nfe_budgets
    ]
    pairs += [(ADAPTIVE_CONFIG.with_tolerance(tol), None) for tol in profile.tolerances]
    return pairs


def run_quality(
    problem: str,
    sde_name: str,
    config: SolverConfig,
    target_nfe: Optional[int],
    reference,
    device: torch.device,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Optional[Dict[str, Any]]:
    """One quality row: sample with ``config`` at ``target_nfe`` and score against ``reference``.

    Returns ``None`` when the budget is too small for one step of the configuration.
    """
    sde = build_sde(sde_name)
    mixture = reference.mixture
    event = tuple(mixture.event_shape)
    row: Dict[str, Any] = {
        "problem": problem,
        "sde": sde_name,
        "solver": config.label,
        "target_nfe": target_nfe,
        "name": config.solver,
        "options": dict(config.options),
    }
    try:
        steps = None if config.adaptive else fit_steps(config, sde, event, int(target_nfe))
        if not config.adaptive and steps is None:
            return None
        row["steps"] = steps
        score = exact_score(mixture, sde)
        secs, res = timed(
            lambda: scoresde.solve(
                sde,
                score,
                (reference.n_samples, *event),
                solver=config.solver,
                steps=steps,
                device=device,
                dtype=dtype,
                generator=torch.Generator().manual_seed(seed),
                **config.options,
            ),
            device,
        )
        row.update(nfe=int(res.nfe), seconds=secs)
        samples = res.samples
    except Exception as e:
        row["error"] = error_text(e)
        return row
    row.update(reference.score(samples))
    return row


def quality_vs_nfe(
    device: str = "cpu",
    quick: bool = True,
    profile: "str | Profile | None" = None,
    configs: Optional[Sequence[Tuple[SolverConfig, Optional[int]]]] = None,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """Sample quality of every solver against its number of score evaluations.

    For each ``(problem, sde)`` pair of the profile (2-D and 16-D Gaussian mixtures; VP and VE),
    each fixed-step configuration runs at the largest step count within each NFE budget and
    dopri5 at each tolerance; all runs start from the same prior noise (same seed).

    Returns:
        Rows ``{"problem", "sde", "solver", "nfe", "seconds", "sw2", "dlogp", "dlogp_stderr",
        "sw2_floor", "sw2_floor_sd", "target_nfe", "steps", "name", "options"}`` (``"error"``
        instead of the metrics when a solve fails). ``sw2_floor`` (``sw2_floor_sd``) is the mean
        (sd) SW2 that exact samples of the same size score; ``dlogp_stderr`` the standard error of
        ``dlogp`` for exact samples.
    """
    prof = get_profile(profile, quick)
    dev = torch.device(device)
    rows: List[Dict[str, Any]] = []
    refs: Dict[str, Any] = {}
    for problem, sde_name in prof.quality_problems:
        if problem not in refs:
            refs[problem] = quality_reference(problem, prof, seed)
        for cfg, target in configs or quality_configs(prof):
            row = run_quality(problem, sde_name, cfg, target, refs[problem], dev, seed)
            if row is not None:
                rows.append(row)
    return rows


__all__ = [
    "SolverConfig",
    "FIXED_CONFIGS",
    "ADAPTIVE_CONFIG",
    "solver_nfe",
    "nfe_pattern",
    "steps_for_nfe",
    "fit_steps",
    "overhead_configs",
    "measure_overhead",
    "solver_overhead",
    "quality_configs",
    "run_quality",
    "quality_vs_nfe",
]
