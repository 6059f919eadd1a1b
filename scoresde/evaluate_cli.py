"""The ``scoresde evaluate`` and ``scoresde classifier`` sub-commands and the periodic quality report of training."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

#: File name of the sample-quality classifier inside a run directory.
CLASSIFIER_FILE = "classifier.pt"
#: Samples and DDIM steps of the periodic quality report of ``train --eval-every``.
EVAL_SAMPLES, EVAL_STEPS = 256, 50


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``evaluate`` and ``classifier`` to the sub-command parsers ``sub``."""
    from .cli import _nonneg_int, _positive_float, _positive_int
    from .solvers import SOLVERS

    e = sub.add_parser(
        "evaluate",
        parents=[common],
        help="sample quality (Fréchet LeNet distance, classifier confidence, class coverage) and test bits/dim",
        description="Draw samples from a trained image model and measure them with a small classifier trained on the "
        "data set (see `scoresde classifier`), then compute test bits/dim. With --json the last line of stdout is one "
        "JSON object.",
    )
    e.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    e.add_argument("--classifier", help="classifier file (default: RUN/classifier.pt, trained and saved there when missing)")
    e.add_argument("--data-dir", help="folder with the data set (default: the run's, then SCORESDE_DATA)")
    e.add_argument("--num", type=_positive_int, default=1000, help="number of samples (default: 1000)")
    e.add_argument("--solver", default="ddim", choices=sorted(SOLVERS), help="sampler (default: ddim)")
    e.add_argument("--steps", type=_positive_int, help="solver steps (solver default when omitted)")
    e.add_argument("--guidance", type=float, metavar="W",
                   help="a class-conditional run: every class in turn with classifier-free guidance W (0: conditional); "
                   "default: unconditional samples")
    e.add_argument("--batch-size", type=_positive_int, default=250, help="samples per solver call (default: 250)")
    e.add_argument("--likelihood-num", type=_nonneg_int, default=16,
                   help="test images for bits/dim, 0 to skip (default: 16)")
    e.add_argument("--rtol", type=_positive_float, default=1e-5, help="likelihood ODE relative tolerance (default: 1e-5)")
    e.add_argument("--atol", type=_positive_float, default=1e-5, help="likelihood ODE absolute tolerance (default: 1e-5)")
    e.add_argument("--threshold", type=float, default=0.9, help="confidence threshold (default: 0.9)")
    e.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default: 0)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    e.add_argument("--samples-out", help="also write the samples: FILE.npy or FILE.png")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    e.add_argument("--quiet", action="store_true", help="no progress output")

    c = sub.add_parser(
        "classifier",
        parents=[common],
        help="train the small classifier behind the sample-quality figures and save it",
        description="Train a LeNet-style classifier on the training split of an image data set (about a minute or "
        "two on a CPU for MNIST) and save it; `scoresde evaluate` and `train --eval-every` use it.",
    )
    c.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"], help="data set (default: mnist)")
    c.add_argument("--data-dir", help="folder with the data set (default: the environment variable SCORESDE_DATA)")
    c.add_argument("--out", required=True, help="file to write, e.g. runs/mnist/classifier.pt")
    c.add_argument("--epochs", type=_positive_int, default=2, help="training epochs (default: 2)")
    c.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default: 0)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    c.add_argument("--quiet", action="store_true", help="no progress output")


def _run_dir(checkpoint: str) -> Path:
    p = Path(checkpoint)
    return p if p.is_dir() else p.parent


def get_classifier(path: Optional[str], run: str, data: str, data_dir: Optional[str], device: Any, quiet: bool) -> Any:
    """Load the classifier at ``path`` (or ``RUN/classifier.pt``); train and save one there when neither exists."""
    from .metrics import load_quality_classifier, train_quality_classifier

    if path is not None:
        return load_quality_classifier(path, device=device)
    default = _run_dir(run) / CLASSIFIER_FILE
    if default.is_file():
        return load_quality_classifier(default, device=device)
    print(f"note: no classifier at {default}; training one on {data} (done once, saved there)", file=sys.stderr, flush=True)
    clf = train_quality_classifier(data, data_dir=data_dir, device=device, progress=False if quiet else None)
    clf.save(default)
    print(f"classifier: test accuracy {100 * clf.test_accuracy:.2f}%, saved to {default}", file=sys.stderr, flush=True)
    return clf.to(device)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import UserError, _device
    from .evaluate import evaluate_run
    from .training import read_config

    device = _device(args.device)
    cfg = read_config(args.checkpoint)
    if cfg.event_shape is None or len(cfg.event_shape) != 3:
        raise UserError(f"evaluate measures image models; this run's examples have shape {tuple(cfg.event_shape or ())}")
    if not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.num < 2:
        raise UserError("--num must be at least 2 (the Fréchet distance needs a covariance)")
    data_dir = args.data_dir or (cfg.data_dir if cfg.data_dir and Path(cfg.data_dir).exists() else None)
    clf = get_classifier(args.classifier, args.checkpoint, cfg.data, data_dir, device, args.quiet)
    res = evaluate_run(args.checkpoint, clf, data_dir=data_dir, num=args.num, solver=args.solver, steps=args.steps,
                       batch_size=args.batch_size, likelihood_num=args.likelihood_num,
                       likelihood_options=dict(rtol=args.rtol, atol=args.atol), threshold=args.threshold,
                       seed=args.seed, device=device, use_ema=not args.raw_weights, progress=False if args.quiet else None,
                       guidance=args.guidance)
    q = res.quality
    how = "" if args.guidance is None else f", every class in turn with guidance w = {args.guidance:g}"
    print(f"{q.n} samples ({args.solver}{how}, NFE {res.sampling['nfe']}, {res.sampling['seconds']:.1f} s): {q.summary()}")
    print("class shares (%): " + " ".join(f"{i}:{100 * f:.1f}" for i, f in enumerate(q.class_fractions)))
    if res.likelihood is not None:
        s = res.likelihood.summary()
        print(f"test bits/dim ({s['num']} images, {s['trace']} trace, NFE {s['nfe']}, {res.likelihood.seconds:.1f} s): "
              f"{s['bits_per_dim']:.4f} +- {s['bits_per_dim_stderr']:.4f}")
    if args.samples_out:
        _write_samples(res.samples, args.samples_out, cfg, f"{args.solver}: {q.n} samples")
    if args.json:
        out = {**res.to_dict(), "classifier_test_accuracy": clf.test_accuracy}
        print(json.dumps(_finite(out)))
    return 0


def _write_samples(x: Any, out: str, cfg: Any, title: str) -> None:
    import numpy as np

    from .cli import UserError

    p = Path(out)
    if p.suffix.lower() not in (".npy", ".png"):
        raise UserError(f"--samples-out must end in .npy or .png, got {out!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".npy":
        np.save(p, x.numpy())
    else:
        from .plotting import save_samples_figure

        save_samples_figure(x[:100], p, title=title, data_range=tuple(cfg.data_range or (-1.0, 1.0)))
    print(f"samples: {p}")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def cmd_classifier(args: argparse.Namespace) -> int:
    from .cli import _device
    from .metrics import train_quality_classifier

    device = _device(args.device)
    clf = train_quality_classifier(args.data, data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, device=device,
                           progress=False if args.quiet else None)
    path = clf.save(args.out)
    print(f"classifier for {args.data}: test accuracy {100 * clf.test_accuracy:.2f}% "
          f"({clf.info['train_seconds']:.0f} s of training); saved to {path}")
    return 0


def periodic_quality(trainer: Any, every: int, classifier: Optional[str], quiet: bool = False,
                     num: Optional[int] = None, steps: Optional[int] = None) -> Callable[[Any], Optional[Dict[str, Any]]]:
    """A :attr:`~scoresde.training.Trainer.on_checkpoint` hook: sample quality every ``every`` steps.

    Draws ``num`` DDIM samples (``steps`` steps; default :data:`EVAL_SAMPLES`, :data:`EVAL_STEPS`) from the EMA weights, measures them with the
    classifier against the test split and returns the figures (which the trainer logs); also prints
    one line on stderr. The classifier is loaded (or trained and saved into the run) once, here.
    """
    from .checkpoint import LATEST
    from .data import get_dataset
    from .evaluate import draw_samples
    from .metrics import reference_statistics, sample_quality

    cfg = trainer.config
    num, steps = num or EVAL_SAMPLES, steps or EVAL_STEPS
    if len(cfg.event_shape) != 3:
        from .cli import UserError

        raise UserError("--eval-every measures image models only")
    if not trainer.dist.is_main:
        return lambda t: None
    clf = get_classifier(classifier, str(Path(cfg.out) / LATEST), cfg.data, cfg.data_dir, trainer.device, quiet)
    ref = reference_statistics(clf, get_dataset(cfg.data, data_dir=cfg.data_dir, split="test").data)

    def hook(t: Any) -> Optional[Dict[str, Any]]:
        if t.step % every and t.step != t.config.steps:
            return None
        gen = torch.Generator(device=t.device).manual_seed(cfg.seed)
        x = draw_samples(t.sde, t.ema_model, num, cfg.event_shape, solver="ddim", steps=steps, generator=gen,
                         device=t.device, progress=False).samples
        q = sample_quality(clf, x, ref)
        if not quiet:
            print(f"\nstep {t.step}: {q.summary()}", file=sys.stderr, flush=True)
        return {"fld": q.fld, "confident_fraction": q.confident_fraction, "min_class_fraction": q.min_class_fraction}

    return hook
