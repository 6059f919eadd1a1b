"""MNIST on a CPU: train the ``cpu`` preset, draw samples, measure their quality and the test bits/dim.

    export SCORESDE_DATA=/path/to/data        # a folder holding mnist/ (or pass --data-dir)
    python examples/mnist.py --out docs/figures/mnist.png     # the cpu preset: about 30 minutes on 2 CPU cores
    python examples/mnist.py --quick --out mnist.png          # a smoke run of a few seconds

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

Nearly all of the time is training (about 0.3 s of CPU time per step, so 25 minutes for the 5,000
steps; longer when other work shares the cores), then about half a minute for the samples and the
bits/dim. It runs on one CPU thread by default (``--threads``): on two cores a second thread trains
the U-Net about 1.6 times faster when nothing else runs, but several times slower as soon as another
process wants a core. Training shows the trainer's progress (step, loss, time left), and each
sampling and likelihood stage prints a line when it starts, a progress report while it runs and its
time when it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

import scoresde
from scoresde import guidance
from scoresde.data import default_data_dir, dequantization_range, get_dataset, resolve_mnist_dir, to_levels
from scoresde.errors import DataError
from scoresde.metrics import load_quality_classifier, sample_quality
from scoresde.plotting import draw_image_grid
from scoresde.progress import Progress, ScoreProgress
from scoresde.training import TrainConfig, Trainer, load_model
from scoresde.training.presets import apply_preset

#: The run the MNIST examples share (this one, ``mnist_conditional.py`` and ``mnist_inpainting.py``).
RUN_DIR = "runs/mnist-cpu-cond"

#: Torch threads of the MNIST examples (``--threads``). On two cores the U-Net trains about 1.6 times
#: faster on 2 threads than on 1 when nothing else runs, but several times slower (and samples slower)
#: as soon as another process wants a core: 1 is the safe default.
DEFAULT_THREADS = 1


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """``--threads N`` (default :data:`DEFAULT_THREADS`), applied by :func:`set_threads`."""
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS, metavar="N",
                   help=f"CPU threads for torch (default: {DEFAULT_THREADS}; 2 trains about 1.6x faster on an otherwise "
                        "idle 2-core machine, but is several times slower on a busy one)")


def set_threads(args: argparse.Namespace) -> None:
    """Use ``args.threads`` torch threads from now on (call it before any work)."""
    torch.set_num_threads(args.threads)


def step_progress(desc: str, steps: int) -> Tuple[Progress, Callable]:
    """A progress report on stderr for ``steps`` solver steps, and the solver ``callback`` that advances it.

    On a terminal a bar redrawn in place; in a log a line every 30 s (see :mod:`scoresde.progress`).
    """
    bar = Progress(steps, desc, "step")
    return bar, lambda i, t, x: bar.set(i + 1)


def find_mnist(data_dir: Optional[str]) -> Optional[str]:
    """The folder with the MNIST files under ``data_dir``, or ``None`` when they are not there."""
    if not data_dir:
        return None
    try:
        return resolve_mnist_dir(data_dir, "mnist", "train")
    except DataError:
        return None


def report_missing_data(data_dir: Optional[str]) -> None:
    """One line on stderr: where the MNIST files were looked for, and how to point at them."""
    where = repr(data_dir) if data_dir else "nowhere (no --data-dir and SCORESDE_DATA is unset)"
    print(f"error: no MNIST files found in {where}; pass --data-dir or set SCORESDE_DATA to the folder holding "
          "train-images-idx3-ubyte.gz and the other three IDX files (or an mnist/ subfolder)", file=sys.stderr)


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
    print(f"training the U-Net in {run_dir} up to step {config.steps} on {torch.get_num_threads()} thread(s) "
          "(a run already there is resumed)...", flush=True)
    t0 = time.perf_counter()
    result = Trainer(config, resume=True, progress=None).train()  # a bar on a terminal, a line every 30 s in a log
    print(f"trained to step {result.step} ({time.perf_counter() - t0:.0f} s this call)", flush=True)
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
    add_threads_argument(p)
    p.add_argument("--quick", action="store_true", help="a tiny run in a temporary folder, for smoke tests")
    args = p.parse_args(argv)
    set_threads(args)

    if find_mnist(args.data_dir) is None:
        report_missing_data(args.data_dir)
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
    sample_steps = 4 if quick else 50
    for name, score_fn in (("guided", guidance.classifier_free(score, labels, 1.0)), ("unconditional", score)):
        print(f"sampling {n_img} {name} images with DPM-Solver++(2M) SDE ({sample_steps} steps)...", flush=True)
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        t0 = time.perf_counter()
        bar, callback = step_progress(f"sample ({name})", sample_steps)
        with bar:
            res = scoresde.solve(sde, score_fn, (n_img, 1, 28, 28), solver="dpmpp_2m_sde", steps=sample_steps,
                                 generator=gen, device=args.device, callback=callback)
        print(f"{n_img} {name} samples with DPM-Solver++(2M) SDE, NFE {res.nfe}, {time.perf_counter() - t0:.1f} s",
              flush=True)
        title = f"{name} samples (DPM-Solver++(2M) SDE, NFE {res.nfe})"
        if name == "guided":
            title = f"guidance w = 1, one column per digit (NFE {res.nfe})"
        if clf is not None:  # sample quality by the MNIST classifier (see `scoresde evaluate` for 1,000 samples)
            q = sample_quality(clf, res.samples, test_all.data)
            title += f"\n{100 * q.confident_fraction:.0f}% recognised (confidence >= 0.9)"
            print(f"{name}: {q.summary()}", flush=True)
        panels[name] = (res.samples.cpu(), title)

    # 3. bits/dim of test images: exact likelihood of the probability-flow ODE, Hutchinson trace,
    #    uniform dequantization. The data put grey level k at -1 + 2k/255, so the dequantization bins
    #    of width w = 2/255 are centred there: data_range = (-1 - w/2, 1 + w/2) = dequantization_range.
    test = get_dataset("mnist", data_dir=args.data_dir, split="test", n=2 if quick else 16)
    levels, (lo, hi) = test.discrete_levels, test.data_range
    x_int = to_levels(test.data, levels, (lo, hi)).to(args.device)
    options = dict(method="euler", steps=4) if quick else dict(rtol=1e-3, atol=1e-3)
    eps = 1e-5  # the likelihood's start time (the default of bits_per_dim)
    print(f"bits/dim of {x_int.shape[0]} test images (probability-flow ODE, "
          f"{'4 Euler steps' if quick else 'adaptive dopri5'})...", flush=True)
    t0 = time.perf_counter()
    with Progress(100, "bits/dim", "%") as bar:  # the share of the time interval [eps, T] covered
        bpd = scoresde.bits_per_dim(sde, ScoreProgress(score, bar, eps, sde.T), x_int, levels=levels,
                                    data_range=dequantization_range(levels, (lo, hi)), trace="hutchinson", eps=eps,
                                    **options, generator=torch.Generator(device=args.device).manual_seed(args.seed))
        bar.set(100)  # a fixed-step solver never evaluates the score at t = T itself
    print(f"bits/dim on {x_int.shape[0]} test images: {bpd.mean:.3f} +- {bpd.mean_stderr:.3f} "
          f"(NFE {bpd.nfe}, {time.perf_counter() - t0:.0f} s)", flush=True)

    # 4. the figure: test digits, samples, training loss
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8))
    draw_image_grid(axes[0], test.data[:16], nrow=4)
    axes[0].set_title("test images")
    for ax, (name, (samples, title)) in zip(axes[1:3], panels.items()):
        # the guided samples: sample i is of digit i mod 10, so column k holds digit k
        draw_image_grid(ax, samples, nrow=10, column_labels=range(10) if name == "guided" else None)
        ax.set_title(title, fontsize=10)
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
