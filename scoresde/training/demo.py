"""The end-to-end demo: train on a 2-D toy set, sample with three solvers, measure the test NLL.

``scoresde demo`` runs :func:`run_demo`. On the ``"gmm"`` toy set (8 Gaussians with a closed-form
density, :func:`scoresde.data.toy_gmm`) the test NLL is compared with the true entropy, and
samples are scored by their mean true log-density as well as by the sliced Wasserstein distance.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, List, Optional

import torch

from ..checkpoint import load_model
from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..likelihood import log_likelihood
from ..metrics import mean_and_stderr, sliced_wasserstein
from ..plotting import save_demo_figure
from ..solvers import solve
from .trainer import Trainer

#: name -> (solver, steps, options) for the full and the quick demo.
DEMO_SOLVERS = {
    "euler_maruyama": ("euler_maruyama", 500, {}),
    "pc": ("pc", 250, {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
    "ode": ("ode", None, {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4}),  # adaptive: picks its own steps
}
QUICK_STEPS = {"euler_maruyama": 200, "pc": 100, "ode": None}


@dataclass
class DemoResult:
    """What :func:`run_demo` returns.

    Attributes:
        rows: one dict per solver: ``solver``, ``nfe``, ``seconds``, ``sliced_w2`` and, for gmm,
            ``mean_log_p`` (mean true log-density of the samples, nats; ``-entropy`` is ideal).
        nll: mean test negative log-likelihood (nats, exact trace) and ``nll_stderr``.
        entropy: the true entropy (nats) for gmm, else ``None``; ``entropy_stderr`` its Monte-Carlo error.
        sw_floor: sliced W2 between two independent data samples of the same size (the noise floor,
            averaged over 5 pairs).
        figure: path of the PNG.
        train_seconds: training time.
    """

    rows: List[Dict[str, Any]]
    nll: float
    nll_stderr: float
    entropy: Optional[float]
    entropy_stderr: Optional[float]
    sw_floor: float
    figure: Path
    train_seconds: float
    steps: int
    extras: Dict[str, Any] = field(default_factory=dict)


def demo_config(out: Path, steps: Optional[int], seed: int, data: str = "gmm", device: str = "cpu",
                lr_schedule: Optional[str] = None) -> TrainConfig:
    """The demo's training configuration: the defaults of ``scoresde train`` for vector data.

    The network, batch, learning rate, EMA, weighting and time sampling are left automatic, so the demo
    shows what ``scoresde train --data gmm`` gives (see the training guide, "Toy data"); only the
    number of training points (50,000), the steps (``None``: the default), the output and, for the
    quick demo, a constant learning rate (``lr_schedule``; ``None``: the default cosine decay) are set.
    """
    return TrainConfig(
        data=data, n_train=50_000, sde="vp", steps=steps, seed=seed, device=device, lr_schedule=lr_schedule,
        out=str(out), checkpoint_every=steps, sample_every=-1, log_every=100,
    )


def run_demo(
    out: str = "demo",
    steps: Optional[int] = None,
    seed: int = 0,
    quick: bool = False,
    data: str = "gmm",
    device: str = "cpu",
    progress: Optional[bool] = None,
    stream: Optional[IO[str]] = None,
    threads: Optional[int] = None,
) -> DemoResult:
    """Train, sample, evaluate, draw and print; see the module docstring.

    Args:
        out: output directory (``out/model`` holds the run, ``out/demo.png`` the figure).
        steps: training steps (default: the default of ``scoresde train`` for vector data, or 2000 with
            ``quick``; the modes of ``gmm`` separate after about 1500 steps, before that the model is
            a blurred ring).
        seed: seed of everything.
        quick: a smaller, faster version (fewer steps, samples and test points).
        data: the toy set (``"gmm"`` has a known entropy).
        device: where to train and sample.
        progress: draw the training progress bar (``None``: when stderr is a terminal).
        stream: where to print the table (stdout by default).
        threads: torch CPU threads during the demo (default 1 on CPU: its tiny matrix products
            gain nothing from more threads, and on a busy machine a second thread that waits for
            a busy core slows every operation down several times). Restored afterwards.

    Returns:
        A :class:`DemoResult`.
    """
    before = torch.get_num_threads()
    if threads is not None or torch.device(device).type == "cpu":
        torch.set_num_threads(threads or 1)
    try:
        return _run_demo(out, steps, seed, quick, data, device, progress, stream)
    finally:
        torch.set_num_threads(before)


def _run_demo(out, steps, seed, quick, data, device, progress, stream) -> DemoResult:
    from ..data import get_dataset, toy_gmm

    stream = stream if stream is not None else sys.stdout
    out_dir = Path(out)
    steps = steps or (2000 if quick else None)
    n_samples = 1000 if quick else 2000
    n_test = 300 if quick else 1000

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    # 1. Train (continuing a previous demo run in the same directory if it exists).
    say(f"training a score network on '{data}' for {steps or 'the default number of'} steps ...")
    t0 = time.perf_counter()
    # --quick's 2,000 steps are too few for the default cosine decay: measured in the training benchmark,
    # KL 0.22 nats with it against 0.10 with a constant rate (training guide, "Toy data")
    cfg = demo_config(out_dir / "model", steps, seed, data, device, lr_schedule="constant" if quick else None)
    try:
        trainer = Trainer(cfg, resume=True, progress=progress)
    except (CheckpointError, ConfigError) as e:
        raise CheckpointError(
            f"{e}. The demo continues an earlier demo run in {out_dir / 'model'} only when it is compatible; "
            "use another --out or remove that directory"
        ) from None
    result = trainer.train()
    steps = trainer.config.steps
    train_seconds = time.perf_counter() - t0
    tail = result.losses[-100:] or [float("nan")]
    say(f"  done in {train_seconds:.1f} s; final loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)} steps)")
    sde, score, cfg = load_model(out_dir / "model", device=device)

    test = get_dataset(data, split="test", n=max(n_samples, n_test), generator=torch.Generator().manual_seed(seed + 1)).data
    exact = toy_gmm(torch.float64) if data == "gmm" else None

    def proj_gen() -> torch.Generator:  # the same projection directions for every row of the table
        return torch.Generator().manual_seed(seed + 3)

    # Noise floor of the sliced W2 at this sample size: mean over independent pairs of data sets.
    pairs = [get_dataset(data, split="train", n=2 * n_samples, generator=torch.Generator().manual_seed(seed + 10 + i)).data for i in range(5)]
    sw_floor = sum(sliced_wasserstein(d[:n_samples], d[n_samples:], generator=proj_gen()) for d in pairs) / len(pairs)

    # 2. Sample with three solvers.
    rows: List[Dict[str, Any]] = []
    samples: Dict[str, torch.Tensor] = {}
    for name, (solver, full_steps, options) in DEMO_SOLVERS.items():
        n_steps = QUICK_STEPS[name] if quick else full_steps
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        res = solve(sde, score, (n_samples, 2), solver=solver, steps=n_steps, generator=gen, device=device, **options)
        seconds = time.perf_counter() - t0
        x = res.samples.cpu()
        samples[name] = x
        row = {"solver": name, "steps": n_steps, "nfe": res.nfe, "seconds": seconds,
               "sliced_w2": sliced_wasserstein(x, test[:n_samples], generator=proj_gen())}
        if exact is not None:
            row["mean_log_p"] = float(exact.log_prob(x.double()).mean())
        rows.append(row)

    # 3. Test NLL with the exact trace of the probability-flow ODE (and the true entropy for gmm).
    say(f"computing the test NLL of {n_test} held-out points (exact trace) ...")
    x_test = test[:n_test].to(device)
    lik = log_likelihood(sde, score, x_test.double(), trace="exact", rtol=1e-5, atol=1e-5, score_dtype=torch.float32)
    log_q = lik.log_prob.cpu()
    nll, nll_se = mean_and_stderr(-log_q)
    entropy = entropy_se = gap = gap_se = None
    if exact is not None:
        big = exact.sample(200_000, generator=torch.Generator().manual_seed(seed + 4))
        entropy, entropy_se = mean_and_stderr(-exact.log_prob(big))
        # KL(p || q) estimated on the same points: mean of log p(x) - log q(x) (a paired difference).
        gap, gap_se = mean_and_stderr(exact.log_prob(x_test.double().cpu()) - log_q)

    # 4. Trajectories of a few particles under the reverse SDE and the probability-flow ODE.
    p = 12
    paths = {}
    for label, solver, opts in (("reverse SDE (Euler-Maruyama)", "euler_maruyama", {}),
                                ("probability-flow ODE (RK4)", "ode", {"method": "rk4"})):
        r = solve(sde, score, (p, 2), solver=solver, steps=200, generator=torch.Generator(device=device).manual_seed(seed),
                  device=device, record_trajectory=True, **opts)
        paths[label] = (r.times, r.trajectory)
    figure = save_demo_figure(test[:n_samples], samples, paths, out_dir / "demo.png",
                              title=f"scoresde demo: VP SDE on '{data}', {steps} training steps")

    # 5. The table.
    _print_table(say, rows, exact is not None, sw_floor, entropy, entropy_se, gap, gap_se, nll, nll_se, n_test, lik.nfe)
    say(f"figure: {figure}")
    return DemoResult(rows=rows, nll=nll, nll_stderr=nll_se, entropy=entropy, entropy_stderr=entropy_se, sw_floor=sw_floor,
                      figure=figure, train_seconds=train_seconds, steps=steps,
                      extras={"nll_nfe": lik.nfe, "kl": gap, "kl_stderr": gap_se})


def _print_table(say, rows, has_exact, sw_floor, entropy, entropy_se, gap, gap_se, nll, nll_se, n_test, nll_nfe) -> None:
    """The demo's table of solvers (steps, NFE, seconds, sliced W2, E log p) and its likelihood lines."""
    say("")
    header = f"{'solver':<16}{'steps':>7}{'NFE':>7}{'seconds':>9}{'sliced W2':>11}"
    if has_exact:
        header += f"{'E log p(x)':>12}"
    say(header)
    say("-" * len(header))
    for r in rows:
        line = f"{r['solver']:<16}{r['steps'] or 'adapt':>7}{r['nfe']:>7}{r['seconds']:>9.2f}{r['sliced_w2']:>11.4f}"
        if has_exact:
            line += f"{r['mean_log_p']:>12.3f}"
        say(line)
    line = f"{'(data vs data)':<16}{'':>7}{'':>7}{'':>9}{sw_floor:>11.4f}"
    if has_exact:
        line += f"{-entropy:>12.3f}"
    say(line)
    say("")
    say(f"test NLL ({n_test} points, exact trace, NFE {nll_nfe}): {nll:.4f} +- {nll_se:.4f} nats")
    if entropy is not None:
        say(f"true entropy of the data:                      {entropy:.4f} +- {entropy_se:.4f} nats")
        say(f"KL(data || model) = E[log p - log q] (paired): {gap:.4f} +- {gap_se:.4f} nats")
