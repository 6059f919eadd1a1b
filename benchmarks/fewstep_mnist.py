"""Few-step samplers on a trained MNIST network: scoresde's solvers against diffusers' schedulers.

The same trained network (a scoresde run on MNIST) drives both sides: scoresde's solvers call it as a score
function; diffusers' schedulers (DPM-Solver++ 2M and 3M, UniPC, DEIS, Euler, Heun), on the DDPM schedule whose
continuous limit is scoresde's VP SDE, receive it as a noise-prediction model (``-std(t) score(x, t)`` at the
time whose noise level is the scheduler's own). At 5, 8, 10 and 20 score evaluations each sampler draws
``--num`` images for each of ``--seeds`` seeds; the quality classifier of :mod:`scoresde.metrics` gives their
Fréchet LeNet distance and the share classified with confidence >= 0.9, reported as the mean over seeds with
its standard error.

    python benchmarks/fewstep_mnist.py --run runs/mnist --classifier runs/mnist/classifier.pt \\
        --data-dir $SCORESDE_DATA --out benchmarks/results/fewstep-mnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import scoresde
from scoresde.checkpoint import load_model
from scoresde.data import get_dataset
from scoresde.metrics import load_quality_classifier, reference_statistics, sample_quality

from common import mean_se
from fewstep_bench import OURS_DETERMINISTIC, OURS_STOCHASTIC, diffusers_sample
from solvers_bench import fit_steps

#: diffusers schedulers compared: (label, class name, options, score evaluations per step).
PEERS = (
    ("DPM-Solver++(2M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 1),
    ("DPM-Solver++(3M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}, 1),
    ("UniPC", "UniPCMultistepScheduler", {"solver_order": 2}, 1),
    ("DEIS", "DEISMultistepScheduler", {"solver_order": 2}, 1),
    ("Euler", "EulerDiscreteScheduler", {}, 1),
    ("Heun", "HeunDiscreteScheduler", {}, 2),
)
#: Our solvers compared (labels of fewstep_bench's configurations), on their default grid and the log-SNR grid.
OURS = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "edm", "dpmpp_2m_sde")


def _chunked(run, seed: int, num: int, batch: int):
    """Samples of ``num`` images drawn ``batch`` at a time (seed ``seed``, then ``seed + 1000 k``)."""
    xs, nfe = [], 0
    for k in range(0, num, batch):
        x, n = run(seed + 1000 * (k // batch), min(batch, num - k))
        xs.append(x.cpu())
        nfe = n
    return torch.cat(xs), nfe


def candidates(sde, score, nfe: int) -> List[Dict[str, Any]]:
    """The samplers at ``nfe`` evaluations: ``{side, label, run(seed, n) -> (x, nfe)}``."""
    out = []
    for cfg in (c for c in (*OURS_DETERMINISTIC, *OURS_STOCHASTIC) if c.label in OURS):
        steps = fit_steps(cfg, sde, (1, 28, 28), nfe)
        if steps is None:
            continue
        for grid in (None, "log_snr"):
            def run(seed, n, cfg=cfg, steps=steps, grid=grid):
                kw = dict(cfg.options, **({"grid": grid} if grid else {}))
                res = scoresde.solve(sde, score, (n, 1, 28, 28), solver=cfg.solver, steps=steps,
                                     generator=torch.Generator().manual_seed(seed), **kw)
                return res.samples, int(res.nfe)

            out.append({"side": "ours", "label": cfg.label + (f" @ {grid}" if grid else ""), "run": run})
    for label, cls, opts, per_step in PEERS:
        steps = nfe if per_step == 1 else (nfe + 1) // 2
        out.append({"side": "diffusers", "label": label,
                    "run": lambda seed, n, c=cls, o=opts, k=steps: diffusers_sample(c, o, sde, score, (n, 1, 28, 28), k, seed)})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a scoresde run trained on MNIST")
    p.add_argument("--classifier", required=True, help="the MNIST quality classifier (scoresde classifier)")
    p.add_argument("--data-dir", help="folder holding mnist/ (default: SCORESDE_DATA)")
    p.add_argument("--nfe", type=int, nargs="*", default=[5, 8, 10, 20])
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sde, score, cfg = load_model(args.run)
    clf = load_quality_classifier(args.classifier)
    ref = reference_statistics(clf, get_dataset("mnist", data_dir=args.data_dir, split="test").data)
    rows = []
    for nfe in args.nfe:
        for cand in candidates(sde, score, nfe):
            fld, conf, used, t0 = [], [], None, time.perf_counter()
            for s in range(args.seeds):
                x, used = _chunked(cand["run"], s, args.num, args.batch)
                q = sample_quality(clf, x.clamp(-1, 1), ref)
                fld.append(q.fld)
                conf.append(q.confident_fraction)
            (fm, fs), (cm, cs) = mean_se(fld), mean_se(conf)
            rows.append({"nfe": nfe, "side": cand["side"], "label": cand["label"], "nfe_used": used, "fld": fm, "fld_se": fs,
                         "confident": cm, "confident_se": cs, "seconds": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    report(rows, args)
    return 0


def report(rows: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    """The table (best of each side per NFE, then every row) to stdout and OUT.{json,md}."""
    lines = [f"# Few-step samplers on a trained MNIST network ({args.num} samples x {args.seeds} seeds)", "",
             f"Network: `{args.run}`. Mean over seeds ± standard error; lower FLD is better.", "",
             "| NFE | best of scoresde (FLD) | FLD | best of diffusers (FLD) | FLD | ahead |", "|---|---|---|---|---|---|"]
    for nfe in sorted({r["nfe"] for r in rows}):
        side = {s: min((r for r in rows if r["nfe"] == nfe and r["side"] == s), key=lambda r: r["fld"], default=None)
                for s in ("ours", "diffusers")}
        o, d = side["ours"], side["diffusers"]
        if o and d:
            ahead = "scoresde" if o["fld"] + 2 * o["fld_se"] < d["fld"] - 2 * d["fld_se"] else (
                "diffusers" if d["fld"] + 2 * d["fld_se"] < o["fld"] - 2 * o["fld_se"] else "tie (within 2 SE)")
            lines.append(f"| {nfe} | {o['label']} | {o['fld']:.1f} ± {o['fld_se']:.1f} | {d['label']} | "
                         f"{d['fld']:.1f} ± {d['fld_se']:.1f} | {ahead} |")
    lines += ["", "| NFE | side | sampler | NFE used | FLD | confident >= 0.9 |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["nfe"], r["fld"])):
        lines.append(f"| {r['nfe']} | {r['side']} | {r['label']} | {r['nfe_used']} | {r['fld']:.1f} ± {r['fld_se']:.1f} | "
                     f"{100 * r['confident']:.1f} ± {100 * r['confident_se']:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
