"""``scoresde train-autoencoder``: the VAE of a latent score SDE (then ``scoresde train --latent FILE``)."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from ..errors import DataError, UserError
from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``train-autoencoder`` sub-command."""
    p = sub.add_parser(
        "train-autoencoder", parents=common, help="train the autoencoder of a latent score SDE",
        description="Train a convolutional VAE (Gaussian encoder, discretized-logistic decoder) on 8-bit images, fit the "
        "scale of its codes and save it. Then `scoresde train --latent FILE --data SAME` trains a score SDE on its codes; "
        "sample, likelihood (a bound) and evaluate work on that run as on any other.",
    )
    p.add_argument("--data", default="mnist", help="images: mnist, fashion-mnist, cifar10, folder:PATH or PATH.npy of uint8 "
                   "images (default: mnist)")
    p.add_argument("--data-dir", help="folder with the data files (default: the environment variable SCORESDE_DATA)")
    p.add_argument("--image-size", type=A.int_from(4, 4096), help="with --data folder:PATH: centre-crop and resize to SIZE")
    p.add_argument("--out", required=True, help="autoencoder file to write, e.g. runs/mnist-ae.pt")
    p.add_argument("--latent-channels", type=A.int_from(1, 256), default=4, help="channels of the code (default: 4; "
                   "codes are C x H/4 x W/4)")
    p.add_argument("--hidden", type=A.int_from(1, 1024), default=48, help="channel width of the VAE (default: 48)")
    p.add_argument("--kl-weight", type=A._typed(lambda s: A.V.finite_float(A._number(s), "--kl-weight", minimum=0.0,
                                                                            maximum=1e3), "weight"), default=1.0,
                   help="weight of the KL term while training (default: 1, the ELBO; the reported bound always uses 1)")
    p.add_argument("--codes", default="mean", type=A.choice_type("codes", ["mean", "sample"]),
                   help="what the score SDE models: the encoder's means or draws from q(z|x) (default: mean)")
    p.add_argument("--code-scale", default="auto", help="auto (scale the codes to unit standard deviation, default) or a "
                   "positive number")
    p.add_argument("--steps", type=A.positive_int, help="optimizer steps")
    p.add_argument("--cpu-minutes", type=A.positive_float, help="or: a budget of process CPU minutes")
    p.add_argument("--batch-size", type=A.positive_int, default=128, help="images per step (default: 128)")
    p.add_argument("--lr", type=A._typed(lambda s: A.V.finite_float(A._number(s), "--lr", positive=True, maximum=1.0), "lr"),
                   help="learning rate in (0, 1] (default: 1e-3)")
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_train_autoencoder)


def cmd_train_autoencoder(args: argparse.Namespace) -> int:
    """Train the VAE, fit the code scale, save the autoencoder and print its test bound."""
    import torch

    from ..baselines import ConvVAE, fit
    from ..data import get_dataset
    from ..latent import LatentSpace, fit_code_scale, save_autoencoder

    out = A.check_output(args.out, (".pt", ".pth"))
    if args.steps is None and args.cpu_minutes is None:
        raise UserError("give --steps N or --cpu-minutes M (a budget of process CPU time)")
    scale = None if args.code_scale == "auto" else A.V.finite_float(A._number(args.code_scale), "--code-scale", positive=True)
    data_dir = A.data_dir_for(args.data, args.data_dir)
    train = get_dataset(args.data, data_dir=data_dir, split="train", image_size=args.image_size)
    if train.discrete_levels != 256 or train.data.ndim != 4:
        raise DataError(f"{args.data!r} is not a set of 8-bit images [N, C, H, W]; the autoencoder models 8-bit images")
    c, h, w = train.event_shape
    if h % 4 or w % 4:
        raise DataError(f"the autoencoder halves the images twice: their height and width ({h} x {w}) must be multiples of "
                        "4 (use --image-size with a folder)")
    dev = A.device(args.device)
    A.apply_threads(args, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        vae = ConvVAE((c, h, w), latent_channels=args.latent_channels, hidden=args.hidden).to(dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    t0 = time.perf_counter()
    res = fit(vae, train.data, steps=args.steps, budget_seconds=None if args.cpu_minutes is None else 60 * args.cpu_minutes,
              batch_size=args.batch_size, lr=args.lr, generator=gen, progress=not args.quiet,
              step_options={"kl_weight": args.kl_weight})
    scale = scale or fit_code_scale(vae, train.data[:10_000], args.codes, torch.Generator(device=dev).manual_seed(args.seed))
    space = LatentSpace(vae, scale, args.codes)
    test = get_dataset(args.data, data_dir=data_dir, split="test", image_size=args.image_size)
    with torch.no_grad():
        bpd = vae.bits_per_dim(test.data[:1000].to(dev), torch.Generator(device=dev).manual_seed(args.seed + 1))
    mean, se = float(bpd.mean()), float(bpd.std()) / math.sqrt(bpd.numel())
    save_autoencoder(out, space, data=args.data, steps=res.steps, cpu_seconds=round(res.cpu_seconds, 1),
                     kl_weight=args.kl_weight, test_bits_per_dim=mean)
    print(f"trained a VAE ({sum(p.numel() for p in vae.parameters()):,} parameters, codes {space.event_shape}) for "
          f"{res.steps} steps in {time.perf_counter() - t0:.0f} s ({res.cpu_seconds:.0f} CPU s); test ELBO bound "
          f"{mean:.4f} +- {se:.4f} bits/dim (1,000 images); code scale {scale:.4g} ({args.codes})")
    print(f"autoencoder: {out}  (next: scoresde train --latent {out} --data {args.data})")
    return 0
