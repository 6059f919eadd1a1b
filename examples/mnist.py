"""MNIST on a CPU: train the ``cpu`` preset, draw samples, measure their quality and the test bits/dim.

    export SCORESDE_DATA=/path/to/data        # a folder holding mnist/ (or pass --data-dir)
    python examples/mnist.py --out docs/figures/mnist.png     # the cpu preset: about 30 minutes on 2 cores
    python examples/mnist.py --quick --out mnist.png          # a smoke run, under a minute

The data folder holds the four MNIST IDX files (``train-images-idx3-ubyte.gz`` ...) or an ``mnist/``
subfolder with them; it comes from ``--data-dir`` or the environment variable ``SCORESDE_DATA``.
Nothing is downloaded: without the files the script says where it looked and exits with status 1.

The training run is ``scoresde train --data mnist --preset cpu --conditional`` (a 0.28M-parameter
U-Net, 5,000 steps of batch 64, Min-SNR weighting, cosine learning rate, EMA 0.999, and the digit as a
label with dropout 0.2; see :mod:`scoresde.training.presets`), kept in ``--run-dir`` (default
``runs/mnist-cpu-cond``, shared with ``mnist_conditional.py`` and ``mnist_inpainting.py``) and resumed
by the next call, so re-running only redraws the figure. The figure shows samples with classifier-free
guidance ``w = 1``, one column per digit (``scoresde sample --class all --guidance 1``), and
unconditional samples of the same network (the null label). When a classifier file is at hand
(``--classifier``, default ``RUN/classifier.pt``; make one with ``scoresde classifier --data mnist --out
runs/mnist-cpu-cond/classifier.pt``), the titles give the share of samples it recognises with
confidence >= 0.9. ``--quick`` trains a tiny model for a few steps in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import scoresde
from scoresde import guidance
from scoresde.data import default_data_dir, dequantization_range, get_dataset, resolve_mnist_dir, to_levels
from scoresde.errors import DataError
from scoresde.metrics import load_quality_classifier, sample_quality
from scoresde.plotting import image_grid
from scoresde.training import TrainConfig, Trainer, load_model
from scoresde.training.presets import apply_preset

#: The run the MNIST examples share (this one, ``mnist_conditional.py`` and ``mnist_inpainting.py``).
RUN_DIR = "runs/mnist-cpu-cond"


def find_mnist(data_dir: Optional[str]) -> Optional[str]:
    """The folder with the MNIST files under ``data_dir``, or ``None`` when they are not there."""
    if not data_dir:
        return None
    try:
        return resolve_mnist_dir(data_dir, "mnist", "train")
    except DataError:
        return None


def save_figure(fig, out: str, tmp: Optional[tempfile.TemporaryDirectory] = None) -> int:
    """Lay out and write ``fig`` to the PNG ``out`` (creating its folder), close it, remove ``tmp``; returns 0."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"figure: {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def train_cpu_preset(data_dir: str, run_dir: str, quick: bool, steps: Optional[int], device: str, seed: int = 0):
    """Train (or resume up to ``steps``) the ``cpu`` preset with class labels; returns ``(sde, score, config, step)``.

    ``quick`` trains a tiny U-Net for a few steps on 512 images instead (a smoke run).
    """
    if quick:
        options = dict(n_train=512, net="unet", net_kwargs=dict(channels=8, channel_mults=[1, 2], num_res_blocks=1, dropout=0.0),
                       steps=steps or 4, batch_size=8, lr=1e-3, warmup=10, ema_decay=0.999, checkpoint_every=200,
                       sample_every=-1, log_every=1, p_uncond=0.2)
    else:
        options = apply_preset("cpu", {"steps": steps} if steps else {})
    config = TrainConfig(data="mnist", data_dir=data_dir, conditional=True, seed=seed, device=device, out=run_dir, **options)
    t0 = time.perf_counter()
    result = Trainer(config, resume=True, progress=False if quick else None).train()
    print(f"trained to step {result.step} ({time.perf_counter() - t0:.0f} s this call)")
    return (*load_model(run_dir, device=device), result.step)  # the EMA weights, in eval mode


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="folder with the MNIST IDX files or an mnist/ subfolder (default: $SCORESDE_DATA)")
    p.add_argument("--out", default="mnist.png", help="PNG to write (default: mnist.png)")
    p.add_argument("--run-dir", default=RUN_DIR, help=f"training run folder, resumed when it exists (default: {RUN_DIR})")
    p.add_argument("--classifier", help="sample-quality classifier file (default: RUN/classifier.pt when present)")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's 5000; 4 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny run in a temporary folder, for smoke tests")
    args = p.parse_args(argv)

    if find_mnist(args.data_dir) is None:
        where = repr(args.data_dir) if args.data_dir else "nowhere (no --data-dir and SCORESDE_DATA is unset)"
        print(f"error: no MNIST files found in {where}; pass --data-dir or set SCORESDE_DATA to the folder holding "
              "train-images-idx3-ubyte.gz and the other three IDX files (or an mnist/ subfolder)", file=sys.stderr)
        return 1

    quick = args.quick
    tmp = tempfile.TemporaryDirectory() if quick else None
    run_dir = tmp.name if tmp else args.run_dir

    # 1. train (or continue the run in --run-dir up to --steps)
    sde, score, cfg, trained = train_cpu_preset(args.data_dir, run_dir, quick, args.steps, args.device, args.seed)
    log = [json.loads(line) for line in Path(run_dir, "log.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["loss"]) for r in log if "loss" in r and "event" not in r]

    # 2. samples from the EMA network with DPM-Solver++(2M) SDE, 50 steps (the best of the solvers measured
    #    on this preset): with classifier-free guidance w = 1, sample i of digit i mod 10, and unconditional
    n_img = 10 if quick else 100
    labels = torch.arange(n_img, device=args.device) % 10
    clf_path = Path(args.classifier) if args.classifier else Path(run_dir, "classifier.pt")
    clf = load_quality_classifier(clf_path) if clf_path.is_file() else None
    test_all = get_dataset("mnist", data_dir=args.data_dir, split="test") if clf is not None else None
    panels = {}
    for name, score_fn in (("guided", guidance.classifier_free(score, labels, 1.0)), ("unconditional", score)):
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        t0 = time.perf_counter()
        res = scoresde.solve(sde, score_fn, (n_img, 1, 28, 28), solver="dpmpp_2m_sde", steps=4 if quick else 50,
                             generator=gen, device=args.device)
        print(f"{n_img} {name} samples with DPM-Solver++(2M) SDE, NFE {res.nfe}, {time.perf_counter() - t0:.1f} s")
        title = f"{name} samples (DPM-Solver++(2M) SDE, NFE {res.nfe})"
        if name == "guided":
            title = f"guidance w = 1, one column per digit (NFE {res.nfe})"
        if clf is not None:  # sample quality by the MNIST classifier (see `scoresde evaluate` for 1,000 samples)
            q = sample_quality(clf, res.samples, test_all.data)
            title += f"\n{100 * q.confident_fraction:.0f}% recognised (confidence >= 0.9)"
            print(f"{name}: {q.summary()}")
        panels[name] = (res.samples.cpu(), title)

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

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    axes[0].imshow(image_grid(test.data[:16], nrow=4), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("test images")
    for ax, (samples, title) in zip(axes[1:3], panels.values()):
        ax.imshow(image_grid(samples, nrow=10), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
    for ax in axes[:3]:
        ax.axis("off")
    if curve:
        axes[3].plot([c[0] for c in curve], [c[1] for c in curve])
    axes[3].set(xlabel="training step", ylabel="DSM loss (per dimension)",
                title=f"test bits/dim {bpd.mean:.2f} +- {bpd.mean_stderr:.2f} ({x_int.shape[0]} images)")
    axes[3].grid(alpha=0.3)
    n_params = sum(p.numel() for p in score.parameters())
    fig.suptitle(f"MNIST, VP SDE, class-conditional U-Net with {n_params / 1e6:.2f}M parameters, {trained} steps of "
                 f"batch {cfg.batch_size} on {args.device}")
    return save_figure(fig, args.out, tmp)


if __name__ == "__main__":
    sys.exit(main())
