"""MNIST inpainting: the top half of test digits is given, the model fills in the bottom half.

    python examples/mnist_inpainting.py --data-dir /path/to/data --out docs/figures/mnist_inpainting.png  # under a minute once trained
    python examples/mnist_inpainting.py --data-dir /path/to/data --quick --out mnist_inpainting.png   # a smoke run

It reuses the class-conditional run of ``examples/mnist_conditional.py`` (``--run-dir``, trained first
when missing: the ``cpu`` preset with labels, about half an hour on 2 CPU cores) and compares, on the same test digits: the replacement method (``resample=1``), RePaint
resampling (``resample=3``, 50 steps: CPU-sized; RePaint itself uses 250 steps and 10 passes) and
resampling with the true digit as a label (the conditional score). The
known pixels are kept exactly in every case; what changes is how well the bottom half agrees with the top.

``--data-dir`` (or ``SCORESDE_DATA``) and ``--threads`` (default 1) as in ``mnist_conditional.py``; without
the files the script says where it looked and exits with status 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import scoresde
from scoresde import guidance
from scoresde.data import get_dataset
from scoresde.plotting import draw_image_grid

#: Reverse diffusion: with resampling it keeps the variance that the ancestral step loses (see the
#: "Conditional generation" page).
SOLVER = "reverse_diffusion"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist import save_figure, step_progress  # noqa: E402
from mnist_conditional import parser, prepare  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--out", default="mnist_inpainting.png", help="PNG to write (default: mnist_inpainting.png)")
    p.add_argument("--resample", type=int, default=3, help="RePaint passes per step (default: 3)")
    args = p.parse_args(argv)
    prepared = prepare(args)
    if prepared is None:
        return 1
    data_dir, tmp, sde, score, cfg, trained = prepared

    n = 3 if args.quick else 6
    test = get_dataset("mnist", data_dir=data_dir, split="test", n=n)
    x = test.data.to(args.device)
    labels = test.labels.to(args.device)
    mask = torch.zeros(1, 28, 28, device=args.device)
    mask[:, :14] = 1  # the top half is known; the mask is shared by the batch
    steps = 4 if args.quick else 50
    runs = {
        "replacement (resample = 1)": (score, 1),
        f"RePaint (resample = {args.resample})": (score, args.resample),
        f"RePaint + true label (resample = {args.resample})": (guidance.conditional(score, labels), args.resample),
    }
    rows = {"test digits": x, "given: top half": torch.where(mask.bool(), x, torch.zeros_like(x))}
    for title, (score_fn, r) in runs.items():
        print(f"{title}: inpainting {n} digits ({SOLVER}, {steps} steps)...", flush=True)
        t0 = time.perf_counter()
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        bar, callback = step_progress(f"inpaint (resample {r})", steps)
        with bar:
            rows[title] = scoresde.inpaint(sde, score_fn, x, mask, solver=SOLVER, steps=steps, generator=gen, resample=r,
                                           callback=callback)
        err = float(((rows[title] - x)[:, :, 14:] ** 2).mean())
        print(f"{title}: {time.perf_counter() - t0:.1f} s; mean squared error of the bottom half {err:.3f}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * n + 1, 1.25 * len(rows) + 0.6))
    for ax, (title, imgs) in zip(axes, rows.items()):
        draw_image_grid(ax, imgs.cpu(), nrow=n, title=title, fontsize=8)
    fig.suptitle(f"MNIST inpainting, {SOLVER}, {steps} steps\nmodel of mnist_conditional.py ({trained} training steps)",
                 fontsize=9)
    return save_figure(fig, args.out, tmp)


if __name__ == "__main__":
    sys.exit(main())
