"""Conditional generation against closed forms: inpainting bias, SMC convergence, guidance concentration.

    python benchmarks/conditional_bench.py --out benchmarks/results/conditional.md
    python benchmarks/conditional_bench.py --quick --out conditional-quick.md

Everything uses exact scores, so every number measures the sampler, not a network:

1. Inpainting a correlated 3-D Gaussian (entry 0 known, = 1.5): the error of the conditional mean and
   covariance of the two unknown entries against the exact Schur-complement answer, for the
   replacement method (``resample = 1``) and RePaint resampling, with two solvers.
2. :func:`scoresde.smc_inpaint` on the same problem: the mean squared error of the weighted-particle
   estimate of the conditional mean over ``R`` independent runs, against the number of particles,
   and the relative error of the evidence estimate ``exp(log Z)``.
3. Classifier-free guidance on a 3-component overlapping mixture: the mean exact posterior ``p(y | x)``
   of class-0 samples against the weight ``w``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

import scoresde
from scoresde import guidance
from scoresde.exact import Gaussian, GaussianMixture

SDE = scoresde.VPSDE()
COV = torch.tensor([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]], dtype=torch.float64)
GAUSS = Gaussian(torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64), COV)
MASK = torch.tensor([1, 0, 0])
Y0 = 1.5
MIX = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([[-0.6, 0.0], [0.6, 0.2], [0.0, -0.8]], dtype=torch.float64),
    torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64),
)


def known(n: int) -> torch.Tensor:
    x = torch.full((n, 3), float("nan"), dtype=torch.float64)
    x[:, 0] = Y0
    return x


def inpainting_table(n: int, configs) -> List[str]:
    mean, cov = GAUSS.conditional(known(1), MASK)
    mean, cov = mean[0, 1:], cov[0, 1:, 1:]
    se_mean = torch.sqrt(torch.diag(cov) / n)
    lines = [
        f"Exact conditional mean {[round(v, 3) for v in mean.tolist()]}, variances "
        f"{[round(v, 3) for v in torch.diag(cov).tolist()]}, covariance {cov[0, 1]:.3f}; n = {n} samples, "
        f"standard errors of the mean {[round(v, 4) for v in se_mean.tolist()]}.",
        "",
        "| solver | steps | resample | NFE | mean of x1, x2 | var x1, var x2, cov | max mean error / SE | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for solver, steps, r in configs:
        t0 = time.perf_counter()
        x = scoresde.inpaint(SDE, GAUSS.score_fn(SDE), known(n), MASK, solver=solver, steps=steps, resample=r,
                             generator=torch.Generator().manual_seed(0))
        sec = time.perf_counter() - t0
        u = x[:, 1:]
        c = torch.cov(u.T)
        z = float(((u.mean(0) - mean) / se_mean).abs().max())
        lines.append(f"| {solver} | {steps} | {r} | {steps * r + 1} | {u.mean(0)[0]:.3f}, {u.mean(0)[1]:.3f} | "
                     f"{c[0, 0]:.3f}, {c[1, 1]:.3f}, {c[0, 1]:.3f} | {z:.1f} | {sec:.1f} |")
    return lines


def smc_table(R: int, particles: Sequence[int], steps: int) -> List[str]:
    eps = 1e-3
    mean, _ = GAUSS.conditional(known(1), MASK, SDE, eps)
    mean = mean[0, 1:]
    scale, std = SDE.marginal_coeffs(torch.tensor([eps], dtype=torch.float64))
    v0 = scale**2 * COV[0, 0] + std**2
    z_exact = float(torch.exp(-0.5 * (Y0 - scale * 0.5) ** 2 / v0) / torch.sqrt(2 * math.pi * v0))
    lines = [
        f"R = {R} independent runs per row, {steps} ancestral steps, eps = {eps}. `mse` is the mean over runs of "
        "|weighted particle mean - exact mean|^2 (with its standard error); i.i.d. exact samples would give "
        f"{float(torch.diag(GAUSS.conditional(known(1), MASK, SDE, eps)[1][0, 1:, 1:]).sum()):.3f} / P.",
        "",
        "| proposal | particles P | mse | P x mse | evidence exp(log Z) / exact - 1 | mean ESS fraction | resampled steps | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for proposal in ("twisted", "model"):
        for P in particles:
            t0 = time.perf_counter()
            res = scoresde.smc_inpaint(SDE, GAUSS.score_fn(SDE), known(R), MASK, num_particles=P, steps=steps,
                                       generator=torch.Generator().manual_seed(P), eps=eps, proposal=proposal)
            sec = time.perf_counter() - t0
            err = ((res.mean()[:, 1:] - mean) ** 2).sum(1)
            m, se = float(err.mean()), float(err.std()) / math.sqrt(R)
            zhat = res.log_evidence.exp()
            rel = float(zhat.mean()) / z_exact - 1
            rel_se = float(zhat.std()) / math.sqrt(R) / z_exact
            lines.append(f"| {proposal} | {P} | {m:.4f} +- {se:.4f} | {P * m:.2f} | {rel:+.3f} +- {rel_se:.3f} | "
                         f"{float(res.ess.mean()):.2f} | {res.resampled} | {sec:.1f} |")
    return lines


def guidance_table(n: int, weights: Sequence[float]) -> List[str]:
    k = 0
    scale, std = SDE.marginal_coeffs(torch.ones(1, dtype=torch.float64))
    sd = torch.sqrt(scale**2 * MIX.stds[k] ** 2 + std**2)
    x_init = scale * MIX.means[k] + sd * torch.randn(n, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    lines = [
        f"Class 0 of a 3-component overlapping mixture, n = {n}, ancestral sampler with 400 steps from the exact p_T.",
        "",
        "| w | mean p(y = 0 given x) | fraction with p(y given x) > 0.9 | mean distance to the class mean | std along x, y |",
        "|---|---|---|---|---|",
    ]
    for w in weights:
        x = scoresde.sample(SDE, guidance.classifier_free(MIX.conditional_score_fn(SDE), k, w), x_init.shape,
                            solver="ancestral", steps=400, generator=torch.Generator().manual_seed(11), x_init=x_init)
        p = MIX.responsibilities(x)[:, k]
        se = float(p.std()) / math.sqrt(n)
        dist = float((x - MIX.means[k]).norm(dim=1).mean())
        lines.append(f"| {w:g} | {float(p.mean()):.3f} +- {se:.3f} | {float((p > 0.9).double().mean()):.3f} | {dist:.3f} | "
                     f"{float(x[:, 0].std()):.3f}, {float(x[:, 1].std()):.3f} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/conditional.md", help="markdown report to write")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    q = args.quick
    n = 500 if q else 4000
    configs = [("euler_maruyama", 100, r) for r in ((1, 4) if q else (1, 2, 4, 8, 16))]
    configs += [("ancestral", 100, r) for r in ((1,) if q else (1, 4, 16))]
    if not q:
        configs += [("ancestral", 400, 16), ("reverse_diffusion", 100, 16)]
    report = ["# Conditional generation against closed forms", "",
              f"`python benchmarks/conditional_bench.py{' --quick' if q else ''}`; exact scores, CPU, float64.", "",
              "## Inpainting: replacement and RePaint resampling", ""]
    report += inpainting_table(n, configs)
    report += ["", "## Sequential Monte Carlo inpainting", ""]
    report += smc_table(50 if q else 200, (4, 16) if q else (4, 16, 64, 256), 50 if q else 100)
    report += ["", "## Classifier-free guidance concentrates samples", ""]
    report += guidance_table(500 if q else 2000, (0.0, 1.0) if q else (0.0, 0.5, 1.0, 2.0, 4.0, 8.0))
    text = "\n".join(report) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
