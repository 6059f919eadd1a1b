"""An imported score_sde network in scoresde's sampling and likelihood: cost per evaluation, and the classic loop.

1. **Per-evaluation overhead** on the full-size CIFAR-10 DDPM++ of ``vp/cifar10_ddpmpp_continuous`` (61.8M
   parameters, random weights perturbed away from the zero-initialised output layers): the seconds of one
   score evaluation inside a sampler (``ddim``; wrapper, time labels, scaling, the solver's step) and of one
   right-hand side of the likelihood (velocity and Hutchinson divergence: one forward pass and one VJP),
   each against the bare network (one forward; one forward plus one VJP). The goal is a ratio <= 1.05.
2. **Whole likelihood against the classic loop** of the score_sde reference code (``likelihood_bench.py``:
   scipy RK45 on a float64 numpy state, two forward passes per evaluation, one Rademacher probe), on the same
   network, data, probe and tolerance: NFE, seconds and the log-likelihood each gives. The full-size network
   makes a whole solve take many minutes on a CPU, so ``--net small`` (the same DDPM++ architecture, base
   width 32, one block per level) is the default for this part.

    python benchmarks/imported_overhead.py --threads 1 --out benchmarks/results/imported-overhead-cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import scoresde
from scoresde.noise import rademacher
from scoresde.pretrained.score_sde import ScoreSDEScore, build_score_sde_network, resolve_config, sde_from_config

from common import median_time


def make_model(size: str, seed: int = 0):
    """``(sde, score, network, event_shape)``: DDPM++ of the published VP config (``full``) or a narrow one (``small``)."""
    cfg, _ = resolve_config("vp/cifar10_ddpmpp_continuous")
    if size == "small":
        cfg = {**cfg, "model": {**cfg["model"], "nf": 32, "num_res_blocks": 1, "ch_mult": [1, 2, 2]}}
    torch.manual_seed(seed)
    net = build_score_sde_network(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.eval().requires_grad_(False)
    sde, kind, continuous = sde_from_config(cfg)
    return sde, ScoreSDEScore(net, sde, kind, continuous).eval(), net, (3, 32, 32)


def per_evaluation(batch: int, repeats: int) -> Dict[str, float]:
    """Seconds per evaluation: bare forward, score in a sampler, bare forward+VJP, the likelihood's right-hand side."""
    sde, score, net, event = make_model("full")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *event, generator=g)
    t = torch.full((batch,), 0.5)
    labels = 999 * t
    steps = 4

    def bare_forward():
        with torch.no_grad():
            net(x, labels)

    def in_sampler():  # `steps` evaluations inside ddim, one solve
        scoresde.solve(sde, score, None, "ddim", steps=steps, x_init=x, grid=torch.linspace(0.5, 0.4, steps + 1),
                       denoise=False)

    probe = rademacher(x.shape, g, dtype=x.dtype)

    def bare_vjp():
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = net(xg, labels)
            torch.autograd.grad(out, xg, probe)

    from scoresde.flow import Divergence, ProbabilityFlow

    flow = ProbabilityFlow(sde, score, Divergence("hutchinson", probe[None]))

    def rhs():
        flow(x, t)

    f, s = median_time(bare_forward, repeats), median_time(in_sampler, repeats) / steps
    v, r = median_time(bare_vjp, repeats), median_time(rhs, repeats)
    return {"batch": batch, "forward_s": f, "sampler_eval_s": s, "sampler_ratio": s / f,
            "forward_vjp_s": v, "likelihood_rhs_s": r, "likelihood_ratio": r / v}


def whole_likelihood(size: str, batch: int, tol: float) -> Dict[str, Any]:
    """Ours and the classic loop on the same data, probe and tolerance: NFE, seconds, log-likelihood."""
    import likelihood_bench as L

    sde, score, net, event = make_model(size)
    g = torch.Generator().manual_seed(2)
    x = (torch.randint(0, 256, (batch, *event), generator=g).float() + 0.5) / 128.0 - 1.0  # dequantized pixels
    probe = rademacher(x.shape, torch.Generator().manual_seed(3), dtype=x.dtype)
    t0 = time.perf_counter()
    ref_lp, ref_nfe = L.classic_log_likelihood(sde, score, x, probe, rtol=tol, atol=tol)
    ref_s = time.perf_counter() - t0

    class Fixed(scoresde.noise.GeneratorNoise):  # the same probe as the classic loop
        def probes(self, n, like, kind="rademacher"):
            return probe[None].to(like)

    t0 = time.perf_counter()
    res = scoresde.log_likelihood(sde, score, x, trace="hutchinson", rtol=tol, atol=tol, _noise=Fixed())
    ours_s = time.perf_counter() - t0
    return {"net": size, "batch": batch, "tol": tol, "classic_seconds": ref_s, "classic_nfe": ref_nfe,
            "ours_seconds": ours_s, "ours_nfe": res.nfe, "speedup": ref_s / ours_s,
            "log_prob_difference_max": float((res.log_prob.double() - ref_lp.double()).abs().max()),
            "classic_log_prob": ref_lp.tolist(), "ours_log_prob": res.log_prob.tolist()}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=2, help="images per evaluation (part 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--net", choices=["small", "full"], default="small", help="the network of part 2")
    p.add_argument("--likelihood-batch", type=int, default=2)
    p.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of both solvers in part 2")
    p.add_argument("--skip-whole", action="store_true")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads, "per_evaluation": per_evaluation(args.batch, args.repeats)}
    print(json.dumps(res["per_evaluation"], indent=1), flush=True)
    if not args.skip_whole:
        res["whole_likelihood"] = whole_likelihood(args.net, args.likelihood_batch, args.tol)
        print(json.dumps(res["whole_likelihood"], indent=1), flush=True)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
        e = res["per_evaluation"]
        lines = [f"# An imported DDPM++ in scoresde ({args.threads} thread(s), CPU)", "",
                 f"Full-size CIFAR-10 DDPM++ (vp/cifar10_ddpmpp_continuous, random weights), batch {e['batch']}:", "",
                 "| evaluation | bare network | in scoresde | ratio |", "|---|---|---|---|",
                 f"| score in a sampler (ddim) | {e['forward_s']:.3f} s (forward) | {e['sampler_eval_s']:.3f} s | "
                 f"{e['sampler_ratio']:.3f} |",
                 f"| likelihood right-hand side (Hutchinson) | {e['forward_vjp_s']:.3f} s (forward + VJP) | "
                 f"{e['likelihood_rhs_s']:.3f} s | {e['likelihood_ratio']:.3f} |", ""]
        if "whole_likelihood" in res:
            w = res["whole_likelihood"]
            lines += [f"Whole likelihood, DDPM++ ({w['net']}), batch {w['batch']}, rtol = atol = {w['tol']:g}, the same "
                      "Rademacher probe:", "", "| | NFE | seconds | log-likelihood |", "|---|---|---|---|",
                      f"| classic scipy loop (score_sde reference) | {w['classic_nfe']} | {w['classic_seconds']:.1f} | "
                      f"{', '.join(f'{v:.2f}' for v in w['classic_log_prob'])} |",
                      f"| scoresde | {w['ours_nfe']} | {w['ours_seconds']:.1f} | "
                      f"{', '.join(f'{v:.2f}' for v in w['ours_log_prob'])} |", "",
                      f"Speed-up {w['speedup']:.2f}x; largest difference of the log-likelihoods "
                      f"{w['log_prob_difference_max']:.2g} nats.", ""]
        Path(args.out).with_suffix(".md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
