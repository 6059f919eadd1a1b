"""Annealed Langevin dynamics vs predictor–corrector vs the probability-flow ODE, on one model.

    python examples/langevin_vs_pc_vs_ode.py --out docs/figures/langevin_vs_pc_vs_ode.png   # under half a minute on 2 CPU cores
    python examples/langevin_vs_pc_vs_ode.py --quick --out langevin.png                     # a few seconds

The model is the exact score of a known distribution, so every difference in the figure comes
from the sampler: the 8-Gaussian ring of :func:`scoresde.data.toy_gmm` diffused by a VE SDE
(``sigma_max = 3``, about the largest distance between two data points, as NCSN recommends).

* annealed Langevin dynamics (NCSN): a geometric ladder of noise levels, Langevin steps at each;
* predictor–corrector: reverse-diffusion predictor plus one Langevin corrector step per time step;
* the probability-flow ODE: deterministic, adaptive dopri5 (top row) or fixed-step RK4 (bottom row).

Top row: the samplers at their usual, generous settings; bottom row: each cut to about 100 score
evaluations. Each panel reports the NFE and ``dlogp``, the mean true log-density of the samples
minus its expectation under the data: 0 for exact samples (within the printed standard error),
positive when samples crowd the modes, negative when they spread out.

It runs on one CPU thread by default (``--threads``): these small tensors gain nothing from a second
thread, and on a busy machine torch's default of one thread per core makes every step many times
slower. Each sampler prints a line when it starts and its time when it ends.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

import scoresde
from scoresde.data import toy_gmm

#: label -> (solver, steps, options) at generous settings and at about 100 NFE.
GENEROUS: Dict[str, Tuple[str, Optional[int], dict]] = {
    "annealed Langevin": ("annealed_langevin", 100, dict(steps_per_level=10, step_ratio=0.2)),
    "predictor–corrector": ("pc", 500, dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
    "probability-flow ODE": ("ode", None, dict(method="dopri5", rtol=1e-5, atol=1e-5)),
}
CHEAP: Dict[str, Tuple[str, Optional[int], dict]] = {
    "annealed Langevin": ("annealed_langevin", 50, dict(steps_per_level=2, step_ratio=0.2)),
    "predictor–corrector": ("pc", 50, dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
    "probability-flow ODE": ("ode", 25, dict(method="rk4")),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="langevin_vs_pc_vs_ode.png", help="PNG to write")
    p.add_argument("--samples", type=int, help="samples per sampler (default: 4000; 500 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default: 1, the fastest for these small tensors)")
    p.add_argument("--quick", action="store_true", help="fewer samples and steps, for smoke tests")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    n = args.samples or (500 if args.quick else 4000)

    gmm = toy_gmm(torch.float64)
    sde = scoresde.VESDE(sigma_min=0.01, sigma_max=3.0)
    score = gmm.score_fn(sde)  # exact score of the diffused mixture at every t

    # E[log p(x)] under the data and the standard error of a mean over n samples
    ref = gmm.log_prob(gmm.sample(200_000, generator=torch.Generator().manual_seed(args.seed + 1)))
    expected, se = float(ref.mean()), float(ref.std()) / math.sqrt(n)
    print(f"E log p(x) = {expected:.4f}; the standard error of a mean over {n} exact samples is {se:.4f}", flush=True)

    rows = [("generous settings", GENEROUS), ("about 100 score evaluations", CHEAP)]
    results = []
    for row_name, configs in rows:
        for label, (solver, steps, options) in configs.items():
            if args.quick and configs is GENEROUS and steps is not None:
                steps //= 5  # smoke test: shorten only the generous settings
            if solver == "annealed_langevin":
                what = f"{steps} levels x {options['steps_per_level']} steps"
            elif steps is None:
                what = f"adaptive {options['method']}"
            else:
                what = f"{steps} steps" + (f", {options['method']}" if "method" in options else "")
            print(f"{row_name}: sampling {n} points with {solver} ({what})...", end=" ", flush=True)
            t0 = time.perf_counter()
            res = scoresde.solve(sde, score, (n, 2), solver=solver, steps=steps, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(args.seed), **options)
            seconds = time.perf_counter() - t0
            dlogp = float(gmm.log_prob(res.samples).mean()) - expected
            results.append((row_name, label, solver, options, res, dlogp, seconds))
            print(f"{seconds:.1f} s", flush=True)
            print(f"  {row_name:<28} {label:<22} NFE {res.nfe:>5}  dlogp {dlogp:+.3f}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = gmm.sample(n, generator=torch.Generator().manual_seed(args.seed + 2))
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    for k, (row_name, label, solver, options, res, dlogp, _) in enumerate(results):
        ax = axes[k // 3, k % 3]
        ax.scatter(truth[:, 0], truth[:, 1], s=2, c="0.8", linewidths=0)
        x = res.samples.float()
        ax.scatter(x[:, 0], x[:, 1], s=2, c=f"C{k % 3}", alpha=0.6, linewidths=0)
        steps = len(res.times) - 1  # the time grid has steps + 1 points
        if solver == "ode":
            detail = options["method"]
        elif solver == "annealed_langevin":
            detail = f"{steps} levels x {options['steps_per_level']} steps"
        else:
            detail = f"{steps} steps"
        ax.set_title(f"{label} ({detail})\nNFE {res.nfe}, dlogp {dlogp:+.3f}", fontsize=10)
        ax.set_xlim(-2.2, 2.2)
        ax.set_ylim(-2.2, 2.2)
        ax.set_aspect("equal")
        if k % 3 == 0:
            ax.set_ylabel(row_name)
    fig.suptitle(f"Exact score of an 8-Gaussian ring under the VE SDE (sigma_max = 3); {n} samples each; "
                 f"grey: true samples; dlogp standard error {se:.3f}", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
