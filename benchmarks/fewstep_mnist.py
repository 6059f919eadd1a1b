"""Few-step samplers on a trained MNIST network: scoresde's solvers against diffusers' schedulers.

The same trained network (a scoresde run on MNIST) drives both sides: scoresde's solvers call it as a score
function; diffusers' schedulers (DPM-Solver++ 2M and 3M, UniPC, DEIS, Euler, Heun, and the stochastic
DPM-Solver++(2M) SDE and Euler ancestral, as ours include ``dpmpp_2m_sde``), on the DDPM schedule whose
continuous limit is scoresde's VP SDE, receive it as a noise-prediction model (``-std(t) score(x, t)`` at the
time whose noise level is the scheduler's own). The quality classifier of :mod:`scoresde.metrics` scores the
samples: Fréchet LeNet distance (FLD, lower is better) and the share classified with confidence >= 0.9.

Selection is the same on both sides, and separate from the reported numbers:

* ours: every few-step solver (``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``ipndm``, ``edm``,
  ``dpmpp_2m_sde``) on its default grid and on the ``log_snr``, ``uniform`` and ``karras`` grids, and on a
  :class:`~scoresde.solvers.optimized_grids.GITS` grid fitted once on the network (its fit is a one-off cost per
  model, reported apart and not counted in the NFE, as the peers' choice of settings is not);
  and the deterministic ones also with the final denoising step (``denoise=True``, counted in the NFE) on
  their default, uniform and Karras grids, as diffusers' schedulers end at noise level 0;
* diffusers: each scheduler with its defaults and with ``timestep_spacing`` linspace or trailing, with and
  without Karras sigmas;
* at each NFE budget every candidate draws ``--select-num`` images from the selection seed (1000); the one with
  the lowest FLD is its side's best; the best ``--finalists`` of each side then draw ``--num`` images for each of
  ``--seeds`` seeds (0, 1, ...; the same prior draws for both sides), and the table reports their mean ±
  standard error over those seeds and the paired verdict of ``peers.verdict`` on the FLD differences.

    python benchmarks/fewstep_mnist.py --run runs/mnist --classifier runs/mnist/classifier.pt \\
        --data-dir $SCORESDE_DATA --out benchmarks/results/fewstep-mnist
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

import scoresde
from scoresde.checkpoint import load_model
from scoresde.data import get_dataset
from scoresde.metrics import load_quality_classifier, reference_statistics, sample_quality
from scoresde.solvers.optimized_grids import GITS

from common import mean_se
from fewstep_bench import EPS, OURS_DETERMINISTIC, OURS_STOCHASTIC, diffusers_sample
from peers import verdict
from solvers_bench import fit_steps

#: diffusers schedulers compared: (label, class name, options, score evaluations per step).
PEERS = (
    ("DPM-Solver++(2M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 1),
    ("DPM-Solver++(3M)", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}, 1),
    ("UniPC", "UniPCMultistepScheduler", {"solver_order": 2}, 1),
    ("DEIS", "DEISMultistepScheduler", {"solver_order": 2}, 1),
    ("Euler", "EulerDiscreteScheduler", {}, 1),
    ("Heun", "HeunDiscreteScheduler", {}, 2),
    ("DPM-Solver++(2M) SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, 1),
    ("Euler ancestral", "EulerAncestralDiscreteScheduler", {}, 1),
)
#: diffusers settings tried with every scheduler (the empty one is its defaults).
PEER_SETTINGS: Tuple[Dict[str, Any], ...] = (
    {}, {"timestep_spacing": "trailing"}, {"use_karras_sigmas": True},
    {"timestep_spacing": "trailing", "use_karras_sigmas": True},
)
#: Our solvers compared (labels of fewstep_bench's configurations) and the grids each runs on (None: its default).
OURS = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "edm", "dpmpp_2m_sde")
GRIDS = (None, "log_snr", "uniform", "karras", "gits")
#: the grids of the denoised variants (``denoise=True``)
DENOISED_GRIDS = (None, "uniform", "karras")
SELECT_SEED = 1000
Run = Callable[[int, int], Tuple[Tensor, int]]


def _settings_label(settings: Dict[str, Any]) -> str:
    return "" if not settings else " (" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"


def _ours(sde, score, cfg, steps: int, grid, **options: Any) -> Run:
    """``run(seed, n) -> (x, nfe)``: ``n`` images from our solver ``cfg`` with ``steps`` steps on ``grid`` (a grid name, a
    fitted grid, or ``None`` for its default) and ``options`` on top of the configuration's own."""

    def run(seed: int, n: int) -> Tuple[Tensor, int]:
        kw = dict(cfg.options, **options, **({"grid": grid, "eps": EPS} if grid is not None else {}))
        res = scoresde.solve(sde, score, (n, 1, 28, 28), solver=cfg.solver, steps=steps,
                             generator=torch.Generator().manual_seed(seed), **kw)
        return res.samples, int(res.nfe)

    return run


def candidates(sde, score, nfe: int, gits: Optional[GITS]) -> List[Dict[str, Any]]:
    """The samplers at ``nfe`` evaluations: ``{side, label, run(seed, n) -> (x, nfe)}``."""
    out = []
    for cfg in (c for c in (*OURS_DETERMINISTIC, *OURS_STOCHASTIC) if c.label in OURS):
        steps = fit_steps(cfg, sde, (1, 28, 28), nfe)
        if steps is None:
            continue
        for grid in GRIDS:
            if grid == "gits" and (gits is None or steps > gits.fine_steps):
                continue
            run = _ours(sde, score, cfg, steps, gits if grid == "gits" else grid)
            out.append({"side": "ours", "label": cfg.label + (f" @ {grid}" if grid else ""), "run": run})
    out += _denoised(sde, score, nfe)
    import diffusers

    for label, cls, opts, per_step in PEERS:
        steps = nfe if per_step == 1 else (nfe + 1) // 2
        accepted = inspect.signature(getattr(diffusers, cls).__init__).parameters
        for settings in (s for s in PEER_SETTINGS if all(k in accepted for k in s)):  # those the scheduler has
            o = {**opts, **settings}
            out.append({"side": "diffusers", "label": label + _settings_label(settings),
                        "run": lambda seed, n, c=cls, o=o, k=steps: diffusers_sample(c, o, sde, score, (n, 1, 28, 28), k, seed)})
    return out


def _denoised(sde, score, nfe: int) -> List[Dict[str, Any]]:
    """Our deterministic solvers ending with the final denoising step (``denoise=True``, one evaluation of the
    budget), on their default, uniform and Karras grids: like diffusers' schedulers, whose last step lands on
    noise level 0."""
    out = []
    for cfg in (c for c in OURS_DETERMINISTIC if c.label in OURS):
        steps = fit_steps(cfg, sde, (1, 28, 28), nfe - 1)
        for grid in DENOISED_GRIDS if steps is not None else ():
            run = _ours(sde, score, cfg, steps, grid, denoise=True)
            out.append({"side": "ours", "label": f"{cfg.label} + denoise" + (f" @ {grid}" if grid else ""), "run": run})
    return out


def _draw(run: Run, seed: int, num: int, batch: int) -> Tuple[Tensor, int]:
    """``num`` images drawn ``batch`` at a time (seed ``seed``, then ``seed + 7919 k`` for the k-th batch)."""
    xs, nfe = [], 0
    for k in range(0, num, batch):
        x, nfe = run(seed + 7919 * (k // batch), min(batch, num - k))
        xs.append(x.cpu())
    return torch.cat(xs), nfe


def _earlier_rows(log: Optional[str]) -> Tuple[Dict[Tuple[int, str], Dict[str, Any]], Dict[Tuple[int, str], Dict[str, Any]],
                                              Optional[float]]:
    """Selection rows and finalist rows printed by an earlier run, each keyed by ``(nfe, label)``, and its GITS fit
    time; empty without a log."""
    selection: Dict[Tuple[int, str], Dict[str, Any]] = {}
    finals: Dict[Tuple[int, str], Dict[str, Any]] = {}
    gits_seconds = None
    for line in Path(log).read_text().splitlines() if log else []:
        if line.startswith("GITS grid fitted in "):
            gits_seconds = float(line.split()[4])
        elif line.startswith("{"):
            row = json.loads(line)
            (finals if "fld_se" in row else selection)[(row["nfe"], row["label"])] = row
    return selection, finals, gits_seconds


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a scoresde run trained on MNIST")
    p.add_argument("--classifier", required=True, help="the MNIST quality classifier (scoresde classifier)")
    p.add_argument("--data-dir", help="folder holding mnist/ (default: SCORESDE_DATA)")
    p.add_argument("--nfe", type=int, nargs="*", default=[5, 8, 10, 20])
    p.add_argument("--num", type=int, default=1000, help="images per seed of the finalists (default: 1000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the finalists (default: 3)")
    p.add_argument("--select-num", type=int, default=250, help="images of every candidate on the selection seed")
    p.add_argument("--finalists", type=int, default=2, help="best candidates of each side run on every seed")
    p.add_argument("--gits-samples", type=int, default=64, help="teacher batch of the GITS fit (0: no GITS grid)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write OUT.json and OUT.md")
    p.add_argument("--resume-log", help="the printed rows of an earlier run with the same options: its finished selection runs "
                   "and finalists are taken from it, not run again")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    earlier_selection, earlier_finals, gits_seconds = _earlier_rows(args.resume_log)
    sde, score, _ = load_model(args.run)
    clf = load_quality_classifier(args.classifier)
    ref = reference_statistics(clf, get_dataset("mnist", data_dir=args.data_dir, split="test").data)
    gits = None
    if args.gits_samples > 0 and any(sum(k[0] == n for k in earlier_finals) < 2 * args.finalists for n in args.nfe):
        t0 = time.perf_counter()
        gits = GITS(fine_steps=max(64, 3 * max(args.nfe)), samples=args.gits_samples).fit(
            sde, score, (1, 28, 28), eps=EPS, generator=torch.Generator().manual_seed(2024), dtype=torch.float32)
        gits_seconds = time.perf_counter() - t0
        print(f"GITS grid fitted in {gits_seconds:.0f} s", flush=True)

    def quality(x: Tensor):
        return sample_quality(clf, x.clamp(-1, 1), ref)

    selection, finals = [], []
    for nfe in args.nfe:
        pool = candidates(sde, score, nfe, gits)
        scored = []
        for cand in pool:
            if (nfe, cand["label"]) in earlier_selection:
                selection.append(earlier_selection[(nfe, cand["label"])])
                scored.append((selection[-1], cand))
                continue
            t0 = time.perf_counter()
            x, used = _draw(cand["run"], SELECT_SEED, args.select_num, args.batch)
            q = quality(x)
            row = {"nfe": nfe, "side": cand["side"], "label": cand["label"], "nfe_used": used, "fld": q.fld,
                   "confident": q.confident_fraction, "seconds": time.perf_counter() - t0}
            selection.append(row)
            scored.append((row, cand))
            print(json.dumps(row), flush=True)
        labels = {c["label"] for c in pool}
        selection += [r for (n, label), r in earlier_selection.items() if n == nfe and label not in labels]
        for side in ("ours", "diffusers"):
            best = sorted((rc for rc in scored if rc[0]["side"] == side), key=lambda rc: rc[0]["fld"])[: args.finalists]
            for row, cand in best:
                if (nfe, cand["label"]) in earlier_finals:
                    finals.append(earlier_finals[(nfe, cand["label"])])
                    continue
                fld, conf, mins = [], [], []
                for s in range(args.seeds):
                    q = quality(_draw(cand["run"], s, args.num, args.batch)[0])
                    fld.append(q.fld)
                    conf.append(q.confident_fraction)
                    mins.append(q.min_class_fraction)
                (fm, fs), (cm, cs) = mean_se(fld), mean_se(conf)
                finals.append({"nfe": nfe, "side": side, "label": cand["label"], "nfe_used": row["nfe_used"],
                               "fld": fm, "fld_se": fs, "fld_per_seed": fld, "confident": cm, "confident_se": cs,
                               "min_class_share": min(mins)})
                print(json.dumps(finals[-1]), flush=True)
    report(selection, finals, gits_seconds, args)
    return 0


def report(selection: List[Dict[str, Any]], finals: List[Dict[str, Any]], gits_seconds: Optional[float],
           args: argparse.Namespace) -> None:
    """The verdict per NFE, the finalists, then every candidate's selection run, to stdout and OUT.{json,md}."""
    lines = [f"# Few-step samplers on a trained MNIST network ({args.num} samples x {args.seeds} seeds)", "",
             f"Network: `{args.run}`. Finalists: mean over seeds ± standard error; lower FLD is better. "
             f"Selection: {args.select_num} samples of every candidate on seed {SELECT_SEED}."
             + (f" GITS fit: {gits_seconds:.0f} s, once." if gits_seconds is not None else ""), "",
             "| NFE | best of scoresde | FLD | best of diffusers | FLD | scoresde is |", "|---|---|---|---|---|---|"]
    for nfe in sorted({r["nfe"] for r in finals}):
        best = {s: min((r for r in finals if r["nfe"] == nfe and r["side"] == s), key=lambda r: r["fld"], default=None)
                for s in ("ours", "diffusers")}
        o, d = best["ours"], best["diffusers"]
        if o and d:
            lines.append(f"| {nfe} | {o['label']} | {o['fld']:.1f} ± {o['fld_se']:.1f} | {d['label']} | "
                         f"{d['fld']:.1f} ± {d['fld_se']:.1f} | {verdict(o['fld_per_seed'], d['fld_per_seed'])} |")
    lines += ["", "Finalists:", "", "| NFE | side | sampler | NFE used | FLD | confident >= 0.9 | smallest digit share |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(finals, key=lambda r: (r["nfe"], r["fld"])):
        lines.append(f"| {r['nfe']} | {r['side']} | {r['label']} | {r['nfe_used']} | {r['fld']:.1f} ± {r['fld_se']:.1f} | "
                     f"{100 * r['confident']:.1f} ± {100 * r['confident_se']:.1f}% | {100 * r['min_class_share']:.1f}% |")
    lines += ["", "Selection (every candidate, one seed):", "", "| NFE | side | sampler | NFE used | FLD | confident >= 0.9 |",
              "|---|---|---|---|---|---|"]
    for r in sorted(selection, key=lambda r: (r["nfe"], r["fld"])):
        lines.append(f"| {r['nfe']} | {r['side']} | {r['label']} | {r['nfe_used']} | {r['fld']:.1f} | {100 * r['confident']:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"run": args.run, "gits_fit_seconds": gits_seconds, "finals": finals, "selection": selection},
                       indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
