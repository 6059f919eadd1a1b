"""``scoresde train`` and ``scoresde demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

from ..config import LR_SCHEDULES, NET_KINDS, PARAMETERIZATIONS, PRECISIONS, SDE_NAMES, TIME_SAMPLINGS, WEIGHTINGS
from ..errors import UserError
from . import args as A

# TrainConfig field -> CLI flag, for the options `scoresde train` accepts.
TRAIN_OPTIONS = (
    "data", "data_dir", "n_train", "sde", "net", "parameterization", "weighting", "importance_sampling",
    "loss_eps", "time_sampling", "steps", "batch_size", "lr", "weight_decay", "warmup", "lr_schedule", "grad_clip",
    "ema_decay", "seed", "device", "out", "checkpoint_every", "sample_every", "log_every", "precision", "compile",
    "conditional", "p_uncond", "random_flip", "latent",
)


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``train`` and ``demo`` sub-commands."""
    t = sub.add_parser(
        "train", parents=common, help="train a score network",
        description="Train a score network with denoising score matching. Options left out take sensible "
        "defaults (MLP for vectors, U-Net for images); with --resume they are taken from the checkpoint. Ctrl-C or "
        "SIGTERM finishes the current step, writes a checkpoint and says how to resume.",
    )
    t.add_argument("--preset", type=A.choice_type("preset", ["cpu", "gpu"]),
                   help="a training recipe for MNIST-size images: cpu (digits on 2 CPU cores in about 30 minutes) or gpu "
                   "(a larger model for one GPU); options given explicitly override it")
    t.add_argument("--data", help="toy set (moons, swiss_roll, checkerboard, rings, gmm), mnist, fashion-mnist, cifar10, "
                   "folder:PATH (PNG/JPEG images, one subfolder per class) or PATH.npy/.npz (default: moons)")
    t.add_argument("--data-dir", help="folder with the MNIST-family or CIFAR-10 files (default: the environment variable "
                   "SCORESDE_DATA)")
    t.add_argument("--image-size", type=A.int_from(1, 4096),
                   help="with --data folder:PATH: centre-crop and resize every image to SIZE x SIZE")
    t.add_argument("--latent", metavar="FILE", help="train a latent score SDE on the codes of --data under this autoencoder "
                   "(scoresde train-autoencoder); sample, likelihood and evaluate then decode")
    t.add_argument("--random-flip", action="store_true", default=None,
                   help="flip each training image horizontally with probability 1/2 (as score_sde's CIFAR-10 configs do)")
    t.add_argument("--n-train", type=A.positive_int, help="number of training examples (toy sets: points drawn; files and "
                   "images: the first N)")
    t.add_argument("--sde", type=A.choice_type("SDE", SDE_NAMES), help="forward SDE (default: vp)")
    t.add_argument("--sde-arg", action="append", type=A.key_value, default=[], metavar="KEY=VALUE",
                   help="SDE argument, e.g. beta_max=20 or sigma_max=50 (repeatable)")
    t.add_argument("--net", type=A.choice_type("network", NET_KINDS), help="network (default: auto = MLP for vectors, "
                   "U-Net for images)")
    t.add_argument("--net-arg", action="append", type=A.key_value, default=[], metavar="KEY=VALUE",
                   help="network argument, e.g. hidden=256 or channels=64 (repeatable; vectors default to hidden=128, depth=2)")
    t.add_argument("--parameterization", type=A.choice_type("parameterization", PARAMETERIZATIONS),
                   help="what the network predicts (default: eps)")
    t.add_argument("--weighting", type=A.choice_type("weighting", WEIGHTINGS),
                   help="DSM weighting lambda(t): std2, likelihood, or min_snr (Min-SNR-5) (default: likelihood vectors, std2 images)")
    t.add_argument("--importance-sampling", action="store_true", default=None,
                   help="importance-sample t (with the likelihood weighting; default: on for vectors)")
    t.add_argument("--loss-eps", type=A.positive_float, help="smallest training time (default: 1e-5)")
    t.add_argument("--time-sampling", type=A.choice_type("time sampling", TIME_SAMPLINGS),
                   help="training times of a batch: independent, or one per equal slice of [loss-eps, T] (default: stratified "
                        "vectors, uniform images)")
    t.add_argument("--steps", type=A.positive_int, help="total optimizer steps (default: 5000 vectors, 20000 images)")
    t.add_argument("--batch-size", type=A.positive_int, help="global batch size (default: 1024 vectors, 128 images)")
    t.add_argument("--lr", type=A.positive_float, help="peak learning rate (default: 2e-3 vectors, 2e-4 images)")
    t.add_argument("--weight-decay", type=A.nonneg_float, help="AdamW weight decay (default: 0)")
    t.add_argument("--warmup", type=A.nonneg_int, help="linear warm-up steps (default: 100 vectors, 1000 images)")
    t.add_argument("--lr-schedule", type=A.choice_type("learning-rate schedule", LR_SCHEDULES),
                   help="after warm-up (default: cosine vectors, constant images)")
    t.add_argument("--grad-clip", type=A.nonneg_float, help="gradient-norm clipping, 0 = off (default: 1)")
    t.add_argument("--ema-decay", type=A.finite, help="EMA decay in [0, 1) (default: 0.999 vectors, 0.9999 images)")
    t.add_argument("--seed", type=A.seed, help="random seed (default: 0)")
    t.add_argument("--device", type=A.device_name, help="auto, cpu, cuda or cuda:N (default: auto)")
    t.add_argument("--out", help="output directory (default: run)")
    t.add_argument("--checkpoint-every", type=A.positive_int, help="checkpoint interval in steps")
    t.add_argument("--sample-every", type=A.int_from(-1), help="sample-figure interval; 0 = only at the end, -1 = never")
    t.add_argument("--log-every", type=A.positive_int, help="log interval in steps (default: 100)")
    t.add_argument("--precision", type=A.choice_type("precision", PRECISIONS), help="bf16 autocasts the forward pass (default: fp32)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    t.add_argument("--conditional", action="store_true", default=None,
                   help="train a class-conditional model on the data's labels (MNIST digits, toy components, .npz y)")
    t.add_argument("--p-uncond", type=A.probability, help="label dropout for classifier-free guidance, in [0, 1] (default: 0.1; "
                   "needs --conditional)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--classifier", help="with --eval-every: the sample-quality classifier file (default: RUN/classifier.pt)")
    t.add_argument("--eval-every", type=A.positive_int,
                   help="at every checkpoint that is a multiple of this many steps, log the sample quality "
                   "(Fréchet LeNet distance, confidence, coverage of 256 DDIM samples) to log.jsonl and stderr")
    t.add_argument("--tensorboard", metavar="DIR", help="also write scalars (loss, learning rate, gradient norm, evaluation "
                   "metrics) for TensorBoard to DIR (needs the tensorboard package)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser(
        "demo", parents=common,
        help="train on a 2-D toy set, sample with three solvers, compute the test NLL, draw a figure",
        description="The end-to-end demo (about two minutes on two CPU cores; --quick: well under one).",
    )
    d.add_argument("--out", default="demo", help="output directory (default: demo)")
    d.add_argument("--steps", type=A.positive_int, help="training steps (default: that of scoresde train, 5000; 2000 with --quick)")
    d.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    d.add_argument("--data", default="gmm", type=A.choice_type("toy set", ["gmm", "moons", "swiss_roll", "checkerboard", "rings"]),
                   help="toy set (default: gmm, whose entropy is known)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run")
    d.add_argument("--device", type=A.device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)


def train_config(args: argparse.Namespace):
    """The :class:`~scoresde.config.TrainConfig` the flags ask for (a new run, or the one being resumed)."""
    from ..checkpoint import LATEST, read_config
    from ..config import TrainConfig
    from ..data import DATA_DIR_SETS, default_data_dir

    given: Dict[str, Any] = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.sde_arg:
        given["sde_kwargs"] = dict(args.sde_arg)
    if args.net_arg:
        given["net_kwargs"] = dict(args.net_arg)
    if getattr(args, "image_size", None) is not None:
        given["image_size"] = args.image_size
    out = Path(given.get("out", TrainConfig.out))
    saved = _saved_run_config(out) if args.resume and not (out / LATEST).exists() else None
    if args.resume and ((out / LATEST).exists() or saved is not None):
        base = read_config(out) if saved is None else saved
        for key in ("net_kwargs", "sde_kwargs"):
            if key in given:
                given[key] = {**getattr(base, key), **given[key]}
        config = base.replace(**given)
    else:
        if args.resume:
            A.note(f"no checkpoint in {out}; starting a new run")
        if args.preset:
            from ..training.presets import apply_preset

            given = apply_preset(args.preset, given)
        if "data_dir" not in given and given.get("data", "moons") in DATA_DIR_SETS:
            given["data_dir"] = default_data_dir()
        config = TrainConfig(**given)
    if args.p_uncond is not None and not config.conditional:
        raise UserError("--p-uncond is the label dropout of a class-conditional run; add --conditional (or leave it out)")
    return config


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a run; print where its checkpoint, log and figures are."""
    from ..training import Trainer

    config = train_config(args)
    trainer = Trainer(config, resume=args.resume, progress=False if args.quiet else None, tensorboard=args.tensorboard)
    main, cfg = trainer.dist.is_main, trainer.config
    A.apply_threads(args, trainer.step_work(), small=len(cfg.event_shape) != 3, stored=trainer.stored_threads)
    if main and not args.preset and trainer.device.type == "cpu" and len(cfg.event_shape) == 3 and trainer.step == 0:
        _advise_cpu(trainer)
    if args.eval_every:
        from ..evaluate import quality_hook

        trainer.on_checkpoint = quality_hook(trainer, args.eval_every, args.classifier, quiet=args.quiet)
    if main:
        start = f"resuming at step {trainer.step}" if trainer.resumed_from is not None else "starting"
        print(f"{start}: {cfg.data} {tuple(cfg.event_shape)}, {cfg.sde} SDE, {cfg.net} network "
              f"({sum(p.numel() for p in trainer.net.parameters()):,} parameters), {cfg.steps} steps of batch "
              f"{cfg.batch_size} on {trainer.device}" + (f" x {trainer.dist.world_size} processes"
                                                        if trainer.dist.distributed else ""), flush=True)
    result = trainer.train()
    if main:
        tail = result.losses[-100:]
        loss = f"{sum(tail) / len(tail):.4f}" if tail else "n/a"
        print(f"{'stopped at' if result.interrupted else 'trained to'} step {result.step} in {result.seconds:.1f} s "
              f"({result.examples_per_s:,.0f} examples/s); loss {loss} (mean of the last {len(tail)} steps)")
        print(f"checkpoint: {result.checkpoint}")
        print(f"log: {result.log_file}")
        for f in result.figures[-1:]:
            print(f"samples: {f}")
        if result.interrupted:
            print(f"interrupted: resume with `scoresde train --resume --out {cfg.out}`", file=sys.stderr)
    return 130 if result.interrupted else 0


def _saved_run_config(out: Path):
    """The configuration in ``out/config.json`` of a run that died before its first checkpoint (or ``None``)."""
    from ..checkpoint import CONFIG_FILE
    from ..config import TrainConfig

    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot resume {out}: its {CONFIG_FILE} is unreadable ({e}); use a new --out") from None
    A.note(f"{out} has no checkpoint yet; restarting its run from step 0 with its {CONFIG_FILE}")
    return cfg


def _advise_cpu(trainer: Any) -> None:
    """On a CPU with image-sized defaults: print the expected training time and suggest ``--preset cpu``."""
    from ..checkpoint import build_score_model
    from ..training.presets import CPU_PRESET_SECONDS_PER_STEP, PRESETS, cpu_advice, seconds_per_step

    cfg = trainer.config
    sec = seconds_per_step(trainer.net, lambda m, x: trainer.loss_fn(build_score_model(m, trainer.sde, cfg.parameterization), x),
                           trainer.data[0], cfg.batch_size)
    if (cfg.steps - trainer.step) * sec > 1.5 * PRESETS["cpu"]["steps"] * CPU_PRESET_SECONDS_PER_STEP:
        print(cpu_advice(cfg.steps - trainer.step, cfg.batch_size, sec, sum(p.numel() for p in trainer.net.parameters())),
              file=sys.stderr, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """The end-to-end demo."""
    from ..training.demo import run_demo

    A.apply_threads(args, None, small=True)
    run_demo(out=args.out, steps=args.steps, seed=args.seed, quick=args.quick, data=args.data, device=args.device,
             progress=False if args.quiet else None, threads=torch_threads())
    return 0


def torch_threads() -> int:
    """The number of torch threads in force."""
    import torch

    return torch.get_num_threads()
