"""Per-sample against shared-step adaptive likelihood, at equal error against a float64 reference.

Problem: a Gaussian mixture whose data are mostly easy (wide components) with a few hard points (a
narrow component: its score changes fast near the data). With a shared step, the batch takes the
steps the hardest point needs; with per-sample step control each point takes its own.

For each tolerance and each integrator (shared dopri5 in ``t``; per-sample dopri5 in ``t`` and in
``u = log sigma(t)``; shared dopri5 in ``u``) the table gives the largest and the mean absolute error
of ``log p`` over the points against a reference (per-sample dopri5 at rtol = atol = 1e-11, float64),
the mean NFE per point (shared: the batch's NFE, which every point pays; per-sample: the mean of
``nfe_per_sample``) and the wall time.

    python benchmarks/adaptive_likelihood_bench.py --out benchmarks/results/cpu-adaptive-likelihood.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import scoresde
from scoresde.exact import GaussianMixture

CONFIGS = {
    "shared_t": dict(step_control="shared", time_variable="t"),
    "shared_log_sigma": dict(step_control="shared", time_variable="log_sigma"),
    "per_sample_t": dict(step_control="per_sample", time_variable="t"),
    "per_sample_log_sigma": dict(step_control="per_sample", time_variable="log_sigma"),
}


def problem(dim: int = 2, n_easy: int = 60, n_hard: int = 4, seed: int = 0):
    """A mixture with two wide components and one narrow one; ``n_hard`` points come from the narrow one."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(3, dim, dtype=torch.float64)
    means[0, 0], means[1, 0], means[2, 0] = -1.0, 1.0, 0.3
    stds = torch.tensor([0.5, 0.5, 0.01], dtype=torch.float64)
    gm = GaussianMixture(torch.tensor([0.45, 0.45, 0.1]), means, stds)
    x, k = gm.sample(4 * (n_easy + n_hard), generator=g, return_labels=True)
    x = torch.cat([x[k != 2][:n_easy], x[k == 2][:n_hard]])
    return gm, x


def with_work(score, width: int):
    """``score`` plus a network-sized cost per row (a ``[b, W] x [W, W]`` product whose result is added times 0)."""
    if width <= 0:
        return score
    w = torch.randn(width, width, dtype=torch.float32, generator=torch.Generator().manual_seed(0)) / width**0.5

    def f(x, t):
        h = torch.tanh(x.float().repeat(1, width // x.shape[1] + 1)[:, :width] @ w)
        return score(x, t) + 0.0 * h[:, :1].to(x.dtype)

    return f


def run(dim: int = 2, tolerances=(1e-3, 1e-4, 1e-5, 1e-6), repeats: int = 3, eps: float = 1e-5, work: int = 0) -> dict:
    sde = scoresde.VPSDE()
    gm, x = problem(dim)
    score = gm.score_fn(sde)
    ref = scoresde.log_likelihood(sde, score, x, eps=eps, rtol=1e-11, atol=1e-11, step_control="per_sample",
                                  max_steps=None).log_prob
    rows = []
    for tol in tolerances:
        for name, cfg in CONFIGS.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = scoresde.log_likelihood(sde, with_work(score, work), x, eps=eps, rtol=tol, atol=tol, max_steps=None, **cfg)
                best = min(best, time.perf_counter() - t0)
            err = (res.log_prob - ref).abs()
            per_point = res.nfe_per_sample.double() if res.nfe_per_sample is not None else torch.full((x.shape[0],), res.nfe)
            hard = slice(x.shape[0] - 4, None)
            rows.append(dict(config=name, tol=tol, max_error=float(err.max()), mean_error=float(err.mean()),
                             nfe_per_point=float(per_point.double().mean()), nfe_hard=float(per_point[hard].double().mean()),
                             nfe_easy=float(per_point[: x.shape[0] - 4].double().mean()), batched_calls=res.nfe, seconds=best))
            print(f"tol {tol:.0e} {name:22s} max err {rows[-1]['max_error']:.2e} mean err {rows[-1]['mean_error']:.2e} "
                  f"NFE/point {rows[-1]['nfe_per_point']:7.1f} (easy {rows[-1]['nfe_easy']:6.1f}, hard {rows[-1]['nfe_hard']:6.1f}) "
                  f"{best * 1e3:8.1f} ms", flush=True)
    return dict(dim=dim, n_points=int(x.shape[0]), n_hard=4, eps=eps, work=work, rows=rows, torch=torch.__version__)


def markdown(res: dict) -> str:
    """The result as a markdown table."""
    lines = [f"# Per-sample against shared-step adaptive likelihood (VP SDE, {res['dim']}-D mixture, "
             f"{res['n_points']} points of which {res['n_hard']} hard; torch {res['torch']})", "",
             "Errors against a per-sample dopri5 reference at rtol = atol = 1e-11 (float64). "
             "`work` is the width of the emulated network cost per row (0: the bare exact score).", "",
             "| tol | integrator | max error | mean error | NFE/point | NFE easy | NFE hard | batched calls | seconds | work |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['tol']:.0e} | {r['config']} | {r['max_error']:.2e} | {r['mean_error']:.2e} | "
                     f"{r['nfe_per_point']:.1f} | {r['nfe_easy']:.1f} | {r['nfe_hard']:.1f} | {r['batched_calls']} | "
                     f"{r['seconds']:.3f} | {res.get('work', 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=int, default=0,
                   help="emulate a network: add a [b, W] x [W, W] matrix product per row to every score call (0: none)")
    p.add_argument("--tolerances", default="1e-3,1e-4,1e-5,1e-6")
    p.add_argument("--out", help="FILE.json (and FILE.md beside it)")
    p.add_argument("--report", help="only rewrite the markdown of this JSON result")
    args = p.parse_args()
    if args.report:
        Path(args.report).with_suffix(".md").write_text(markdown(json.loads(Path(args.report).read_text())))
        return
    torch.set_num_threads(1)
    result = run(args.dim, tuple(float(v) for v in args.tolerances.split(",")), repeats=args.repeats, work=args.work)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        Path(args.out).with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
