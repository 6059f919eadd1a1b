"""A 2-D toy problem end to end: train a score network, sample it, draw SDE and ODE trajectories.

    python examples/toy_2d.py --out docs/figures/toy_2d.png   # the figure in the docs: about a minute on 2 CPU cores
    python examples/toy_2d.py --quick --out toy_2d.png         # a smoke run of a few seconds (poor samples)

What it does:

1. draws training points from a 2-D toy set (``--data``, default ``swiss_roll``);
2. trains a small residual MLP with denoising score matching on the VP SDE: a plain PyTorch loop
   around :class:`scoresde.losses.DSMLoss`, with an exponential moving average of the weights;
3. samples with the reverse-time SDE (Euler–Maruyama) and the probability-flow ODE (dopri5);
4. draws a 2x3 figure: data, both sets of samples (with their NFE and sliced Wasserstein distance to
   held-out data), the trajectories of ten particles from the same starting points under each
   process (first coordinate against time), and the training loss.

It runs on one CPU thread by default (``--threads``): a network this small gains nothing from a second
thread, and on a busy machine torch's default of one thread per core makes every step many times slower.
Training shows a progress line (step, loss, time left) and each sampling stage prints a line when it
starts and its time when it ends.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

import scoresde
from scoresde.data import TOY_DATASETS, toy_data
from scoresde.losses import DSMLoss
from scoresde.metrics import sliced_wasserstein
from scoresde.nets import MLP
from scoresde.progress import Progress
from scoresde.training import EMA


def train(data: torch.Tensor, sde: scoresde.SDE, steps: int, batch_size: int, hidden: int, seed: int,
          progress: bool = True):
    """Train an ``eps``-predicting MLP with the DSM loss; returns the EMA score model and the losses.

    ``progress`` shows the step, the loss and the time left on stderr (a bar on a terminal, a line every
    30 s otherwise).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # network initialisation
    net = MLP(dim=2, hidden=hidden, depth=3)
    model = scoresde.NetworkScore(net, sde, parameterization="eps")
    ema = EMA(net, decay=0.999)
    loss_fn = DSMLoss(sde, weighting="std2")  # || eps_hat - eps ||^2, the DDPM loss
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    losses: List[float] = []
    with Progress(steps, "train", "step", enabled=progress) as bar:
        for _ in range(steps):
            idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
            loss = loss_fn(model, data[idx], generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.update(net)
            losses.append(loss.item())
            bar.update(1, loss=losses[-1])
    return scoresde.NetworkScore(ema.module, sde, parameterization="eps"), losses


def _scatter(ax, x: torch.Tensor, color: str, size: float = 2.0) -> None:
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=size, c=color, alpha=0.5, linewidths=0)


def _paths(ax, times: torch.Tensor, trajectory: torch.Tensor) -> None:
    """First coordinate of each particle against time.

    ``times`` is ``[steps + 1]``, ``trajectory`` is ``[steps + 1, P, 2]``.
    """
    tr = trajectory[:, :, 0].numpy()
    t = times.numpy()
    for p in range(tr.shape[1]):
        ax.plot(t, tr[:, p], lw=0.8, alpha=0.85, color=f"C{p % 10}")
    ax.scatter(t[-1] + 0 * tr[-1], tr[-1], s=12, c="k", zorder=3, label="end points, t = eps")
    ax.set_xlim(float(t[0]) + 0.02, -0.02)  # time runs backwards, from T on the left to eps on the right
    ax.set(xlabel="t (sampling runs from T = 1 to eps)", ylabel="first coordinate x[0]")
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="toy_2d.png", help="PNG to write (default: toy_2d.png)")
    p.add_argument("--data", default="swiss_roll", choices=TOY_DATASETS, help="toy set (default: swiss_roll)")
    p.add_argument("--steps", type=int, help="training steps (default: 4000; 150 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default: 1, the fastest for this small network)")
    p.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)

    steps = args.steps or (150 if args.quick else 4000)
    n_samples = 500 if args.quick else 3000
    sde_steps = 100 if args.quick else 500
    hidden = 64 if args.quick else 128

    sde = scoresde.VPSDE()
    data = toy_data(args.data, 20_000, generator=torch.Generator().manual_seed(args.seed))
    test = toy_data(args.data, n_samples, generator=torch.Generator().manual_seed(args.seed + 1))

    print(f"training a residual MLP (width {hidden}) on {args.data} for {steps} steps on {args.threads} thread(s)...",
          flush=True)
    t0 = time.perf_counter()
    score, losses = train(data, sde, steps, batch_size=256, hidden=hidden, seed=args.seed)
    tail = losses[-100:]
    print(f"trained {steps} steps in {time.perf_counter() - t0:.1f} s; final loss {sum(tail) / len(tail):.4f}",
          flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    print(f"sampling {n_samples} points with the reverse SDE (Euler-Maruyama, {sde_steps} steps)...", flush=True)
    t0 = time.perf_counter()
    em = scoresde.solve(sde, score, (n_samples, 2), solver="euler_maruyama", steps=sde_steps, generator=gen)
    print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"sampling {n_samples} points with the probability-flow ODE (adaptive dopri5)...", flush=True)
    t0 = time.perf_counter()
    ode = scoresde.solve(sde, score, (n_samples, 2), solver="ode", rtol=1e-4, atol=1e-4, generator=gen)
    print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
    proj = lambda: torch.Generator().manual_seed(123)  # noqa: E731  same projections for both
    sw_em = sliced_wasserstein(em.samples, test, generator=proj())
    sw_ode = sliced_wasserstein(ode.samples, test, generator=proj())
    print(f"reverse SDE (Euler-Maruyama): NFE {em.nfe}, sliced W2 {sw_em:.3f}")
    print(f"probability-flow ODE (dopri5): NFE {ode.nfe}, sliced W2 {sw_ode:.3f}")

    # a few particles, their states recorded on the solver's time grid
    print("drawing the trajectories of 10 particles (SDE and ODE)...", flush=True)
    x_T = sde.prior_sample((10, 2), generator=torch.Generator().manual_seed(args.seed + 2))
    sde_paths = scoresde.solve(sde, score, x_T.shape, solver="euler_maruyama", steps=200, x_init=x_T,
                               generator=gen, record_trajectory=True)
    ode_paths = scoresde.solve(sde, score, x_T.shape, solver="ode", method="rk4", steps=100, x_init=x_T,
                               record_trajectory=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    _scatter(axes[0, 0], test, "0.3")
    axes[0, 0].set_title(f"data: {args.data} ({n_samples} held-out points)")
    _scatter(axes[0, 1], em.samples, "tab:blue")
    axes[0, 1].set_title(f"reverse SDE, Euler–Maruyama\nNFE {em.nfe}, sliced W2 {sw_em:.3f}")
    _scatter(axes[0, 2], ode.samples, "tab:green")
    axes[0, 2].set_title(f"probability-flow ODE, dopri5\nNFE {ode.nfe}, sliced W2 {sw_ode:.3f}")
    _paths(axes[1, 0], sde_paths.times, sde_paths.trajectory)
    axes[1, 0].set_title("reverse-SDE trajectories (10 particles)")
    _paths(axes[1, 1], ode_paths.times, ode_paths.trajectory)
    axes[1, 1].set_title("probability-flow ODE trajectories (same starts)")
    lim = 1.15 * float(test.abs().max())
    for ax in axes[1, :2]:
        ax.set_ylim(-max(lim, 1.05 * float(x_T.abs().max())), max(lim, 1.05 * float(x_T.abs().max())))
    for ax in axes[0]:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    ax = axes[1, 2]
    w = max(1, len(losses) // 50)
    smooth = torch.tensor(losses).unfold(0, w, w).mean(1) if len(losses) >= w else torch.tensor(losses)
    ax.plot(torch.arange(len(smooth)) * w + w, smooth.numpy())
    ax.set(xlabel="training step", ylabel="DSM loss (per dimension)", title=f"training loss, {steps} steps")
    ax.grid(alpha=0.3)
    fig.suptitle(f"VP SDE on '{args.data}': samples and trajectories")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
