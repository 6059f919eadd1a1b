"""Class-conditional 2-D toy: one MLP for four overlapping classes, and a classifier-free guidance sweep.

    python examples/conditional_toy.py --out docs/figures/conditional_toy.png   # about a minute on 2 CPU cores
    python examples/conditional_toy.py --quick --out conditional_toy.png        # a smoke run

The data: four overlapping Gaussians (means on the unit circle, standard deviation 0.45), written to an
``.npz`` file with arrays ``x`` and ``y`` (the component is the class). A class-conditional MLP is trained
on it with label dropout (``p_uncond = 0.1``) and sampled with classifier-free guidance
``(1 + w) s(x, t, y) - w s(x, t, None)`` for a sweep of weights ``w``. The top row uses the exact
conditional scores of the mixture, the bottom row the trained network: as ``w`` grows the samples of each
class concentrate where ``p(y | x)`` is high, away from the other classes (the titles give the mean exact
posterior ``p(y | x)`` of the samples).

It runs on one CPU thread by default (``--threads``): a network this small gains nothing from a second
thread, and on a busy machine torch's default of one thread per core makes every step many times slower.
Training shows the trainer's progress line (step, loss, time left) and each sampling run prints a line.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

import scoresde
from scoresde import guidance
from scoresde.exact import GaussianMixture
from scoresde.training import TrainConfig, Trainer, load_model

ANGLES = torch.arange(4, dtype=torch.float64) * math.pi / 2
MIXTURE = GaussianMixture(torch.full((4,), 0.25, dtype=torch.float64),
                          torch.stack([ANGLES.cos(), ANGLES.sin()], dim=1), 0.45)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="conditional_toy.png", help="PNG to write (default: conditional_toy.png)")
    p.add_argument("--steps", type=int, help="training steps (default: 3000; 150 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default: 1, the fastest for this small network)")
    p.add_argument("--quick", action="store_true", help="a short run, for smoke tests")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    weights = (0.0, 1.0, 2.0, 4.0)
    per_class = 60 if args.quick else 300
    steps = args.steps or (150 if args.quick else 3000)

    with tempfile.TemporaryDirectory() as tmp:
        x, y = MIXTURE.sample(20000 if args.quick else 50000, generator=torch.Generator().manual_seed(args.seed),
                              return_labels=True)
        np.savez(Path(tmp) / "four.npz", x=x.float().numpy(), y=y.numpy())  # labelled data: arrays x and y
        print(f"training a class-conditional MLP for {steps} steps on {args.threads} thread(s)...", flush=True)
        t0 = time.perf_counter()
        cfg = TrainConfig(data=str(Path(tmp) / "four.npz"), conditional=True, p_uncond=0.1, steps=steps,
                          net_kwargs=dict(hidden=64 if args.quick else 128, depth=2 if args.quick else 3), lr=3e-3,
                          warmup=50, batch_size=256, weighting="std2", lr_schedule="constant", time_sampling="uniform",
                          out=str(Path(tmp) / "run"), sample_every=-1, seed=args.seed, device="cpu")
        Trainer(cfg, progress=None).train()  # a bar on a terminal, a line every 30 s in a log
        sde, net_score, _ = load_model(Path(tmp) / "run")
        print(f"trained a class-conditional MLP for {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)

    gmm = MIXTURE
    exact = gmm.conditional_score_fn(sde)
    labels = torch.arange(4).repeat_interleave(per_class)
    rows = {"exact score": (exact, torch.float64), "trained MLP": (net_score, torch.float32)}
    results = {}
    sample_steps = 50 if args.quick else 200
    for row, (cond, dtype) in rows.items():
        for w in weights:
            print(f"{row:12s} w = {w:g}: sampling {labels.shape[0]} points with ddim ({sample_steps} steps)...", end=" ",
                  flush=True)
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(args.seed)
            x = scoresde.sample(sde, guidance.classifier_free(cond, labels, w), (labels.shape[0], 2), solver="ddim",
                                steps=sample_steps, generator=gen, dtype=dtype).double()
            post = gmm.responsibilities(x).gather(1, labels[:, None]).squeeze(1)
            results[row, w] = (x, float(post.mean()))
            print(f"{time.perf_counter() - t0:.1f} s; mean p(y | x) {post.mean():.3f}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(weights), figsize=(3.1 * len(weights), 6.6), sharex=True, sharey=True)
    colors = plt.get_cmap("tab10")(labels.numpy() % 10)
    for i, row in enumerate(rows):
        for j, w in enumerate(weights):
            x, post = results[row, w]
            ax = axes[i, j]
            ax.scatter(x[:, 0], x[:, 1], s=3, c=colors, alpha=0.6, linewidths=0)
            ax.set_title(f"{row}, w = {w:g}\nmean p(y | x) = {post:.3f}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
    fig.suptitle("classifier-free guidance on four overlapping Gaussian classes (colour = class)", fontsize=11)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
