"""MNIST: train a small U-Net, draw samples, and measure bits per dimension.

    python examples/mnist.py --data-dir ../shared/data --out docs/figures/mnist.png   # CPU: 10-15 minutes
    python examples/mnist.py --data-dir ../shared/data --quick --out mnist.png        # a smoke run, under a minute

``--data-dir`` is the folder holding the four MNIST IDX files (``train-images-idx3-ubyte.gz`` ...)
or a parent folder with an ``mnist/`` subfolder. Nothing is downloaded: without the files the
script prints where it looked and exits without error.

Be realistic about CPU: the default run (a 0.3M-parameter U-Net, 600 steps of batch 32) shows
strokes and blobs, not clean digits, and its bits/dim (measured on 16 test images with a loose ODE
tolerance) stay well above the roughly 1 bit/dim that likelihood-trained continuous-time models
reach. Good MNIST samples need tens of thousands of steps with a larger network, i.e. a GPU: for
example ``scoresde train --data mnist --device cuda`` with its image defaults (20,000 steps, batch
128, a 1.1M-parameter U-Net), then ``scoresde sample`` and ``scoresde likelihood``.

The training run is kept in ``--run-dir`` (default ``runs/mnist-example``) and resumed by the next
call, so re-running the command only redraws the figure; ``--quick`` trains in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import scoresde
from scoresde.data import dequantization_range, get_dataset, resolve_mnist_dir, to_levels
from scoresde.errors import DataError
from scoresde.training import TrainConfig, Trainer, load_model
from scoresde.training.plotting import image_grid


def find_mnist(data_dir: str) -> Optional[str]:
    """The folder with the MNIST files under ``data_dir``, or ``None`` when they are not there."""
    try:
        return resolve_mnist_dir(data_dir, "mnist", "train")
    except DataError:
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data", help="folder with the MNIST IDX files (default: data)")
    p.add_argument("--out", default="mnist.png", help="PNG to write (default: mnist.png)")
    p.add_argument("--run-dir", default="runs/mnist-example",
                   help="training run folder, resumed when it exists (default: runs/mnist-example)")
    p.add_argument("--steps", type=int, help="training steps (default: 600; 4 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny run in a temporary folder, for smoke tests")
    args = p.parse_args(argv)

    if find_mnist(args.data_dir) is None:
        print(f"skipping: no MNIST files found in {args.data_dir!r} (pass --data-dir with the folder holding "
              "train-images-idx3-ubyte.gz and the other three IDX files)")
        return 0

    quick = args.quick
    steps = args.steps or (4 if quick else 600)
    tmp = tempfile.TemporaryDirectory() if quick else None
    run_dir = tmp.name if tmp else args.run_dir
    config = TrainConfig(
        data="mnist", data_dir=args.data_dir, n_train=512 if quick else None, sde="vp",
        net="unet", net_kwargs=dict(channels=8 if quick else 16, channel_mults=[1, 2] if quick else [1, 2, 2],
                                    num_res_blocks=1, dropout=0.0),
        steps=steps, batch_size=8 if quick else 32, lr=1e-3, warmup=10 if quick else 50, ema_decay=0.999,
        seed=args.seed, device=args.device, out=run_dir, checkpoint_every=200, sample_every=-1,
        log_every=1 if quick else 20,
    )

    # 1. train (or continue the run in --run-dir up to --steps)
    t0 = time.perf_counter()
    result = Trainer(config, resume=True, progress=False).train()
    print(f"trained to step {result.step} ({time.perf_counter() - t0:.0f} s this call)")
    sde, score, cfg = load_model(run_dir, device=args.device)  # the EMA weights, in eval mode
    log = [json.loads(line) for line in Path(run_dir, "log.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["loss"]) for r in log if "loss" in r and "event" not in r]

    # 2. samples: DDIM from the EMA network
    n_img = 4 if quick else 36
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    t0 = time.perf_counter()
    res = scoresde.solve(sde, score, (n_img, 1, 28, 28), solver="ddim", steps=4 if quick else 100,
                         generator=gen, device=args.device)
    print(f"{n_img} samples with DDIM, NFE {res.nfe}, {time.perf_counter() - t0:.1f} s")

    # 3. bits/dim of test images: exact likelihood of the probability-flow ODE, Hutchinson trace,
    #    uniform dequantization. The data put grey level k at -1 + 2k/255, so the dequantization bins
    #    of width w = 2/255 are centred there: data_range = (-1 - w/2, 1 + w/2) = dequantization_range.
    test = get_dataset("mnist", data_dir=args.data_dir, split="test", n=2 if quick else 16)
    levels, (lo, hi) = test.discrete_levels, test.data_range
    x_int = to_levels(test.data, levels, (lo, hi)).to(args.device)
    options = dict(method="euler", steps=4) if quick else dict(rtol=1e-3, atol=1e-3)
    t0 = time.perf_counter()
    bpd = scoresde.bits_per_dim(sde, score, x_int, levels=levels, data_range=dequantization_range(levels, (lo, hi)),
                                trace="hutchinson", **options,
                                generator=torch.Generator(device=args.device).manual_seed(args.seed))
    print(f"bits/dim on {x_int.shape[0]} test images: {bpd.mean:.3f} +- {bpd.mean_stderr:.3f} "
          f"(NFE {bpd.nfe}, {time.perf_counter() - t0:.0f} s)")

    # 4. the figure: test digits, samples, training loss
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    axes[0].imshow(image_grid(test.data[: min(16, n_img)], nrow=4), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("test images")
    axes[1].imshow(image_grid(res.samples.cpu(), nrow=int(math.ceil(math.sqrt(n_img)))), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"samples (DDIM, NFE {res.nfe}) after {result.step} steps")
    for ax in axes[:2]:
        ax.axis("off")
    if curve:
        axes[2].plot([c[0] for c in curve], [c[1] for c in curve])
    axes[2].set(xlabel="training step", ylabel="DSM loss (per dimension)",
                title=f"test bits/dim {bpd.mean:.2f} +- {bpd.mean_stderr:.2f} ({x_int.shape[0]} images)")
    axes[2].grid(alpha=0.3)
    n_params = sum(p.numel() for p in score.parameters())
    fig.suptitle(f"MNIST, VP SDE, U-Net with {n_params / 1e6:.2f}M parameters, {result.step} steps of batch "
                 f"{cfg.batch_size} on {args.device}")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
