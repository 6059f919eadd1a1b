"""``scoresde train-classifier``: the noise-conditional classifier of classifier guidance."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..config import SDE_NAMES, is_data_path
from ..errors import DataError, ScoreSDEError, UserError
from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``train-classifier`` sub-command."""
    c = sub.add_parser(
        "train-classifier", parents=common, help="train a noise-conditional classifier for classifier guidance",
        description="Train a classifier p_t(y | x_t) on noisy labelled data (cross-entropy at random t). Give the score "
        "model's run with --checkpoint so that the classifier uses the same SDE.",
    )
    c.add_argument("--data", default="gmm", help="labelled data: mnist, fashion-mnist, cifar10, folder:PATH, moons, "
                   "checkerboard, rings, gmm or PATH.npz with x and y")
    c.add_argument("--data-dir", help="folder with the MNIST-family or CIFAR-10 files")
    c.add_argument("--n-train", type=A.positive_int, help="number of training examples")
    c.add_argument("--checkpoint", help="the score model's run directory or checkpoint: its SDE is used")
    c.add_argument("--sde", type=A.choice_type("SDE", SDE_NAMES), help="forward SDE without --checkpoint (default: vp)")
    c.add_argument("--sde-arg", action="append", type=A.key_value, default=[], metavar="KEY=VALUE", help="SDE argument")
    c.add_argument("--net-arg", action="append", type=A.key_value, default=[], metavar="KEY=VALUE",
                   help="classifier argument, e.g. hidden=128 or channels=32 (repeatable)")
    c.add_argument("--steps", type=A.positive_int, help="optimizer steps (default: 2000 vectors, 5000 images)")
    c.add_argument("--batch-size", type=A.positive_int, help="batch size (default: 256 vectors, 128 images)")
    c.add_argument("--lr", type=A._typed(lambda s: A.V.finite_float(A._number(s), "--lr", positive=True, maximum=1.0), "lr"),
                   help="learning rate in (0, 1] (default: 2e-3 vectors, 5e-4 images)")
    c.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    c.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    c.add_argument("--out", default="classifier.pt", help="classifier file to write (default: classifier.pt)")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=cmd_train_classifier)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Train a noise-conditional classifier on labelled data and save it (with its SDE and data set)."""
    import torch

    from ..checkpoint import build_sde, read_config
    from ..classifier import NoiseConditionalClassifier, save_classifier, train_classifier
    from ..data import get_dataset

    out = A.check_output(args.out, (".pt", ".pth"))
    if args.checkpoint:
        if args.sde is not None or args.sde_arg:
            raise UserError("--sde/--sde-arg conflict with --checkpoint, whose run fixes the SDE; give one of them")
        cfg = read_config(args.checkpoint)
        sde_name, sde_kwargs = cfg.sde, dict(cfg.sde_kwargs)
    else:
        sde_name, sde_kwargs = args.sde or "vp", dict(args.sde_arg)
    sde = build_sde(sde_name, **sde_kwargs)
    ds = get_dataset(args.data, data_dir=A.data_dir_for(args.data, args.data_dir), split="train", n=args.n_train,
                     generator=torch.Generator().manual_seed(args.seed))
    if ds.labels is None:
        raise DataError(f"{args.data!r} has no labels; use mnist, a toy set with components (moons, checkerboard, rings, gmm) "
                        "or an .npz file with arrays x and y")
    is_image = len(ds.event_shape) == 3
    dev = A.device(args.device)
    A.apply_threads(args, None, small=not is_image)
    k = int(ds.labels.max()) + 1
    defaults = dict(steps=5000, batch_size=128, lr=5e-4) if is_image else dict(steps=2000, batch_size=256, lr=2e-3)
    steps = args.steps or defaults["steps"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        try:
            clf = NoiseConditionalClassifier(ds.event_shape, max(k, 2), **dict(args.net_arg))
        except ScoreSDEError as e:
            raise UserError(f"bad --net-arg for the classifier: {e}") from None
        except TypeError as e:
            raise UserError(f"bad --net-arg for the classifier: {e}") from None
    clf = clf.to(dev)
    print(f"training a {k}-class noise-conditional classifier on {args.data} {ds.event_shape} "
          f"({sum(p.numel() for p in clf.parameters()):,} parameters), {steps} steps, {sde_name} SDE", flush=True)
    t0 = time.perf_counter()
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    losses = train_classifier(clf, sde, ds.data.to(dev), ds.labels.to(dev), steps=steps,
                              batch_size=args.batch_size or defaults["batch_size"], lr=args.lr or defaults["lr"],
                              generator=gen, log_every=0 if args.quiet else max(1, steps // 10))
    data = os.path.abspath(args.data) if is_data_path(args.data) else args.data
    save_classifier(out, clf, sde_name, sde_kwargs, data=data, steps=steps, num_classes=k)
    tail = losses[-100:]
    print(f"cross-entropy {sum(tail) / len(tail):.4f} (mean of the last {len(tail)} steps), {time.perf_counter() - t0:.1f} s")
    print(f"classifier: {out}")
    return 0
