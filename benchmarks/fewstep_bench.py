"""Few-step sample quality: our best solver against the best peer at the same NFE, in one run.

Problems (``common.make_mixture``): Gaussian mixtures with narrow, well separated
components in 2, 8 and 32 dimensions (``fs2d``, ``fs8d``, ``fs32d``), under the VP and the VE SDE,
each with its exact score. At each NFE budget of the profile, every candidate configuration of each side runs on the same prior draws and gets the same metrics as
``solvers_bench``: the sliced W2 distance to true samples and ``dlogp``, the mean
true log-density of the samples minus that of true samples. NFE counts every score evaluation,
the final denoising step included: ``SampleResult.nfe`` for ours, the calls of the model wrapper
for the peers.

Sides:

* ours: every few-step solver in :data:`scoresde.SOLVERS` (``ddim``, ``ode`` with Heun and RK4, and
  ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``ipndm``, ``edm``, ``dpmpp_2m_sde`` when present), each
  on its default grid and on the ``log_snr``, ``karras`` and ``uniform`` grids, and on a
  :class:`~scoresde.solvers.optimized_grids.GITS` grid fitted once per problem (its fit is not
  counted in the NFE: it is a one-off cost per model, like the peers' choice of settings); a
  profile may try fewer grids (``Profile.fewstep_grids``);
* peers, VP: diffusers' ``DPMSolverMultistepScheduler`` (DPM-Solver++, orders 2 and 3),
  ``UniPCMultistepScheduler`` (orders 2 and 3) and ``DEISMultistepScheduler`` (orders 2 and 3) on
  the DDPM schedule, each with every ``timestep_spacing`` (linspace, leading, trailing),
  ``lower_order_final`` on and off, and with and without Karras sigmas (or only their defaults:
  ``Profile.fewstep_peer_search``); the model sees our exact score at the scheduler's own noise
  level (``peers.eps_model``);
* peers, VP and VE: direct transcriptions of DPM-Solver++(2M) and of EDM's Heun sampler
  (``paper_samplers``) on Karras (rho = 7) and log-SNR noise levels between our
  SDE's ``sigma(T)`` and ``sigma(eps)``.

Selection is the same on both sides: each candidate runs on seed 0, the one with the lowest SW2
is the side's best at that budget, and the best of each side then runs on every seed (the same
seeds, hence the same prior draws, on both sides); the table reports mean +- standard error over
seeds and the verdict of ``peers.verdict`` on the paired SW2 differences.

The schedule rows answer "is the GITS grid a fair advantage?": the peers' DDIM and DPM-Solver++(2M)
transcriptions on the same GITS noise levels, against our best solver on that grid.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde
from scoresde import SDE, CountedScore
from scoresde.checkpoint import build_sde
from scoresde.solvers.optimized_grids import GITS

import paper_samplers
from common import Profile, error_text, exact_score, get_profile, mean_se, quality_reference
from peers import denoiser, eps_model, verdict
from solvers_bench import SolverConfig, fit_steps

EPS = 1e-3  # the final time of our solvers (and the GITS fit); sigma(EPS) is the peers' sigma_min
#: GITS fit: at least this many fine steps (and 3 per step of the largest budget), on this many teacher samples
GITS_FINE_STEPS, GITS_SAMPLES = 64, 512

#: Our deterministic few-step candidates (present ones only), then the stochastic ones.
OURS_DETERMINISTIC: Tuple[SolverConfig, ...] = (
    SolverConfig("ddim", "ddim"),
    SolverConfig("ode:heun", "ode", {"method": "heun"}),
    SolverConfig("ode:rk4", "ode", {"method": "rk4"}),
    SolverConfig("dpmpp_2m", "dpmpp_2m"),
    SolverConfig("dpmpp_2m(lof=False)", "dpmpp_2m", {"lower_order_final": False}),
    SolverConfig("dpmpp_3m", "dpmpp_3m"),
    SolverConfig("dpmpp_3m(lof=False)", "dpmpp_3m", {"lower_order_final": False}),
    SolverConfig("unipc", "unipc"),
    SolverConfig("unipc(order=3)", "unipc", {"order": 3}),
    SolverConfig("ipndm", "ipndm"),
    SolverConfig("ipndm(variable_step)", "ipndm", {"variable_step": True}),
    SolverConfig("edm", "edm"),
)
OURS_STOCHASTIC: Tuple[SolverConfig, ...] = (
    SolverConfig("ancestral", "ancestral"),
    SolverConfig("ddim(eta=1)", "ddim", {"eta": 1.0}),
    SolverConfig("dpmpp_2m_sde", "dpmpp_2m_sde"),
    SolverConfig("dpmpp_3m_sde", "dpmpp_3m_sde"),
)
OUR_GRIDS: Tuple[Optional[str], ...] = (None, "log_snr", "karras", "uniform", "gits")

#: diffusers multistep schedulers: (label, class name, options).
DIFFUSERS_MULTISTEP: Tuple[Tuple[str, str, Dict[str, Any]], ...] = (
    ("DPM-Solver++(2M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("DPM-Solver++(3M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    ("UniPC(2)", "UniPCMultistepScheduler", {"solver_order": 2}),
    ("UniPC(3)", "UniPCMultistepScheduler", {"solver_order": 3}),
    ("DEIS(2)", "DEISMultistepScheduler", {"solver_order": 2}),
    ("DEIS(3)", "DEISMultistepScheduler", {"solver_order": 3}),
)
_DDPM_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon"
)


def supported(config: SolverConfig) -> bool:
    """Whether ``config``'s solver is in :data:`scoresde.SOLVERS` (the few-step solvers may be absent)."""
    return config.solver in scoresde.SOLVERS


def diffusers_settings(search: str) -> List[Dict[str, Any]]:
    """The diffusers settings tried per scheduler: ``"all"`` or only the defaults (``"default"``)."""
    if search == "default":
        return [{}]
    out = []
    for spacing in ("linspace", "leading", "trailing"):
        for lof in (True, False):
            for karras in (False, True):
                out.append({"timestep_spacing": spacing, "lower_order_final": lof, "use_karras_sigmas": karras})
    return out


# --------------------------------------------------------------------------- one run of each kind
@dataclass
class Candidate:
    """One sampler configuration of one side: ``run(seed) -> (samples, nfe)``."""

    side: str  # "ours" or "peer"
    label: str
    family: str  # "deterministic" or "stochastic"
    run: Callable[[int], Tuple[Tensor, int]] = field(repr=False)


def diffusers_sample(
    cls_name: str, options: Dict[str, Any], sde: SDE, score_fn: Callable, shape: Sequence[int], nfe: int, seed: int
) -> Tuple[Tensor, int]:
    """A diffusers multistep scheduler with ``nfe`` inference steps on the DDPM schedule.

    The scheduler's own noise-to-signal ratio at each step (``scheduler.sigmas[i]``, which for a
    Karras schedule is the exact level it integrates to, not the one of the rounded timestep) is
    passed to the noise-prediction model, which returns ``-std(t) score(x, t)`` at ``t(sigma)``.
    The prior draw is ``N(0, I)`` from ``seed``, as our VP solvers draw it; a stochastic scheduler draws its
    step noise from the same generator after it.

    Returns:
        ``(samples [B, *event], nfe)`` with ``nfe`` the number of model calls.
    """
    import diffusers

    sched = getattr(diffusers, cls_name)(**_DDPM_SCHEDULE, **options)
    sched.set_timesteps(nfe)
    model = CountedScore(eps_model(sde, score_fn))
    g = torch.Generator().manual_seed(seed)
    x = sde.prior_sample(tuple(shape), generator=g) * sched.init_noise_sigma
    noise = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}  # stochastic ones
    for i, t in enumerate(sched.timesteps):
        sigma = sched.sigmas[i].to(x.dtype).expand(shape[0])
        x = sched.step(model(sched.scale_model_input(x, t), sigma), t, x, **noise).prev_sample
    return x, model.nfe


def paper_sample(
    kind: str, sigmas: Tensor, sde: SDE, score_fn: Callable, shape: Sequence[int], seed: int
) -> Tuple[Tensor, int]:
    """A transcription of ``paper_samplers`` on the noise levels ``sigmas`` (ending with 0).

    Starts from our prior draw for ``seed`` divided by ``scale(T)`` (the sigma frame).
    """
    model = CountedScore(denoiser(sde, score_fn))
    scale_T, _ = sde.marginal_coeffs(torch.full((1,), sde.T, dtype=torch.float64))
    x = sde.prior_sample(tuple(shape), generator=torch.Generator().manual_seed(seed)) / float(scale_T)
    fn = {"ddim": paper_samplers.ddim, "dpmpp_2m": paper_samplers.dpmpp_2m, "heun": paper_samplers.edm_heun}[kind]
    return fn(model, x, sigmas.to(x.dtype)), model.nfe


def sigma_range(sde: SDE) -> Tuple[float, float]:
    """``(sigma(T), sigma(EPS))``: the noise levels our solvers run between."""
    r = sde.noise_to_signal(torch.tensor([sde.T, EPS], dtype=torch.float64))
    return float(r[0]), float(r[1])


def our_candidates(
    sde: SDE,
    score: Callable,
    shape: Sequence[int],
    nfe: int,
    gits: Optional[GITS],
    grids: Optional[Sequence[Optional[str]]] = None,
) -> List[Candidate]:
    """Our configurations x ``grids`` (default :data:`OUR_GRIDS`) that fit in ``nfe`` evaluations."""
    grids = OUR_GRIDS if grids is None else grids
    out = []
    for family, configs in (("deterministic", OURS_DETERMINISTIC), ("stochastic", OURS_STOCHASTIC)):
        for cfg in configs:
            if not supported(cfg):
                continue
            try:
                steps = fit_steps(cfg, sde, shape[1:], nfe)
            except Exception:  # a solver that cannot run this SDE
                continue
            if steps is None:
                continue
            for grid in grids:
                if grid == "gits" and gits is None:
                    continue
                g_arg = gits if grid == "gits" else grid
                label = cfg.label if grid is None else f"{cfg.label} @ {grid}"

                def run(seed: int, cfg=cfg, steps=steps, g_arg=g_arg) -> Tuple[Tensor, int]:
                    kw = dict(cfg.options)
                    if g_arg is not None:
                        kw["grid"] = g_arg
                        kw["eps"] = EPS
                    res = scoresde.solve(
                        sde, score, tuple(shape), solver=cfg.solver, steps=steps,
                        generator=torch.Generator().manual_seed(seed), **kw,
                    )
                    return res.samples, int(res.nfe)

                out.append(Candidate("ours", label, family, run))
    return out


def peer_candidates(
    sde_name: str, sde: SDE, score: Callable, shape: Sequence[int], nfe: int, search: str
) -> List[Candidate]:
    """The peers' configurations at ``nfe`` (diffusers on VP only; the transcriptions on both)."""
    out: List[Candidate] = []
    if sde_name == "vp":
        try:
            import diffusers  # noqa: F401
        except ImportError:
            pass
        else:
            for label, cls_name, base in DIFFUSERS_MULTISTEP:
                for opts in diffusers_settings(search):
                    options = dict(base, **opts)
                    tag = ",".join(f"{k}={v}" for k, v in opts.items()).replace("timestep_spacing=", "").replace(
                        "lower_order_final", "lof").replace("use_karras_sigmas", "karras")
                    out.append(
                        Candidate(
                            "peer",
                            f"diffusers {label}" + (f" [{tag}]" if tag else ""),
                            "deterministic",
                            lambda seed, c=cls_name, o=options: diffusers_sample(c, o, sde, score, shape, nfe, seed),
                        )
                    )
    s_max, s_min = sigma_range(sde)
    for kind, label, n in (("dpmpp_2m", "DPM-Solver++(2M) (paper)", nfe), ("heun", "EDM Heun (paper)", (nfe + 1) // 2)):
        if n < 1:
            continue
        for spacing, sig in (
            ("karras", paper_samplers.karras_sigmas(s_max, s_min, n)),
            ("log_snr", paper_samplers.log_snr_sigmas(s_max, s_min, n)),
        ):
            out.append(
                Candidate(
                    "peer",
                    f"{label} @ {spacing}",
                    "deterministic",
                    lambda seed, k=kind, sg=sig: paper_sample(k, sg, sde, score, shape, seed),
                )
            )
    return out


# --------------------------------------------------------------------------- the section
def _evaluate(cand: Candidate, seed: int, ref) -> Dict[str, Any]:
    try:
        t0 = time.perf_counter()
        x, n = cand.run(seed)
        q = ref.score(x)
        return dict(nfe=n, sw2=q["sw2"], dlogp=q["dlogp"], seconds=time.perf_counter() - t0)
    except Exception as e:
        return dict(error=error_text(e), sw2=float("nan"), dlogp=float("nan"))


def _best(cands: List[Tuple[Candidate, Dict[str, Any]]]) -> Optional[Tuple[Candidate, Dict[str, Any]]]:
    ok = [(c, r) for c, r in cands if not math.isnan(r["sw2"])]
    return min(ok, key=lambda cr: cr[1]["sw2"]) if ok else None


def _summary(side: str, cand: Candidate, per_seed: List[Dict[str, Any]]) -> Dict[str, Any]:
    sw2 = [r["sw2"] for r in per_seed]
    dlogp = [r["dlogp"] for r in per_seed]
    m, se = mean_se(sw2)
    dm, dse = mean_se(dlogp)
    return {
        f"{side}_label": cand.label,
        f"{side}_family": cand.family,
        f"{side}_nfe": max((r.get("nfe", 0) for r in per_seed), default=0),
        f"{side}_sw2": m,
        f"{side}_sw2_se": se,
        f"{side}_dlogp": dm,
        f"{side}_dlogp_se": dse,
        f"{side}_sw2_seeds": sw2,
    }


def fewstep(
    device: str = "cpu",
    quick: bool = True,
    profile: "str | Profile | None" = None,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """The few-step comparison; see the module docstring.

    Returns:
        ``{"rows", "schedule", "candidates", "settings"}``: ``rows`` one per (problem, SDE, NFE) with
        ``ours_*`` and ``peer_*`` (label, family, nfe, sw2, sw2_se, dlogp, dlogp_se, per-seed SW2),
        ``ours_det_*`` (our best deterministic solver), ``sw2_floor``, ``dlogp_stderr`` (one sample
        set's), ``seeds`` and ``verdict``; ``schedule`` one per (problem, SDE, NFE) with the GITS rows;
        ``candidates`` every configuration's seed-0 SW2, dlogp and NFE; ``settings`` the sizes.
    """
    del device  # exact scores on CPU; the peers' loops run on CPU
    prof = get_profile(profile, quick)
    seeds = list(range(prof.fewstep_seeds))
    rows: List[Dict[str, Any]] = []
    schedule: List[Dict[str, Any]] = []
    candidates: List[Dict[str, Any]] = []
    fit_seconds: Dict[str, float] = {}
    refs: Dict[str, Any] = {}
    grids = OUR_GRIDS if prof.fewstep_grids is None else prof.fewstep_grids
    t_start = time.perf_counter()
    for problem, sde_name in prof.fewstep_problems:
        if problem not in refs:
            refs[problem] = quality_reference(problem, prof, seed=0, n_samples=prof.fewstep_samples)
        ref = refs[problem]
        sde = build_sde(sde_name)
        score = exact_score(ref.mixture, sde)
        event = tuple(ref.mixture.event_shape)
        shape = (prof.fewstep_samples, *event)
        gits = None
        if "gits" in grids:
            t0 = time.perf_counter()
            gits = GITS(fine_steps=max(GITS_FINE_STEPS, 3 * max(prof.fewstep_nfe)), samples=GITS_SAMPLES).fit(
                sde, score, event, eps=EPS, generator=torch.Generator().manual_seed(2024)
            )
            fit_seconds[f"{problem}/{sde_name}"] = round(time.perf_counter() - t0, 2)
        for nfe in prof.fewstep_nfe:
            pool = our_candidates(sde, score, shape, nfe, gits, grids) + peer_candidates(
                sde_name, sde, score, shape, nfe, prof.fewstep_peer_search
            )
            first = [(c, _evaluate(c, seeds[0], ref)) for c in pool]
            for c, r in first:
                candidates.append(
                    dict(problem=problem, sde=sde_name, target_nfe=nfe, side=c.side, label=c.label, family=c.family, **r)
                )
            cache: Dict[str, List[Dict[str, Any]]] = {}

            def all_seeds(c: Candidate, r0: Dict[str, Any]) -> List[Dict[str, Any]]:
                key = f"{c.side}/{c.label}"
                if key not in cache:
                    cache[key] = [r0] + [_evaluate(c, s, ref) for s in seeds[1:]]
                return cache[key]

            row: Dict[str, Any] = dict(
                problem=problem, sde=sde_name, nfe=nfe, seeds=len(seeds), samples=prof.fewstep_samples,
                sw2_floor=ref.sw2_floor, sw2_floor_sd=ref.sw2_floor_sd, dlogp_stderr=ref.logp_std / math.sqrt(shape[0]),
            )
            picks = {
                "ours": _best([(c, r) for c, r in first if c.side == "ours"]),
                "ours_det": _best([(c, r) for c, r in first if c.side == "ours" and c.family == "deterministic"]),
                "ours_nogits": _best([(c, r) for c, r in first if c.side == "ours" and not c.label.endswith("@ gits")]),
                "peer": _best([(c, r) for c, r in first if c.side == "peer"]),
            }
            for side, pick in picks.items():
                if pick is not None:
                    row.update(_summary(side, pick[0], all_seeds(*pick)))
            if picks["ours"] and picks["peer"]:
                row["verdict"] = verdict(row["ours_sw2_seeds"], row["peer_sw2_seeds"])
                for side in ("ours_det", "ours_nogits"):
                    if picks[side]:
                        row[f"{side}_verdict"] = verdict(row[f"{side}_sw2_seeds"], row["peer_sw2_seeds"])
            rows.append(row)
            if log is not None:
                log(
                    f"[fewstep] {problem}/{sde_name} NFE {nfe}: {len(pool)} candidates; ours {row.get('ours_label')} "
                    f"{row.get('ours_sw2', float('nan')):.4f}, peer {row.get('peer_label')} "
                    f"{row.get('peer_sw2', float('nan')):.4f} ({time.perf_counter() - t_start:.0f} s)"
                )
            # the schedule question: the peers' transcriptions on the same GITS noise levels
            gits_ours = _best([(c, r) for c, r in first if c.side == "ours" and c.label.endswith("@ gits")])
            if gits_ours is not None:
                times = gits(sde, nfe - 1, EPS)
                sig = torch.cat([sde.noise_to_signal(times), torch.zeros(1, dtype=torch.float64)])
                peer_gits = [
                    Candidate(
                        "peer", f"{name} (paper) @ gits", "deterministic",
                        lambda seed, k=kind: paper_sample(k, sig, sde, score, shape, seed),
                    )
                    for kind, name in (("ddim", "DDIM"), ("dpmpp_2m", "DPM-Solver++(2M)"))
                ]
                peer_best = _best([(c, _evaluate(c, seeds[0], ref)) for c in peer_gits])
                srow = dict(problem=problem, sde=sde_name, nfe=nfe, gits_times=[round(float(t), 5) for t in times])
                srow.update(_summary("ours", gits_ours[0], all_seeds(*gits_ours)))
                if peer_best is not None:
                    srow.update(_summary("peer", peer_best[0], all_seeds(*peer_best)))
                    srow["verdict"] = verdict(srow["ours_sw2_seeds"], srow["peer_sw2_seeds"])
                schedule.append(srow)
    settings = dict(
        seeds=len(seeds), samples=prof.fewstep_samples, nfe=list(prof.fewstep_nfe), eps=EPS,
        peer_search=prof.fewstep_peer_search, gits_fit_seconds=fit_seconds,
        our_grids=[g or "default" for g in grids],
        our_solvers=[c.label for c in OURS_DETERMINISTIC + OURS_STOCHASTIC if supported(c)],
        missing_solvers=[c.label for c in OURS_DETERMINISTIC + OURS_STOCHASTIC if not supported(c)],
    )
    return {"rows": rows, "schedule": schedule, "candidates": candidates, "settings": settings}


__all__ = [
    "OURS_DETERMINISTIC",
    "OURS_STOCHASTIC",
    "DIFFUSERS_MULTISTEP",
    "diffusers_settings",
    "diffusers_sample",
    "paper_sample",
    "our_candidates",
    "peer_candidates",
    "fewstep",
]
