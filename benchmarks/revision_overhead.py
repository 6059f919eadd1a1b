"""The same workloads timed on two checkouts of scoresde, alternating, in one run: did a change slow anything down?

Each workload runs in a fresh subprocess with ``PYTHONPATH`` pointing at one checkout; the checkouts alternate
for ``--repeats`` rounds, so a change of the machine's load affects both alike, and the report gives each
workload's median seconds per checkout and their ratio (``this / baseline``). The workloads are the solver
overhead (cheap exact scores, so the loop dominates), the likelihood (exact and Hutchinson traces, shared and
per-sample steps) and the likelihood against the classic scipy loop of the score_sde reference code
(re-implemented in ``likelihood_bench.py``).

    git worktree add /tmp/base <commit>
    python benchmarks/revision_overhead.py --baseline /tmp/base --repeats 5 --out benchmarks/results/revision-overhead
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent

#: name -> Python code that prints the seconds of the timed part (the imports and set-up are not timed).
WORKLOADS: Dict[str, str] = {
    "ddim 100 steps, 4096 x 2 (mixture score)": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde)
scoresde.sample(sde, score, (64, 2), "ddim", steps=5)
t0 = time.perf_counter(); scoresde.sample(sde, score, (4096, 2), "ddim", steps=100, generator=G); print(time.perf_counter() - t0)
""",
    "dpmpp_2m 20 steps, 4096 x 2": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde)
t0 = time.perf_counter(); scoresde.sample(sde, score, (4096, 2), "dpmpp_2m", steps=20, generator=G); print(time.perf_counter() - t0)
""",
    "ode dopri5, 1024 x 2": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde)
t0 = time.perf_counter(); scoresde.sample(sde, score, (1024, 2), "ode", generator=G); print(time.perf_counter() - t0)
""",
    "ode dopri5 per-sample seeds, 256 x 2": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde)
t0 = time.perf_counter(); scoresde.sample(sde, score, (256, 2), "ode", seeds=range(256)); print(time.perf_counter() - t0)
""",
    "likelihood exact trace, 512 x 2": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde); x = MIX.sample(512, G)
t0 = time.perf_counter(); scoresde.log_likelihood(sde, score, x); print(time.perf_counter() - t0)
""",
    "likelihood Hutchinson, MLP score, 64 x 64": """
sde = scoresde.VPSDE(); net = torch.nn.Sequential(torch.nn.Linear(65, 128), torch.nn.SiLU(), torch.nn.Linear(128, 64))
score = lambda x, t: net(torch.cat([x, t[:, None]], 1)) - x
x = torch.randn(64, 64, generator=G)
t0 = time.perf_counter(); scoresde.log_likelihood(sde, score, x, trace="hutchinson", generator=G); print(time.perf_counter() - t0)
""",
    "likelihood per-sample (seeds), 256 x 2": """
sde = scoresde.VPSDE(); score = MIX.score_fn(sde); x = MIX.sample(256, G)
t0 = time.perf_counter(); scoresde.log_likelihood(sde, score, x, seeds=range(256)); print(time.perf_counter() - t0)
""",
    "ours (Hutchinson, 1 probe) / classic scipy loop of the score_sde reference, same probe": """
import likelihood_bench as L
c = L.scipy_roundtrip_comparison("cpu", True, 1, n_probes=2)
print(c["ours_hutchinson_1"]["seconds"] / c["classic_1"]["seconds"])
""",
}

PRELUDE = """
import time, torch, scoresde
from scoresde.exact import GaussianMixture
torch.set_num_threads(1)
G = torch.Generator().manual_seed(0)
MIX = GaussianMixture([0.3, 0.7], torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), stds=0.2)
"""


def run_one(checkout: Path, code: str) -> float:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'benchmarks'}"}
    # -P: no current folder on sys.path, so that PYTHONPATH decides which scoresde is imported (checked below)
    check = f"assert scoresde.__file__.startswith({str(checkout)!r} + '/'), scoresde.__file__\n"
    out = subprocess.run([sys.executable, "-P", "-c", PRELUDE + check + code], env=env, capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{checkout}: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="the other checkout (e.g. a git worktree of the earlier commit)")
    p.add_argument("--this", default=str(HERE.parent), help="this checkout (default: the one holding this script)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="*", help="a subset of the workloads (substrings of their names)")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    trees = {"baseline": Path(args.baseline).resolve(), "this": Path(args.this).resolve()}
    names = [n for n in WORKLOADS if not args.only or any(s in n for s in args.only)]
    times: Dict[str, Dict[str, List[float]]] = {n: {"baseline": [], "this": []} for n in names}
    for r in range(args.repeats):
        for n in names:
            for which in (("baseline", "this") if r % 2 == 0 else ("this", "baseline")):
                times[n][which].append(run_one(trees[which], WORKLOADS[n]))
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    rows = []
    for n in names:
        b, t = statistics.median(times[n]["baseline"]), statistics.median(times[n]["this"])
        rows.append({"workload": n, "baseline": b, "this": t, "ratio": t / b, "runs": times[n]})
    lines = ["| workload | baseline (median) | this (median) | this / baseline |", "|---|---|---|---|"]
    for r in rows:
        unit = "" if r["workload"].startswith("ours ") else " s"
        lines.append(f"| {r['workload']} | {r['baseline']:.3f}{unit} | {r['this']:.3f}{unit} | {r['ratio']:.2f} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps({"trees": {k: str(v) for k, v in trees.items()},
                                                                   "repeats": args.repeats, "rows": rows}, indent=1))
        Path(args.out).with_suffix(".md").write_text(
            f"# Overhead of a revision ({args.repeats} alternating rounds, one thread)\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
