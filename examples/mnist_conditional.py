"""MNIST, class-conditional: one U-Net for every digit and for none, sampled with classifier-free guidance.

    python examples/mnist_conditional.py --data-dir /path/to/data --out docs/figures/mnist_conditional.png  # CPU: about 30 min
    python examples/mnist_conditional.py --data-dir /path/to/data --quick --out mnist_conditional.png       # a smoke run

The network gets the digit as a label embedding with a learned null label; label dropout
(``p_uncond = 0.2``) teaches it the unconditional score too, so classifier-free guidance
``(1 + w) s(x, t, y) - w s(x, t, None)`` needs no second network. The figure shows one row per digit
at ``w = 0`` (plain conditional) and at a larger ``w``.

``--data-dir`` (or the environment variable ``SCORESDE_DATA``) is the folder with the MNIST IDX files or
a parent with an ``mnist/`` folder. Nothing is downloaded: without the files the script says where it
looked and exits with status 1. The run is ``scoresde train --data mnist --preset cpu --conditional``
(about half an hour on 2 CPU cores), kept in ``--run-dir`` (default ``runs/mnist-cpu-cond``, shared with
``examples/mnist.py`` and ``examples/mnist_inpainting.py``) and resumed by the next call; once it is
there, the two sampling runs take about 2 minutes. With guidance ``w = 1`` an MNIST classifier
recognises 99% of its samples (``benchmarks/results/mnist-cpu-cond.md``). ``--threads`` as in
``mnist.py`` (default 1); training and sampling report their progress as they go.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import scoresde
from scoresde import guidance
from scoresde.data import default_data_dir
from scoresde.plotting import draw_image_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist import (  # noqa: E402
    RUN_DIR,
    add_threads_argument,
    find_mnist,
    report_missing_data,
    save_figure,
    set_threads,
    step_progress,
    train_cpu_preset,
)


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="folder with the MNIST IDX files (default: $SCORESDE_DATA)")
    p.add_argument("--run-dir", default=RUN_DIR, help=f"training run folder, resumed when it exists (default: {RUN_DIR})")
    p.add_argument("--steps", type=int, help="training steps (default: the cpu preset's 5000; 4 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    p.add_argument("--quick", action="store_true", help="a tiny run in a temporary folder, for smoke tests")
    return p


def prepare(args: argparse.Namespace):
    """Find the data and train (or load) the class-conditional model the MNIST examples share.

    Returns ``None`` (after a message on stderr) when the MNIST files are missing, else
    ``(data_dir, tmp, sde, score, cfg, trained)``; ``tmp`` keeps a ``--quick`` run's folder alive.
    """
    set_threads(args)
    data_dir = find_mnist(args.data_dir)
    if data_dir is None:
        report_missing_data(args.data_dir)
        return None
    tmp = tempfile.TemporaryDirectory() if args.quick else None
    sde, score, cfg, trained = train_cpu_preset(data_dir, tmp.name if tmp else args.run_dir, args.quick, args.steps,
                                                args.device, args.seed)
    return data_dir, tmp, sde, score, cfg, trained


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--out", default="mnist_conditional.png", help="PNG to write (default: mnist_conditional.png)")
    p.add_argument("--guidance", type=float, default=1.0, help="the larger guidance weight shown (default: 1)")
    args = p.parse_args(argv)
    prepared = prepare(args)
    if prepared is None:
        return 1
    data_dir, tmp, sde, score, cfg, trained = prepared

    # one row per digit: labels 0,0,...,1,1,... for a [10 * per_row] batch
    per_row = 2 if args.quick else 8
    labels = torch.arange(10, device=args.device).repeat_interleave(per_row)
    steps = 4 if args.quick else 100
    samples = {}
    for w in (0.0, args.guidance):
        print(f"w = {w:g}: sampling {labels.shape[0]} images with DDIM ({steps} steps)...", flush=True)
        t0 = time.perf_counter()
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        score_fn = guidance.classifier_free(score, labels, w)  # one network call on the doubled batch per step
        bar, callback = step_progress(f"sample (w = {w:g})", steps)
        with bar:
            res = scoresde.solve(sde, score_fn, (labels.shape[0], 1, 28, 28), solver="ddim", steps=steps, generator=gen,
                                 device=args.device, callback=callback)
        samples[w] = res.samples.cpu()
        print(f"w = {w:g}: {labels.shape[0]} samples with DDIM, NFE {res.nfe}, {time.perf_counter() - t0:.1f} s",
              flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 6.2))
    for ax, (w, x) in zip(axes, samples.items()):
        draw_image_grid(ax, x, nrow=per_row, row_labels=range(10))
        ax.set_title("conditional (w = 0)" if w == 0 else f"classifier-free guidance w = {w:g}")
    n_params = sum(p.numel() for p in score.parameters())
    fig.suptitle(f"MNIST, one row per digit: class-conditional U-Net ({n_params / 1e6:.2f}M parameters, "
                 f"{trained} steps of batch {cfg.batch_size}, p_uncond {cfg.p_uncond})", fontsize=10)
    return save_figure(fig, args.out, tmp)


if __name__ == "__main__":
    sys.exit(main())
