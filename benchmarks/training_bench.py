"""Training benchmarks: throughput overhead, quality for a fixed budget, MNIST bits/dim (GPU).

* :func:`training_throughput`: examples/s of :class:`scoresde.training.Trainer` against a bare
  forward+backward loop of the same network on the same batch size (``overhead_ratio`` =
  bare / trainer; 1 means no overhead). The trainer's step also draws times and noise, runs
  AdamW, clips gradients, updates the EMA and reads the loss back; ``bare_step_examples_per_s``
  (forward + backward + AdamW) separates the optimizer's share.
* :func:`training_quality`: train the demo's MLP on the 2-D ``gmm`` mixture for a fixed number of
  steps and report the test NLL (exact trace), the true entropy and their paired gap (the KL).
* :func:`mnist_bpd`: train the default U-Net on MNIST for a fixed number of steps and report
  test bits/dim (Hutchinson trace); meant for a GPU.

Run ``python benchmarks/training_bench.py [--full] [--device cuda] [--mnist-steps N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from scoresde import bits_per_dim, log_likelihood
from scoresde.checkpoint import load_model
from scoresde.config import TrainConfig
from scoresde.data import Dataset, get_dataset, to_levels, toy_gmm
from scoresde.metrics import mean_and_stderr
from scoresde.nets import build_network
from scoresde.training import Trainer
from scoresde.training.demo import demo_config

from common import synchronize


def _bare_rate(net: torch.nn.Module, batch: int, event, steps: int, device: torch.device, optimizer: bool) -> float:
    """Examples/s of ``net(x, t)`` forward + backward (+ AdamW) on fixed inputs."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, *event, generator=g, device=device)
    t = torch.rand(batch, generator=g, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True) if optimizer else None

    def step() -> None:
        out = net(x, t)
        loss = out.square().mean()
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if opt is not None:
            opt.step()

    for _ in range(10):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def training_throughput(device: str = "cpu", quick: bool = True) -> Dict[str, Any]:
    """Trainer throughput against a bare forward+backward loop of the same network.

    CPU: the default MLP (hidden 256, depth 3) on 2-D data, batch 256. CUDA: the default U-Net on
    28x28 images, batch 128.

    Returns:
        ``{examples_per_s, bare_examples_per_s, bare_step_examples_per_s, overhead_ratio, steps,
        batch_size, network, device}``.
    """
    dev = torch.device(device)
    steps = 100 if quick else 500
    if dev.type == "cuda":
        event, batch, kind = (1, 28, 28), 128, "unet"
        data = torch.rand(4096, *event) * 2 - 1
    else:
        event, batch, kind = (2,), 256, "mlp"
        data = get_dataset("moons", n=20_000).data
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data="bench", net=kind, steps=steps, batch_size=batch, out=tmp, device=device,
                          sample_every=-1, checkpoint_every=steps, log_every=max(steps // 5, 1), warmup=10)
        trainer = Trainer(cfg, dataset=Dataset("bench", data), progress=False)
        # Warm up the trainer's kernels, then time a separate run of `steps` steps.
        res = trainer.train()
        cfg2 = cfg.replace(steps=2 * steps)
        trainer = Trainer(cfg2, dataset=Dataset("bench", data), progress=False, resume=True)
        res = trainer.train()
        trainer_rate = res.examples_per_s
    torch.manual_seed(0)
    net = build_network(kind, event).to(dev)
    bare = _bare_rate(net, batch, event, steps, dev, optimizer=False)
    bare_step = _bare_rate(net, batch, event, steps, dev, optimizer=True)
    return {
        "device": device, "network": kind, "batch_size": batch, "steps": steps,
        "examples_per_s": trainer_rate, "bare_examples_per_s": bare, "bare_step_examples_per_s": bare_step,
        "overhead_ratio": bare / trainer_rate,
    }


def training_quality(device: str = "cpu", quick: bool = True, seed: int = 0) -> Dict[str, Any]:
    """Test NLL on the ``gmm`` mixture after a fixed budget, against its true entropy.

    The demo's configuration (the vector defaults of ``scoresde train``: MLP hidden 128 depth 2, batch
    1024, VP SDE, likelihood weighting with importance-sampled stratified times, cosine learning rate)
    for 2000 (quick) or 4000 steps; NLL with the exact trace on 300 / 1000 held-out points.

    Returns:
        ``{steps, nll, nll_stderr, entropy, entropy_stderr, gap, gap_stderr, train_seconds}`` with
        ``gap`` the paired estimate of ``KL(p || q) = E[log p(x) - log q(x)]`` (nats).
    """
    steps = 2000 if quick else 4000
    n_test = 300 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(Path(tmp), steps, seed, device=device)
        t0 = time.perf_counter()
        Trainer(cfg, progress=False).train()
        train_seconds = time.perf_counter() - t0
        sde, score, _ = load_model(tmp, device=device)
    exact = toy_gmm(torch.float64)
    x = get_dataset("gmm", split="test", n=n_test, generator=torch.Generator().manual_seed(seed + 1)).data.double()
    lik = log_likelihood(sde, score, x.to(device), trace="exact", score_dtype=torch.float32)
    log_q = lik.log_prob.cpu()
    nll, nll_se = mean_and_stderr(-log_q)
    entropy, entropy_se = mean_and_stderr(-exact.log_prob(exact.sample(200_000, generator=torch.Generator().manual_seed(seed + 4))))
    gap, gap_se = mean_and_stderr(exact.log_prob(x) - log_q)
    return {"steps": steps, "nll": nll, "nll_stderr": nll_se, "entropy": entropy, "entropy_stderr": entropy_se,
            "gap": gap, "gap_stderr": gap_se, "train_seconds": train_seconds, "nfe": lik.nfe}


def mnist_bpd(
    device: str = "cuda",
    steps: int = 20_000,
    data_dir: Optional[str] = None,
    n_eval: int = 1000,
    batch_size: int = 128,
    precision: str = "bf16",
    seed: int = 0,
    out: Optional[str] = None,
) -> Dict[str, Any]:
    """MNIST test bits/dim of the default U-Net after ``steps`` training steps.

    Training: VP SDE, std^2 weighting, the default U-Net, AdamW 2e-4 with warm-up, EMA 0.9999;
    bits/dim on the first ``n_eval`` test images with uniform dequantization into bins centred on
    the grey levels and the Hutchinson trace (one Rademacher probe), rtol = atol = 1e-5.

    Returns:
        ``{steps, bits_per_dim, bits_per_dim_stderr, n_eval, train_seconds, eval_seconds, examples_per_s}``.
    """
    from scoresde.data import dequantization_range

    data_dir = data_dir or os.environ.get("SCORESDE_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = out or tmp
        cfg = TrainConfig(data="mnist", data_dir=data_dir, steps=steps, batch_size=batch_size, device=device,
                          precision=precision, seed=seed, out=run_dir, sample_every=-1,
                          checkpoint_every=max(steps // 4, 1))
        res = Trainer(cfg, progress=False, resume=out is not None).train()
        sde, score, c = load_model(run_dir, device=device)
    test = get_dataset("mnist", data_dir=data_dir, split="test", n=n_eval)
    levels, rng = test.discrete_levels, tuple(test.data_range)
    gen = torch.Generator(device=device).manual_seed(seed)
    vals, t0 = [], time.perf_counter()
    for i in range(0, n_eval, 250):
        xb = to_levels(test.data[i : i + 250], levels, rng).to(device)
        r = bits_per_dim(sde, score, xb, levels=levels, data_range=dequantization_range(levels, rng), generator=gen,
                         trace="hutchinson", rtol=1e-5, atol=1e-5)
        vals.append(r.bits_per_dim.cpu())
    bpd, se = mean_and_stderr(torch.cat(vals))
    return {"steps": steps, "bits_per_dim": bpd, "bits_per_dim_stderr": se, "n_eval": n_eval,
            "train_seconds": res.seconds, "eval_seconds": time.perf_counter() - t0, "examples_per_s": res.examples_per_s}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--full", action="store_true", help="longer runs")
    p.add_argument("--mnist-steps", type=int, default=20_000, help="MNIST training steps (CUDA only)")
    p.add_argument("--mnist-eval", type=int, default=1000, help="MNIST test images for bits/dim")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    quick = not args.full
    if args.device == "cpu":
        torch.set_num_threads(1)  # tiny CPU kernels: one thread, reproducible and free of oversubscription
    print(json.dumps({"training_throughput": training_throughput(args.device, quick)}), flush=True)
    print(json.dumps({"training_quality": training_quality(args.device, quick)}), flush=True)
    if torch.device(args.device).type == "cuda":
        print(json.dumps({"mnist_bpd": mnist_bpd(args.device, args.mnist_steps, args.data_dir, args.mnist_eval)}), flush=True)
    else:
        print(json.dumps({"mnist_bpd": "skipped: needs a CUDA device"}), flush=True)


if __name__ == "__main__":
    main()
