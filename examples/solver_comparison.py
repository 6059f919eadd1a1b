"""Sample quality against the number of score evaluations (NFE) for every solver, on an exact score.

    python examples/solver_comparison.py --out docs/figures/solver_comparison.png   # 2-4 minutes on 2 CPU cores
    python examples/solver_comparison.py --quick --out solvers.png                  # a few seconds

The model is the exact score of the 8-Gaussian ring of :func:`scoresde.data.toy_gmm` under the VP
SDE (``--sde ve`` for the VE SDE), so the only error left is the solver's. Each fixed-step solver
runs at the largest number of steps whose NFE fits each budget; the adaptive probability-flow ODE
(dopri5) runs at several tolerances. Every run starts from the same prior noise.

Two scores per run, both against the true distribution, averaged over ``--seeds`` prior draws:

* ``SW2``: sliced Wasserstein-2 distance to as many exact samples; exact samples themselves score
  the dashed "floor" line, and the grey band around it is the metric's noise (differences inside
  it mean nothing);
* ``dlogp``: mean true log-density of the samples minus its expectation under the data: 0 for
  exact samples, positive when samples crowd the modes (too little noise), negative when they
  spread out (too much).

The figure plots SW2 and dlogp against NFE, and SW2 against wall time; the script prints the table
as it goes, one row per run (about 70 runs, each one to a few seconds).

It runs on one CPU thread by default (``--threads``): these small tensors gain nothing from a second
thread, and on a busy machine torch's default of one thread per core makes every step many times slower.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

import scoresde
from scoresde.data import toy_gmm
from scoresde.metrics import sliced_wasserstein

#: label -> (solver name, options): every fixed-step solver of scoresde.SOLVERS.
FIXED: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "euler_maruyama": ("euler_maruyama", {}),
    "reverse_diffusion": ("reverse_diffusion", {}),
    "ancestral": ("ancestral", {}),
    "pc": ("pc", {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
    "langevin": ("langevin", {"snr": 0.16}),
    "annealed_langevin": ("annealed_langevin", {"steps_per_level": 2}),
    "ddim": ("ddim", {}),
    "ode:euler": ("ode", {"method": "euler"}),
    "ode:heun": ("ode", {"method": "heun"}),
    "ode:rk4": ("ode", {"method": "rk4"}),
    "torchsde:euler": ("torchsde", {"method": "euler"}),
}
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)


def nfe_of(sde: scoresde.SDE, score, solver: str, options: Dict[str, Any], steps: int) -> int:
    """NFE that ``solver`` reports for ``steps`` steps (a solve of two samples)."""
    return scoresde.solve(sde, score, (2, 2), solver=solver, steps=steps, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0), **options).nfe


def steps_within(sde: scoresde.SDE, score, solver: str, options: Dict[str, Any], budget: int) -> Optional[int]:
    """The largest number of steps whose NFE is at most ``budget`` (``None`` if one step is too many)."""
    n1, n2 = nfe_of(sde, score, solver, options, 1), nfe_of(sde, score, solver, options, 2)
    per_step, extra = n2 - n1, n1 - (n2 - n1)
    steps = (budget - extra) // max(per_step, 1)
    while steps >= 1 and nfe_of(sde, score, solver, options, steps) > budget:  # NFE not linear in steps
        steps -= 1
    return int(steps) if steps >= 1 else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="solver_comparison.png", help="PNG to write")
    p.add_argument("--sde", choices=("vp", "ve"), default="vp", help="forward SDE (default: vp)")
    p.add_argument("--samples", type=int, help="samples per run (default: 4000; 1000 with --quick)")
    p.add_argument("--seeds", type=int, help="runs per point, averaged (default: 3; 1 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default: 1, the fastest for these small tensors)")
    p.add_argument("--quick", action="store_true", help="two budgets and fewer samples, for smoke tests")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    n = args.samples or (1000 if args.quick else 4000)
    args.seeds = args.seeds or (1 if args.quick else 3)
    budgets = (10, 50) if args.quick else (10, 20, 50, 100, 200, 500)
    tolerances = (1e-3,) if args.quick else TOLERANCES

    gmm = toy_gmm(torch.float64)
    sde = scoresde.VPSDE() if args.sde == "vp" else scoresde.VESDE(sigma_min=0.01, sigma_max=3.0)
    score = gmm.score_fn(sde)

    # reference values: E[log p] and the SW2 of exact samples (the floor of the metric)
    ref = gmm.log_prob(gmm.sample(200_000, generator=torch.Generator().manual_seed(args.seed + 1)))
    expected, se = float(ref.mean()), float(ref.std()) / math.sqrt(n * args.seeds)
    truth = gmm.sample(n, generator=torch.Generator().manual_seed(args.seed + 2))
    proj = lambda: torch.Generator().manual_seed(args.seed + 3)  # noqa: E731  the same directions for every run
    # exact samples score SW2 > 0 too: its mean over draws, and the spread of a mean over `seeds` draws
    floors = torch.tensor([sliced_wasserstein(gmm.sample(n, generator=torch.Generator().manual_seed(args.seed + 4 + k)),
                                              truth, generator=proj()) for k in range(10)])
    floor, floor_band = float(floors.mean()), 2 * float(floors.std()) / math.sqrt(args.seeds)

    runs: List[Tuple[str, Optional[int], Dict[str, Any]]] = []  # (label, steps, options)
    for label, (solver, options) in FIXED.items():
        for budget in budgets:
            steps = steps_within(sde, score, solver, options, budget)
            if steps is not None and (label, steps) not in {(r[0], r[1]) for r in runs}:
                runs.append((label, steps, dict(options)))
    runs += [("ode:dopri5", None, {"method": "dopri5", "rtol": tol, "atol": tol}) for tol in tolerances]

    rows: List[Dict[str, Any]] = []
    print(f"{len(runs)} runs of {n} samples, {args.seeds} seed(s) each, on {args.threads} thread(s); one row per run:",
          flush=True)
    header = f"{'solver':<18}{'steps':>6}{'NFE':>6}{'seconds':>9}{'SW2':>8}{'dlogp':>9}"
    print(f"{header}   (means over {args.seeds} seed(s))", flush=True)
    t_all = time.perf_counter()
    for label, steps, options in runs:
        solver = FIXED[label][0] if label in FIXED else "ode"
        stats = []
        try:
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                res = scoresde.solve(sde, score, (n, 2), solver=solver, steps=steps, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(args.seed + 10 * seed), **options)
                seconds = time.perf_counter() - t0
                stats.append((seconds, sliced_wasserstein(res.samples, truth, generator=proj()),
                              float(gmm.log_prob(res.samples).mean()) - expected))
        except scoresde.ScoreSDEError as e:  # a failed run is a result too: report it and go on
            print(f"{label:<18}{steps or '':>6}  failed: {e}", flush=True)
            continue
        seconds, sw2, dlogp = (sum(v) / len(v) for v in zip(*stats))
        rows.append(dict(label=label, steps=steps, nfe=res.nfe, seconds=seconds, sw2=sw2, dlogp=dlogp))
        print(f"{label:<18}{steps or '':>6}{res.nfe:>6}{seconds:>9.2f}{sw2:>8.3f}{dlogp:>+9.3f}", flush=True)
    print(f"{len(runs)} runs in {time.perf_counter() - t_all:.0f} s", flush=True)
    print(f"exact samples: SW2 {floor:.3f} (+- {floor_band:.3f}, 2 s.d. of a mean over {args.seeds} draws); "
          f"standard error of dlogp {se:.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    markers = "os^vD<>pPX*h"
    for i, label in enumerate(labels):
        pts = sorted((r["nfe"], r["sw2"], r["dlogp"], r["seconds"]) for r in rows if r["label"] == label)
        nfe, sw2, dlogp, secs = zip(*pts)
        style = dict(marker=markers[i % len(markers)], ms=4, lw=1.2, label=label, color=plt.get_cmap("tab20")(i))
        axes[0].plot(nfe, sw2, **style)
        axes[1].plot(nfe, dlogp, **style)
        axes[2].plot(secs, sw2, **style)
    for ax in (axes[0], axes[2]):
        ax.axhspan(floor - floor_band, floor + floor_band, color="0.85")
        ax.axhline(floor, color="k", ls="--", lw=0.8, label="exact samples (band: 2 s.d.)")
        ax.set(yscale="log", ylabel="sliced W2 to exact samples")
    axes[1].axhspan(-2 * se, 2 * se, color="0.85", label="exact samples (2 s.e.)")
    axes[1].set_yscale("symlog", linthresh=0.1, linscale=0.6)
    axes[1].set_yticks([-30, -10, -3, -1, -0.3, -0.1, 0, 0.1, 0.3, 1])
    axes[1].set_yticklabels(["-30", "-10", "-3", "-1", "-0.3", "-0.1", "0", "0.1", "0.3", "1"])
    axes[1].set_ylabel("dlogp = mean log p(samples) - E log p")
    axes[0].set(xscale="log", xlabel="NFE (score evaluations)", title="quality against NFE")
    axes[1].set(xscale="log", xlabel="NFE (score evaluations)", title="mode crowding (+) or spreading (-)")
    axes[2].set(xscale="log", xlabel=f"wall time of {n} samples (s)", title="quality against time")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    h0, n0 = axes[0].get_legend_handles_labels()
    handles, names = handles + h0[-1:], names + n0[-1:]
    fig.legend(handles, names, loc="lower center", ncol=8, fontsize=8, frameon=False)
    fig.suptitle(f"Exact score of an 8-Gaussian ring, {args.sde.upper()} SDE: {n} samples per run, "
                 f"means over {args.seeds} seed(s)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
