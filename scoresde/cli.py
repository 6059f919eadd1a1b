"""The ``scoresde`` command line: ``train``, ``sample``, ``likelihood``, ``evaluate``, ``classifier``, ``demo``,
``train-classifier`` and ``inpaint``.

User errors (bad options, missing or corrupt files, NaN losses) print ``scoresde: error: ...`` to
stderr and exit with status 1 (2 for malformed command lines), without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cli_conditional import ALL_CLASSES, add_conditional_commands, add_guidance_flags, class_guidance, guided_score
from .cli_conditional import COMMANDS as CONDITIONAL_COMMANDS

EXIT_ERROR = 1
EXIT_USAGE = 2

# CLI flag (dest) -> solver constructor argument; every solver takes --steps and --eps.
SOLVER_FLAGS = {
    "snr": "snr",
    "corrector_steps": "corrector_steps",
    "method": "method",
    "rtol": "rtol",
    "atol": "atol",
    "max_steps": "max_steps",
    "predictor": "predictor",
    "corrector": "corrector",
    "eta": "eta",
    "steps_per_level": "steps_per_level",
    "step_ratio": "step_ratio",
}

# TrainConfig field -> CLI flag, for the options `scoresde train` accepts.
TRAIN_OPTIONS = (
    "data", "data_dir", "n_train", "sde", "net", "parameterization", "weighting", "importance_sampling",
    "loss_eps", "time_sampling", "steps", "batch_size", "lr", "weight_decay", "warmup", "lr_schedule", "grad_clip",
    "ema_decay", "seed", "device", "out", "checkpoint_every", "sample_every", "log_every", "precision", "compile",
    "conditional", "p_uncond",
)


class UserError(Exception):
    """A problem with the command line's input, reported without a traceback."""


# ---------------------------------------------------------------------- argument types
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _thread_count(s: str) -> int:
    v = _positive_int(s)
    limit = 4 * (os.cpu_count() or 1)
    if v > limit:
        raise argparse.ArgumentTypeError(f"expected at most {limit} threads (4 per CPU core), got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}")
    return v


def _int_from(minimum: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {s!r}")
        return v

    return parse


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63 - 1], got {s!r}") from None
    if not 0 <= v <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63 - 1], got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s!r}")
    return v


def _key_value(s: str) -> tuple:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    if not k.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a valid name as KEY, got {s!r}")
    try:
        value = json.loads(v)
    except ValueError:
        value = v
    return k, value


def _add_shard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard-dir", help="folder of the finished chunks, shared by all ranks; a rerun resumes from it "
                   "(default: OUT.shards)")
    p.add_argument("--timeout", type=_positive_float, default=600.0,
                   help="seconds a rank may go silent (died, stopped) before the others exit with an error (default: 600)")


# ---------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` argument parser with its sub-commands."""
    from . import __version__
    from .solvers import GRIDS, SOLVERS

    p = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs: train, sample, evaluate likelihoods.",
    )
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=_thread_count,
                        help="torch CPU threads (1 is often fastest for small networks and on shared machines)")

    # ---- train
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a score network",
        description="Train a score network with denoising score matching. Options left out take sensible "
        "defaults (MLP for vectors, U-Net for images); with --resume they are taken from the checkpoint.",
    )
    t.add_argument("--preset", choices=["cpu", "gpu"],
                   help="a training recipe for MNIST-size images: cpu (digits on 2 CPU cores in about 30 minutes) or gpu "
                   "(a larger model for one GPU); options given explicitly override it")
    t.add_argument("--data", help="toy set (moons, swiss_roll, checkerboard, rings, gmm), mnist, fashion-mnist, or PATH.npy/.npz (default: moons)")
    t.add_argument("--data-dir", help="folder with the MNIST-family files (default: the environment variable SCORESDE_DATA)")
    t.add_argument("--n-train", type=_positive_int, help="number of training examples (toy sets: points drawn; files and images: the first N)")
    t.add_argument("--sde", choices=["vp", "subvp", "ve"], help="forward SDE (default: vp)")
    t.add_argument("--sde-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="SDE argument, e.g. beta_max=20 or sigma_max=50 (repeatable)")
    t.add_argument("--net", choices=["auto", "mlp", "unet"], help="network (default: auto = MLP for vectors, U-Net for images)")
    t.add_argument("--net-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="network argument, e.g. hidden=256 or channels=64 (repeatable; vectors default to hidden=128, depth=2)")
    t.add_argument("--parameterization", choices=["eps", "score", "x0"], help="what the network predicts (default: eps)")
    t.add_argument("--weighting", choices=["std2", "likelihood", "min_snr"],
                   help="DSM weighting lambda(t): std2, likelihood, or min_snr (Min-SNR-5) (default: likelihood vectors, std2 images)")
    t.add_argument("--importance-sampling", action="store_true", default=None, help="importance-sample t (with the likelihood weighting; default: on for vectors)")
    t.add_argument("--loss-eps", type=_positive_float, help="smallest training time (default: 1e-5)")
    t.add_argument("--time-sampling", choices=["uniform", "stratified"],
                   help="training times of a batch: independent, or one per equal slice of [loss-eps, T] (default: stratified "
                        "vectors, uniform images)")
    t.add_argument("--steps", type=_positive_int, help="total optimizer steps (default: 5000 vectors, 20000 images)")
    t.add_argument("--batch-size", type=_positive_int, help="global batch size (default: 1024 vectors, 128 images)")
    t.add_argument("--lr", type=_positive_float, help="peak learning rate (default: 2e-3 vectors, 2e-4 images)")
    t.add_argument("--weight-decay", type=_nonneg_float, help="AdamW weight decay (default: 0)")
    t.add_argument("--warmup", type=_nonneg_int, help="linear warm-up steps (default: 100 vectors, 1000 images)")
    t.add_argument("--lr-schedule", choices=["constant", "cosine"], help="after warm-up (default: cosine vectors, constant images)")
    t.add_argument("--grad-clip", type=_nonneg_float, help="gradient-norm clipping, 0 = off (default: 1)")
    t.add_argument("--ema-decay", type=float, help="EMA decay in [0, 1) (default: 0.999 vectors, 0.9999 images)")
    t.add_argument("--seed", type=_seed, help="random seed (default: 0)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    t.add_argument("--out", help="output directory (default: run)")
    t.add_argument("--checkpoint-every", type=_positive_int, help="checkpoint interval in steps")
    t.add_argument("--sample-every", type=_int_from(-1), help="sample-figure interval; 0 = only at the end, -1 = never")
    t.add_argument("--log-every", type=_positive_int, help="log interval in steps (default: 100)")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocasts the forward pass (default: fp32)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    t.add_argument("--conditional", action="store_true", default=None,
                   help="train a class-conditional model on the data's labels (MNIST digits, toy components, .npz y)")
    t.add_argument("--p-uncond", type=_nonneg_float, help="label dropout for classifier-free guidance (default: 0.1)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--classifier", help="with --eval-every: the sample-quality classifier file (default: RUN/classifier.pt)")
    t.add_argument("--eval-every", type=_positive_int,
                   help="at every checkpoint that is a multiple of this many steps, log the sample quality "
                   "(Fréchet LeNet distance, confidence, coverage of 256 DDIM samples) to log.jsonl and stderr")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    # ---- sample
    s = sub.add_parser(
        "sample",
        parents=[common],
        help="draw samples from a trained model",
        description="Draw samples with any solver. Solver options apply only to the solvers that take them.",
    )
    s.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    s.add_argument("--solver", default="ode", choices=sorted(SOLVERS), help="sampler (default: ode)")
    s.add_argument("--num", "--count", dest="num", type=_positive_int,
                   help="number of samples (default: 1000 vectors, 64 images); under torchrun spell it --count")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    s.add_argument("--out", default="samples.npy", help="FILE.npy (raw model-space array) or FILE.png (figure)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--batch-size", type=_positive_int, help="samples per solver call (default: all at once)")
    s.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--steps", type=_positive_int, help="solver steps (solver default when omitted)")
    s.add_argument("--eps", type=_positive_float, help="final time of the reverse process")
    s.add_argument("--no-denoise", action="store_true", help="skip the final Tweedie denoising step")
    s.add_argument("--grid", choices=sorted(GRIDS), help="time grid (default: the solver's own)")
    s.add_argument("--seeds", help="per-sample seeds A-B (inclusive) or A:B: sample i is a function of its seed only, "
                   "the same in any batch; sharded over the ranks under torchrun")
    _add_shard_options(s)
    s.add_argument("--quiet", action="store_true", help="no progress output")
    g = s.add_argument_group("solver options (each only for the solvers that take it)")
    g.add_argument("--snr", type=_positive_float, help="Langevin corrector signal-to-noise ratio (pc, langevin)")
    g.add_argument("--corrector-steps", type=_nonneg_int, help="Langevin steps per time step (pc, langevin)")
    g.add_argument("--predictor", help="predictor of pc: reverse_diffusion, euler_maruyama, ancestral, ddim")
    g.add_argument("--corrector", choices=["langevin", "none"], help="corrector of pc")
    g.add_argument("--method", help="ODE method (ode: dopri5, rk4, ...) or torchsde method (torchsde: euler, milstein, srk)")
    g.add_argument("--rtol", type=_positive_float, help="relative tolerance (ode)")
    g.add_argument("--atol", type=_positive_float, help="absolute tolerance (ode)")
    g.add_argument("--max-steps", type=_positive_int, help="cap on adaptive steps (ode)")
    g.add_argument("--eta", type=_nonneg_float, help="DDIM stochasticity in [0, 1] (ddim)")
    g.add_argument("--steps-per-level", type=_positive_int, help="Langevin steps per noise level (annealed_langevin)")
    g.add_argument("--step-ratio", type=_positive_float, help="Langevin step size over sigma^2 (annealed_langevin)")
    add_guidance_flags(s)
    g.add_argument("--solver-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the solver's class, e.g. --solver-arg order=3 (repeatable)")

    # ---- likelihood
    lk = sub.add_parser(
        "likelihood",
        parents=[common],
        help="log-likelihood (and bits/dim) of data under a trained model",
        description="Exact log-likelihood through the probability-flow ODE. With --json the last line of "
        "stdout is one JSON object with log_prob_mean (nats), log_prob_stderr, nfe and, for discrete data, bits_per_dim.",
    )
    lk.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    lk.add_argument("--data", help="PATH.npy/.npz, mnist, fashion-mnist or a toy set name, its test split "
                    "(default: the data set the model was trained on)")
    lk.add_argument("--data-dir", help="folder with the MNIST-family files (default: the run's, then SCORESDE_DATA)")
    lk.add_argument("--num", "--count", dest="num", type=_positive_int,
                    help="evaluate the first NUM examples (default: 1000 for vectors, 16 for images); under torchrun "
                    "spell it --count")
    lk.add_argument("--trace", choices=["auto", "exact", "hutchinson"], default="auto",
                    help="divergence estimator (default: auto = exact up to 32 dimensions, Hutchinson with its standard "
                    "error above)")
    lk.add_argument("--n-probes", type=_positive_int, default=1, help="Hutchinson probes (default: 1)")
    lk.add_argument("--method", default="dopri5", help="ODE method (default: dopri5)")
    lk.add_argument("--rtol", type=_positive_float, default=1e-5, help="relative tolerance (default: 1e-5)")
    lk.add_argument("--atol", type=_positive_float, default=1e-5, help="absolute tolerance (default: 1e-5)")
    lk.add_argument("--eps", type=_positive_float, default=1e-5, help="start time of the ODE (default: 1e-5)")
    lk.add_argument("--max-steps", type=_positive_int, default=10_000,
                    help="cap on the adaptive solver's steps per batch (default: 10000); raise it for stiff models")
    lk.add_argument("--steps", type=_positive_int, help="uniform steps of a fixed-step --method (euler, midpoint, heun, rk4, ...)")
    lk.add_argument("--repeats", type=_positive_int, default=1, help="dequantization draws for discrete data (default: 1)")
    lk.add_argument("--batch-size", type=_positive_int, help="examples per ODE solve (default: 256 vectors, 16 images)")
    lk.add_argument("--seed", type=_seed, default=0, help="seed of probes and dequantization noise")
    lk.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    lk.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    lk.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    lk.add_argument("--quiet", action="store_true", help="no progress output")
    lk.add_argument("--out", help="FILE.npy of per-example log-likelihoods (nats; bits/dim for discrete data): seeds each "
                    "example by --seed + index and steps it on its own, so the numbers do not depend on the batch; "
                    "sharded over the ranks under torchrun (where this mode is implied)")
    _add_shard_options(lk)

    from .evaluate_cli import add_parsers

    add_parsers(sub, common)

    # ---- demo
    d = sub.add_parser(
        "demo",
        parents=[common],
        help="train on a 2-D toy set, sample with three solvers, compute the test NLL, draw a figure",
        description="The end-to-end demo (about two minutes on two CPU cores; --quick: well under one).",
    )
    d.add_argument("--out", default="demo", help="output directory (default: demo)")
    d.add_argument("--steps", type=_positive_int, help="training steps (default: that of scoresde train, 5000; 2000 with --quick)")
    d.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    d.add_argument("--data", default="gmm", choices=["gmm", "moons", "swiss_roll", "checkerboard", "rings"],
                   help="toy set (default: gmm, whose entropy is known)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run")
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    add_conditional_commands(sub, common)
    return p


# ---------------------------------------------------------------------- commands
def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _default_data_dir() -> Optional[str]:
    """The folder named by ``SCORESDE_DATA`` (no other folder is ever guessed)."""
    from .data import default_data_dir

    return default_data_dir()


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import LATEST
    from .training import TrainConfig, Trainer, read_config

    given: Dict[str, Any] = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.sde_arg:
        given["sde_kwargs"] = dict(args.sde_arg)
    if args.net_arg:
        given["net_kwargs"] = dict(args.net_arg)
    out = Path(given.get("out", TrainConfig.out))
    saved = _saved_run_config(out) if args.resume and not (out / LATEST).exists() else None
    if args.resume and ((out / LATEST).exists() or saved is not None):
        base = read_config(out) if saved is None else saved
        if "net_kwargs" in given:
            given["net_kwargs"] = {**base.net_kwargs, **given["net_kwargs"]}
        if "sde_kwargs" in given:
            given["sde_kwargs"] = {**base.sde_kwargs, **given["sde_kwargs"]}
        config = base.replace(**given)
    else:
        if args.resume and _is_main_process():
            print(f"scoresde: note: no checkpoint in {out}; starting a new run", file=sys.stderr)
        if args.preset:
            from .training.presets import apply_preset

            given = apply_preset(args.preset, given)
        if "data_dir" not in given and given.get("data", "moons") in ("mnist", "fashion-mnist"):
            given["data_dir"] = _default_data_dir()
        config = TrainConfig(**given)
    trainer = Trainer(config, resume=args.resume, progress=False if args.quiet else None)
    main = trainer.dist.is_main
    cfg = trainer.config
    if main and not args.preset and trainer.device.type == "cpu" and len(cfg.event_shape) == 3 and trainer.step == 0:
        _advise_cpu(trainer)
    if args.eval_every:
        from .evaluate_cli import periodic_quality

        trainer.on_checkpoint = periodic_quality(trainer, args.eval_every, args.classifier, quiet=args.quiet)
    if main:
        start = f"resuming at step {trainer.step}" if trainer.resumed_from is not None else "starting"
        print(
            f"{start}: {cfg.data} {tuple(cfg.event_shape)}, {cfg.sde} SDE, {cfg.net} network "
            f"({sum(p.numel() for p in trainer.net.parameters()):,} parameters), {cfg.steps} steps of batch {cfg.batch_size} "
            f"on {trainer.device}" + (f" x {trainer.dist.world_size} processes" if trainer.dist.distributed else ""),
            flush=True,
        )
    result = trainer.train()
    if main:
        tail = result.losses[-100:]
        loss = f"{sum(tail) / len(tail):.4f}" if tail else "n/a"
        print(
            f"trained to step {result.step} in {result.seconds:.1f} s ({result.examples_per_s:,.0f} examples/s); "
            f"loss {loss} (mean of the last {len(tail)} steps)"
        )
        print(f"checkpoint: {result.checkpoint}")
        print(f"log: {result.log_file}")
        for f in result.figures[-1:]:
            print(f"samples: {f}")
    return 0


def _saved_run_config(out: Path):
    """The configuration in ``out/config.json`` of a run that died before its first checkpoint (or ``None``)."""
    from .training import TrainConfig
    from .training.trainer import CONFIG_FILE

    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot resume {out}: its {CONFIG_FILE} is unreadable ({e}); use a new --out") from None
    if _is_main_process():
        print(f"scoresde: note: {out} has no checkpoint yet; restarting its run from step 0 with its {CONFIG_FILE}", file=sys.stderr)
    return cfg


def _literal(raw: str) -> Any:
    """A command-line value as a Python literal (number, bool, None, string, tuple), else the string itself."""
    import ast

    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()
def _advise_cpu(trainer: Any) -> None:
    """On a CPU with image-sized defaults: print the expected training time and suggest ``--preset cpu``."""
    from .training.presets import CPU_PRESET_SECONDS_PER_STEP, PRESETS, cpu_advice, seconds_per_step
    from .training.trainer import build_score_model

    cfg = trainer.config
    sec = seconds_per_step(trainer.net, lambda m, x: trainer.loss_fn(build_score_model(m, trainer.sde, cfg.parameterization), x),
                           trainer.data[0], cfg.batch_size)
    if (cfg.steps - trainer.step) * sec > 1.5 * PRESETS["cpu"]["steps"] * CPU_PRESET_SECONDS_PER_STEP:
        print(cpu_advice(cfg.steps - trainer.step, cfg.batch_size, sec, sum(p.numel() for p in trainer.net.parameters())),
              file=sys.stderr, flush=True)


def _solver_options(args: argparse.Namespace, solver: str) -> Dict[str, Any]:
    """The solver options given on the command line, checked against what ``solver`` takes."""
    from .solvers import SOLVERS

    params = inspect.signature(SOLVERS[solver].__init__).parameters
    accepted = [name for name in params if name != "self"]
    opts, rejected = {}, []
    for dest, name in SOLVER_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if name in accepted:
            opts[name] = value
        else:
            rejected.append("--" + dest.replace("_", "-"))
    for item in getattr(args, "solver_arg", None) or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--solver-arg takes KEY=VALUE, got {item!r}")
        if key not in accepted:
            raise UserError(f"solver {solver!r} has no option {key!r}; its options: {', '.join(accepted) or 'none'}")
        opts[key] = _literal(raw)
    if rejected:
        takes = ", ".join("--" + n.replace("_", "-") for n in accepted if n in SOLVER_FLAGS.values())
        raise UserError(
            f"solver {solver!r} does not take {', '.join(rejected)}; it takes --steps, --eps"
            + (f", {takes}" if takes else "")
        )
    return opts


def _save_npy_atomically(path: Path, array) -> None:
    """``np.save`` through a temporary file renamed into place: a full disk never leaves a truncated ``.npy``."""
    import numpy as np

    tmp = path.parent / f".{path.name}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _check_sample_size(n: int, event: tuple) -> None:
    """Refuse up front a request whose samples alone would not fit in memory (``--num 10**12``)."""
    from ._utils import check_memory

    check_memory(n * math.prod(event) * 4, f"{n:,} samples of shape {event}", "Ask for fewer samples (--num)")


def _device(name: str):
    from .distributed import resolve_device

    return resolve_device(name)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .evaluate import draw_class_samples, draw_samples
    from .solvers import make_solver
    from .training import load_model

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        raise UserError(f"--out must end in .npy or .png, got {args.out!r}")
    opts = _solver_options(args, args.solver)
    if args.seeds is not None or _launched_sharded():
        return _sample_sharded(args, out, opts)
    device = _device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    every_class = args.class_label == ALL_CLASSES
    if every_class:
        make, num_classes, how = class_guidance(args, score, cfg, device)
        what = ", ".join([f"classes 0-{num_classes - 1} in turn", *how])
    else:
        score, what = guided_score(args, score, cfg, device)
    event = tuple(cfg.event_shape)
    n = args.num or (64 if len(event) == 3 else 1000)
    _check_sample_size(n, event)
    try:
        solver = make_solver(args.solver, **opts)
    except (TypeError, ValueError) as e:
        raise UserError(f"solver {args.solver!r}: {e}") from None
    gen = torch.Generator(device=device).manual_seed(args.seed)
    options = dict(solver=solver, steps=args.steps, batch_size=args.batch_size, generator=gen, device=device,
                   progress=False if args.quiet else None, desc=f"sample ({args.solver})", eps=args.eps,
                   denoise=False if args.no_denoise else None, grid=args.grid)
    if every_class:
        drawn = draw_class_samples(sde, make, n, num_classes, event, **options)
    else:
        drawn = draw_samples(sde, score, n, event, **options)
    x, nfe, seconds = drawn.samples, drawn.nfe, drawn.seconds
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        _save_npy_atomically(out, x.numpy())
    else:
        from .plotting import save_samples_figure

        rng = tuple(cfg.data_range) if cfg.data_range else (-1.0, 1.0)
        save_samples_figure(x, out, title=f"{args.solver}: {n} samples ({what})", data_range=rng)
    print(f"wrote {n} samples of shape {event} to {out} ({what}; solver {args.solver}, NFE {nfe}, {seconds:.1f} s)")
    return 0


def _likelihood_data(args: argparse.Namespace, cfg: Any, num: int):
    """The test split of ``--data`` (default: the run's data set), only its first ``num`` examples loaded."""
    from .data import MNIST_DATASETS, TOY_DATASETS, get_dataset

    spec = args.data or cfg.data
    data_dir = args.data_dir
    if spec in MNIST_DATASETS and data_dir is None:
        run_dir = cfg.data_dir if spec == cfg.data and cfg.data_dir and os.path.isdir(cfg.data_dir) else None
        data_dir = run_dir or _default_data_dir()
    if spec in TOY_DATASETS:
        return get_dataset(spec, split="test", n=num)
    ds = get_dataset(spec, data_dir=data_dir, split="test")
    ds.data = ds.data[:num]
    return ds


def _model_id(score: Any, raw_weights: bool) -> str:
    """What identifies the model of a sharded job: the digest of its weights, and which weights."""
    from .shard import model_digest

    return f"{model_digest(score)}; {'raw' if raw_weights else 'EMA'} weights"


def _launched_sharded() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _shard_device(name: str):
    """The device of this rank: ``cuda:LOCAL_RANK`` for auto/cuda under torchrun."""
    from .distributed import resolve_device

    return resolve_device(name, int(os.environ.get("LOCAL_RANK", "0")))


def _sample_sharded(args: argparse.Namespace, out: Path, opts: Dict[str, Any]) -> int:
    """``sample --seeds A-B``: one sample per seed, the seeds shared among the torchrun ranks."""
    import numpy as np

    from .noise import parse_seed_range
    from .shard import sample_seeds, shard_info
    from .solvers import make_solver
    from .training import load_model

    if args.seeds is None:
        raise UserError("under torchrun, give the seeds to share among the ranks: --seeds A-B (e.g. --seeds 0-49999)")
    try:
        seeds = parse_seed_range(args.seeds)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.num is not None and args.num != len(seeds):
        raise UserError(f"--seeds {args.seeds} gives {len(seeds)} samples but --count says {args.num}; give one")
    info = shard_info(args.timeout)
    device = _shard_device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    model = _model_id(score, args.raw_weights)
    event = tuple(cfg.event_shape)
    try:
        solver = make_solver(args.solver, **opts)
    except (TypeError, ValueError) as e:
        raise UserError(f"solver {args.solver!r}: {e}") from None
    folder = Path(args.shard_dir or f"{out}.shards")
    options = dict(chunk_size=args.batch_size or 256, timeout=args.timeout, device=device, info=info, solver=solver,
                   steps=args.steps, eps=args.eps, denoise=False if args.no_denoise else None, grid=args.grid)
    t0 = time.perf_counter()
    if args.class_label == ALL_CLASSES:  # the sample of seed s is of class s mod K, whatever the seed range
        make, num_classes, how = class_guidance(args, score, cfg, device)
        what = ", ".join([f"class of seed s = s mod {num_classes}", *how])
        x = None
        for k in range(num_classes):
            mine = [i for i, s in enumerate(seeds) if s % num_classes == k]
            if not mine:
                continue
            part = sample_seeds(sde, make(k), [seeds[i] for i in mine], event, folder / f"class-{k}",
                                model=f"{model}; class {k}; {what}", **options)
            if part is not None:
                x = part.new_empty((len(seeds), *part.shape[1:])) if x is None else x
                x[mine] = part
    else:
        score, what = guided_score(args, score, cfg, device)
        x = sample_seeds(sde, score, seeds, event, folder, model=f"{model}; {what}", **options)
    if x is None:  # not rank 0
        return 0
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        tmp = out.with_name(f".{out.stem}.tmp.npy")
        np.save(tmp, x.float().numpy())
        os.replace(tmp, out)
    else:
        from .plotting import save_samples_figure

        rng = tuple(cfg.data_range) if cfg.data_range else (-1.0, 1.0)
        save_samples_figure(x.float(), out, title=f"{args.solver}: seeds {args.seeds} ({what})", data_range=rng)
    print(f"wrote {len(seeds)} samples (seeds {args.seeds}) of shape {event} to {out} ({what}; solver {args.solver}, "
          f"{info.world_size} process(es), {seconds:.1f} s; chunks in {folder})")
    return 0


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from .errors import ShapeError
    from .evaluate import choose_trace, dataset_likelihood
    from .training import load_model

    sharded = args.out is not None or _launched_sharded()
    if sharded:
        from .shard import shard_info

        info = shard_info(args.timeout)
        device = _shard_device(args.device)
    else:
        device = _device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    is_image = len(cfg.event_shape) == 3
    num = args.num or (16 if is_image else 1000)
    ds = _likelihood_data(args, cfg, num)
    x = ds.data
    if tuple(x.shape[1:]) != tuple(cfg.event_shape):
        raise ShapeError(
            f"the data's examples have shape {tuple(x.shape[1:])} but the model was trained on examples of shape "
            f"{tuple(cfg.event_shape)} ({cfg.data}); pass --data with data of that shape, or leave it out to use {cfg.data}"
        )
    if (ds.discrete_levels or None) != (cfg.discrete_levels or None):
        what = lambda lv: f"{lv}-level quantised data" if lv else "continuous data"  # noqa: E731
        raise UserError(f"the model was trained on {what(cfg.discrete_levels)} but --data {args.data} holds "
                        f"{what(ds.discrete_levels)}; bits/dim would not be comparable")
    trace = choose_trace(x[0].numel(), args.trace)
    if trace == "exact" and args.n_probes != 1:
        raise UserError("--n-probes applies to --trace hutchinson only")
    from .flow import ADAPTIVE_METHODS, FIXED_METHODS

    if args.method not in ADAPTIVE_METHODS and args.method not in FIXED_METHODS:
        raise UserError(f"unknown ODE method {args.method!r}; valid methods: {', '.join([*ADAPTIVE_METHODS, *FIXED_METHODS])}")
    if args.steps is not None and args.method in ADAPTIVE_METHODS:
        raise UserError(f"--steps applies to fixed-step methods ({', '.join(FIXED_METHODS)}); {args.method} chooses its "
                        "own steps (set --rtol/--atol, cap them with --max-steps)")
    if trace == "exact" and x[0].numel() > 4 * 32:
        print(f"note: the exact trace costs {x[0].numel()} VJPs per evaluation here; --trace hutchinson is "
              "far faster and reports its standard error", file=sys.stderr)
    args.batch_size = args.batch_size or (16 if is_image else 256)
    if sharded:
        options = dict(eps=args.eps, method=args.method, rtol=args.rtol, atol=args.atol, trace=trace,
                       max_steps=args.max_steps, steps=args.steps)
        if trace == "hutchinson":
            options["n_probes"] = args.n_probes
        args.trace, args.data = trace, args.data or cfg.data
        return _likelihood_sharded(args, sde, score, ds, device, options, info)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    data_range = tuple(cfg.data_range) if cfg.data_range else (tuple(ds.data_range) if ds.data_range else None)
    res = dataset_likelihood(sde, score, x, levels=cfg.discrete_levels, data_range=data_range, trace=trace,
                             n_probes=args.n_probes, repeats=args.repeats, batch_size=args.batch_size,
                             generator=gen, device=device, progress=False if args.quiet else None,
                             eps=args.eps, method=args.method, rtol=args.rtol, atol=args.atol,
                             max_steps=args.max_steps, steps=args.steps)
    summary: Dict[str, Any] = {**res.summary(), "data": args.data or cfg.data, "seconds": round(res.seconds, 3)}
    lp_mean, lp_se = summary["log_prob_mean"], summary["log_prob_stderr"]
    print(f"{x.shape[0]} examples of shape {tuple(x.shape[1:])}: mean log-likelihood {lp_mean:.4f} +- {lp_se:.4f} nats "
          f"(NLL {-lp_mean:.4f}); {trace} trace, NFE {res.nfe}, {res.seconds:.1f} s")
    if cfg.discrete_levels:
        summary["levels"] = cfg.discrete_levels
        print(f"bits/dim: {summary['bits_per_dim']:.4f} +- {summary['bits_per_dim_stderr']:.4f} "
              f"(uniform dequantization, {args.repeats} draw(s))")
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}))
    return 0


def _likelihood_sharded(args: argparse.Namespace, sde, score, ds, device, options: Dict[str, Any], info) -> int:
    """``likelihood --out FILE.npy`` (implied under torchrun): per-example results, examples shared among the ranks."""
    import numpy as np
    import torch

    from .data import dequantization_range, to_levels
    from .metrics import mean_and_stderr
    from .shard import log_likelihood_points

    out = Path(args.out or "likelihood.npy")
    if out.suffix.lower() != ".npy":
        raise UserError(f"--out must end in .npy, got {str(out)!r}")
    folder = Path(args.shard_dir or f"{out}.shards")
    x, levels = ds.data, ds.discrete_levels
    t0 = time.perf_counter()
    model = _model_id(score, args.raw_weights)
    if levels:
        lo, hi = ds.data_range or (-1.0, 1.0)
        res = log_likelihood_points(sde, score, to_levels(x, levels, (lo, hi)), folder, seed=args.seed,
                                    chunk_size=args.batch_size, timeout=args.timeout, device=device, info=info,
                                    model=model, levels=levels, data_range=dequantization_range(levels, (lo, hi)),
                                    repeats=args.repeats, **options)
    else:
        res = log_likelihood_points(sde, score, x.double() if device.type != "mps" else x, folder, seed=args.seed,
                                    chunk_size=args.batch_size, timeout=args.timeout, device=device, info=info,
                                    model=model, score_dtype=torch.float32, **options)
    if res is None:  # not rank 0
        return 0
    seconds = time.perf_counter() - t0
    values = res["bits_per_dim"] if levels else res["log_prob"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.npy")
    np.save(tmp, values.numpy())
    os.replace(tmp, out)
    mean, se = mean_and_stderr(values.double())
    what = "bits/dim" if levels else "log-likelihood (nats)"
    summary: Dict[str, Any] = {"num": int(x.shape[0]), "trace": args.trace, "data": args.data, "seconds": round(seconds, 3),
                               "processes": info.world_size, "out": str(out)}
    if levels:
        summary.update(bits_per_dim=mean, bits_per_dim_stderr=se, levels=levels)
    else:
        summary.update(log_prob_mean=mean, log_prob_stderr=se, nfe_per_example_mean=float(res["nfe"].double().mean()))
    print(f"{x.shape[0]} examples: mean {what} {mean:.4f} +- {se:.4f}; per-example values in {out} "
          f"({info.world_size} process(es), {seconds:.1f} s)")
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed, quick=args.quick, data=args.data, device=args.device,
             progress=False if args.quiet else None, threads=args.threads)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate_cli import cmd_evaluate as run

    return run(args)


def cmd_classifier(args: argparse.Namespace) -> int:
    from .evaluate_cli import cmd_classifier as run

    return run(args)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "likelihood": cmd_likelihood, "evaluate": cmd_evaluate,
            "classifier": cmd_classifier, "demo": cmd_demo, **CONDITIONAL_COMMANDS}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 usage error)."""
    from .errors import ScoreSDEError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and the message
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except (ScoreSDEError, UserError) as e:
        if _is_main_process() or type(e).__name__ == "ShardError":  # any rank may be the one that sees a dead peer
            print(f"scoresde: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # disk full, read-only or missing directories, a file where a folder belongs, ...
        if _is_main_process():
            print(f"scoresde: error: {_os_error_text(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("scoresde: interrupted", file=sys.stderr)
        return 130


def _os_error_text(e: OSError) -> str:
    """One line for an operating-system error: what failed, on which path."""
    what = e.strerror or str(e) or type(e).__name__
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return f"{where}: {what}" if where else what


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
