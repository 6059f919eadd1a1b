"""Sample fidelity of models trained with the CLI's default recipe on 2-D mixtures with narrow components.

For each data set, recipe and seed: ``scoresde train`` (through :func:`scoresde.cli.main`, so exactly the
command line a user types) with the recipe's options, then samples of the EMA model from the probability-flow
ODE and three reverse-SDE samplers, and the test NLL (exact trace). Every data set has a closed-form density
(:class:`scoresde.exact.GaussianMixture`), so each sample set is scored by its mean true log-density
``E log p(x)``: the data's own value is ``-H(p)`` (minus the entropy); samples that fall between the modes
score lower, samples that crowd the modes higher. The test NLL is compared with ``H(p)`` (its floor).

Data sets: ``gmm`` (the built-in set: 8 Gaussians of std 0.1 on a circle) and ``gmm05`` (the same layout
with std 0.05, written to an ``.npy`` file of 100,000 points and trained from it).

Recipes: ``default`` passes no training option (the CLI defaults); ``old`` passes the previous defaults
explicitly (``OLD_RECIPE``). ``--recipe NAME='--opt value ...'`` adds any other.

    OMP_NUM_THREADS=1 python benchmarks/toy_fidelity.py --set-seeds gmm05=0,1 --out benchmarks/results/toy-fidelity.json

writes ``toy-fidelity.json`` and ``toy-fidelity.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shlex
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

import scoresde
from scoresde.checkpoint import load_model
from scoresde.cli import main as cli_main
from scoresde.data import toy_gmm
from scoresde.exact import GaussianMixture
from scoresde.likelihood import log_likelihood
from scoresde.metrics import mean_and_stderr

#: The vector-data training defaults before the fidelity work, spelled out as command-line options.
OLD_RECIPE = (
    "--steps 5000 --batch-size 256 --lr 2e-3 --warmup 100 --lr-schedule constant --ema-decay 0.999 "
    "--loss-eps 1e-5 --net-arg hidden=256 --net-arg depth=3 --weighting std2 --time-sampling uniform"
)

#: name -> (solver, steps, options): the probability-flow ODE and three reverse-SDE samplers.
SAMPLERS = {
    "ode": ("ode", None, {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4}),
    "euler_maruyama": ("euler_maruyama", 500, {}),
    "pc": ("pc", 250, {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
    "ancestral": ("ancestral", 500, {}),
}


def mixture(name: str) -> GaussianMixture:
    """The exact distribution of a benchmark data set (float64)."""
    if name == "gmm":
        return toy_gmm(torch.float64)
    if name == "gmm05":  # the gmm layout with components of std 0.05, scaled to unit variance per coordinate
        sigma = 0.05
        radius = math.sqrt(2 * (1 - sigma**2))
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, sigma)
    raise ValueError(f"unknown data set {name!r}; valid: gmm, gmm05")


def train_cli(data: str, recipe: str, seed: int, out: Path, workdir: Path) -> float:
    """``scoresde train`` with the recipe's options; returns the wall time in seconds."""
    spec = data
    if data != "gmm":
        path = workdir / f"{data}.npy"
        if not path.exists():
            x = mixture(data).sample(100_000, generator=torch.Generator().manual_seed(12345))
            np.save(path, x.float().numpy())
        spec = str(path)
    argv = ["train", "--data", spec, "--seed", str(seed), "--out", str(out), "--device", "cpu", "--threads", "1",
            "--quiet", "--sample-every", "-1", *shlex.split(recipe)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)
    if rc != 0:
        raise RuntimeError(f"scoresde {' '.join(argv)} failed with exit status {rc}")
    return time.perf_counter() - t0


def evaluate(run: Path, data: str, seed: int, n_samples: int, n_test: int) -> Dict[str, float]:
    """Mean true log-density of each sampler's samples, and the test NLL, of the run's EMA model."""
    p = mixture(data)
    sde, score, _ = load_model(run)
    row: Dict[str, float] = {}
    for name, (solver, steps, opts) in SAMPLERS.items():
        gen = torch.Generator().manual_seed(seed + 100)
        x = scoresde.solve(sde, score, (n_samples, 2), solver=solver, steps=steps, generator=gen, **opts).samples
        row[name], row[name + "_se"] = mean_and_stderr(p.log_prob(x.double()))
    x_test = p.sample(n_test, generator=torch.Generator().manual_seed(seed + 200))
    lik = log_likelihood(sde, score, x_test, trace="exact", rtol=1e-5, atol=1e-5, score_dtype=torch.float32)
    row["nll"], row["nll_se"] = mean_and_stderr(-lik.log_prob)
    # KL(p || q) on the same points: a paired difference, with a much smaller error than the NLL itself.
    row["kl"], row["kl_se"] = mean_and_stderr(p.log_prob(x_test) - lik.log_prob)
    return row


def data_row(data: str, n: int) -> Dict[str, float]:
    lp = mixture(data).log_prob(mixture(data).sample(n, generator=torch.Generator().manual_seed(7)))
    m, se = mean_and_stderr(lp)
    return {"data": m, "data_se": se, "entropy": -m}


def summarize(rows: List[dict]) -> Dict[str, float]:
    """Mean over seeds of each figure, with the standard error of that mean (from the seed-to-seed spread)."""
    out: Dict[str, float] = {}
    for key in ("ode", "euler_maruyama", "pc", "ancestral", "nll", "kl", "train_seconds"):
        out[key], out[key + "_se"] = mean_and_stderr(torch.tensor([r[key] for r in rows], dtype=torch.float64))
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Sample fidelity of the default training recipe on 2-D mixtures",
        "",
        "Mean true log-density `E log p(x)` (nats) of 2-D samples from models trained with `scoresde train`; the data's own",
        "value is `-H(p)`. Mean over seeds, +- the standard error over seeds. NLL: test negative log-likelihood (exact trace),",
        "whose floor is the entropy `H(p)`; KL = E[log p - log q] on the same test points.",
        "",
        f"Training seeds {result['settings']['seeds']}, {result['settings']['n_samples']} samples per sampler, "
        f"{result['settings']['n_test']} test points. Recipes:",
        "",
    ]
    for name, rec in result["settings"]["recipes"].items():
        lines.append(f"- `{name}`: `scoresde train --data DATA {rec}`" if rec else f"- `{name}`: `scoresde train --data DATA` (no other option)")
    lines.append("")
    for data, block in result["sets"].items():
        d = block["data"]
        lines += [
            f"## {data} (data: E log p = {d['data']:.3f} +- {d['data_se']:.3f}, entropy {d['entropy']:.3f})",
            "",
            "| recipe | ODE | Euler-Maruyama | PC | ancestral | worst gap to data | test NLL | KL | train s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in block["summary"].items():
            gap = d["data"] - min(s[k] for k in ("ode", "euler_maruyama", "pc", "ancestral"))
            cells = [f"{s[k]:.3f} +- {s[k + '_se']:.3f}" for k in ("ode", "euler_maruyama", "pc", "ancestral", "nll", "kl")]
            lines.append(f"| {name} | {' | '.join(cells[:4])} | {gap:.3f} | {cells[4]} | {cells[5]} | {s['train_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="gmm,gmm05", help="comma-separated data sets (gmm, gmm05)")
    ap.add_argument("--recipes", default="old,default", help="comma-separated recipe names")
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME='OPTIONS'", help="define another recipe")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of every set (default: 0,1,2)")
    ap.add_argument("--set-seeds", action="append", default=[], metavar="SET=S1,S2",
                    help="other seeds for one set, e.g. gmm05=0,1")
    ap.add_argument("--n-samples", type=int, default=2000, help="samples per sampler (default: 2000)")
    ap.add_argument("--n-test", type=int, default=1000, help="test points of the NLL (default: 1000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", help="folder for runs and data files (default: a temporary one)")
    ap.add_argument("--out", help="write JSON here and markdown next to it")
    ap.add_argument("--from-log", help="only rebuild the tables from the per-run lines a (possibly interrupted) run printed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipes = {"old": OLD_RECIPE, "default": ""}
    for spec in args.recipe:
        name, _, opts = spec.partition("=")
        recipes[name] = opts
    names = args.recipes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    set_seeds = {k: [int(s) for s in v.split(",")] for k, _, v in (spec.partition("=") for spec in args.set_seeds)}
    result = {"settings": {"seeds": {d: set_seeds.get(d, seeds) for d in args.sets.split(",")}, "n_samples": args.n_samples, "n_test": args.n_test,
                           "recipes": {n: recipes[n] for n in names}, "samplers": {k: [v[0], v[1], v[2]] for k, v in SAMPLERS.items()},
                           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")},
              "sets": {}}
    if args.from_log:
        _rebuild_from_log(result, Path(args.from_log))
        return _write(result, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for data in args.sets.split(","):
            block = {"data": data_row(data, 200_000), "runs": {}, "summary": {}}
            for name in names:
                rows = []
                for seed in set_seeds.get(data, seeds):
                    run = work / f"{data}-{name}-{seed}"
                    secs = train_cli(data, recipes[name], seed, run, work)
                    row = {"seed": seed, "train_seconds": secs, **evaluate(run, data, seed, args.n_samples, args.n_test)}
                    rows.append(row)
                    print(f"{data} {name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if not k.endswith("_se")),
                          flush=True)
                block["runs"][name] = rows
                block["summary"][name] = summarize(rows)
            result["sets"][data] = block
    return _write(result, args.out)


def _write(result: dict, out_path) -> int:
    text = markdown(result)
    print(text)
    if out_path:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


def _rebuild_from_log(result: dict, log: Path) -> None:
    """Fill ``result`` from lines ``DATA RECIPE seed S: key value, ...`` (the per-seed figures of each run)."""
    runs: Dict[str, Dict[str, List[dict]]] = {}
    for line in log.read_text().splitlines():
        head, sep, tail = line.partition(": ")
        parts = head.split()
        if not sep or len(parts) != 4 or parts[2] != "seed":
            continue
        row = {k: float(v) for k, v in (item.split() for item in tail.split(", "))}
        row["seed"] = int(row["seed"])
        runs.setdefault(parts[0], {}).setdefault(parts[1], []).append(row)
    for data, by_recipe in runs.items():
        block = {"data": data_row(data, 200_000), "runs": by_recipe, "summary": {}}
        for name in result["settings"]["recipes"]:
            if name in by_recipe:
                block["summary"][name] = summarize(by_recipe[name])
        result["sets"][data] = block
        result["settings"]["seeds"][data] = sorted({r["seed"] for rows in by_recipe.values() for r in rows})


if __name__ == "__main__":
    raise SystemExit(main())
