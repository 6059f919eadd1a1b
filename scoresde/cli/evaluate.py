"""``scoresde evaluate`` and ``scoresde classifier``: sample quality and test bits/dim of image models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..solvers import SOLVERS
from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``evaluate`` and ``classifier`` sub-commands."""
    e = sub.add_parser(
        "evaluate", parents=common,
        help="sample quality (Fréchet LeNet distance, classifier confidence, class coverage) and test bits/dim",
        description="Draw samples from a trained or published image model and measure them with a small classifier "
        "trained on the data set (see `scoresde classifier`), then compute test bits/dim. With --json the last line of "
        "stdout is one JSON object.",
    )
    A.add_model_options(e)
    e.add_argument("--classifier", help="classifier file (default: RUN/classifier.pt, trained and saved there when missing)")
    e.add_argument("--data-dir", help="folder with the data set (default: the run's, then SCORESDE_DATA)")
    e.add_argument("--num", type=A.int_from(2), default=1000, help="number of samples, at least 2 (default: 1000)")
    e.add_argument("--solver", default="ddim", type=A.choice_type("solver", sorted(SOLVERS)), help="sampler (default: ddim)")
    e.add_argument("--steps", type=A.positive_int, help="solver steps (solver default when omitted)")
    e.add_argument("--guidance", type=A.guidance_weight, metavar="W",
                   help="a class-conditional run: every class in turn with classifier-free guidance W (0: conditional); "
                   "default: unconditional samples")
    e.add_argument("--batch-size", type=A.positive_int, default=250, help="samples per solver call (default: 250)")
    e.add_argument("--likelihood-num", type=A.nonneg_int, default=16, help="test images for bits/dim, 0 to skip (default: 16)")
    e.add_argument("--rtol", type=A.positive_float, default=1e-5, help="likelihood ODE relative tolerance (default: 1e-5)")
    e.add_argument("--atol", type=A.positive_float, default=1e-5, help="likelihood ODE absolute tolerance (default: 1e-5)")
    e.add_argument("--threshold", type=A._typed(lambda s: _open_unit(A._number(s)), "threshold"), default=0.9,
                   help="confidence threshold in (0, 1) (default: 0.9)")
    e.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    e.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--samples-out", help="also write the samples: FILE.npy, FILE.png or DIR/")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser(
        "classifier", parents=common, help="train the small classifier behind the sample-quality figures and save it",
        description="Train a LeNet-style classifier on the training split of an image data set (about a minute or "
        "two on a CPU for MNIST) and save it; `scoresde evaluate` and `train --eval-every` use it.",
    )
    c.add_argument("--data", default="mnist", type=A.choice_type("data set", ["mnist", "fashion-mnist", "cifar10"]),
                   help="data set (default: mnist)")
    c.add_argument("--data-dir", help="folder with the data set (default: the environment variable SCORESDE_DATA)")
    c.add_argument("--out", required=True, help="file to write, e.g. runs/mnist/classifier.pt")
    c.add_argument("--epochs", type=A.int_from(1, 1000), default=2, help="training epochs (default: 2)")
    c.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    c.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_classifier)


def _open_unit(v: float) -> float:
    from ..errors import OptionError

    if not 0 < v < 1:
        raise OptionError(f"--threshold must lie in (0, 1), got {v}")
    return v


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Sample quality and test bits/dim of a model; one JSON line with ``--json``."""
    from ..evaluate import evaluate_model, get_quality_classifier

    samples_out = A.check_output(args.samples_out, (".npy", ".png"), "--samples-out", folder_ok=True) \
        if args.samples_out else None
    dev = A.device(args.device)
    model = A.load_model(args, dev)
    if len(model.data_shape) != 3:
        raise UserError(f"evaluate measures image models; this model's examples have shape {tuple(model.data_shape)}")
    A.apply_threads(args, A.score_work(model, dev))
    data_dir = A.data_dir_for(model.data, args.data_dir, model)
    run = args.checkpoint if model.run_config is not None else Path(str(args.checkpoint).split(":", 1)[-1])
    clf = get_quality_classifier(args.classifier, run, model.data, data_dir, dev, args.quiet)
    res = evaluate_model(model, clf, data_dir=data_dir, num=args.num, solver=args.solver, steps=args.steps,
                         batch_size=args.batch_size, likelihood_num=args.likelihood_num,
                         likelihood_options=dict(rtol=args.rtol, atol=args.atol), threshold=args.threshold,
                         seed=args.seed, progress=False if args.quiet else None, guidance=args.guidance)
    q = res.quality
    how = "" if args.guidance is None else f", every class in turn with guidance w = {args.guidance:g}"
    print(f"{q.n} samples ({args.solver}{how}, NFE {res.sampling['nfe']}, {res.sampling['seconds']:.1f} s): {q.summary()}")
    print("class shares (%): " + " ".join(f"{i}:{100 * f:.1f}" for i, f in enumerate(q.class_fractions)))
    if res.likelihood is not None:
        s = res.likelihood.summary()
        print(f"test bits/dim ({s['num']} images, {s['trace']} trace, NFE {s['nfe']}, {res.likelihood.seconds:.1f} s): "
              f"{s['bits_per_dim']:.4f} +- {s['bits_per_dim_stderr']:.4f}")
    if samples_out is not None:
        A.write_samples(res.samples[:100] if samples_out.suffix.lower() == ".png" else res.samples, samples_out,
                        model.data_range, f"{args.solver}: {q.n} samples")
        print(f"samples: {samples_out}")
    if args.json:
        print(json.dumps(A.finite_json({**res.to_dict(), "classifier_test_accuracy": clf.test_accuracy})))
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    """Train the quality classifier of a data set and save it."""
    from ..metrics import train_quality_classifier

    out = A.check_output(args.out, (".pt", ".pth"))
    dev = A.device(args.device)
    A.apply_threads(args, None)
    clf = train_quality_classifier(args.data, data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, device=dev,
                                   progress=False if args.quiet else None)
    path = clf.save(out)
    print(f"classifier for {args.data}: test accuracy {100 * clf.test_accuracy:.2f}% "
          f"({clf.info['train_seconds']:.0f} s of training); saved to {path}")
    return 0
