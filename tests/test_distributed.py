"""Two-process DDP training on CPU (gloo), launched with torch.distributed.run like torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.checkpoint import load_checkpoint
from scoresde.losses import DSMLoss
from scoresde.nets import build_network
from scoresde.training import (
    ShardedBatchSampler,
    TrainConfig,
    Trainer,
    build_score_model,
    build_sde,
    learning_rate,
    noise_seed,
    read_config,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _emulate(cfg: TrainConfig, data: torch.Tensor, world: int):
    """One process doing what ``world`` DDP ranks do together: same shards, same per-rank noise.

    DDP averages the ranks' gradients, so a step equals one step on the mean of the ranks' losses,
    each computed on that rank's shard with that rank's noise generator.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_network(cfg.net, cfg.event_shape, **cfg.net_kwargs)
    sde = build_sde(cfg.sde, **cfg.sde_kwargs)
    model = build_score_model(net, sde, cfg.parameterization)
    loss_fn = DSMLoss(sde, weighting=cfg.weighting, importance_sampling=cfg.importance_sampling, eps=cfg.loss_eps,
                      time_sampling=cfg.time_sampling)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    samplers = [ShardedBatchSampler(data.shape[0], cfg.batch_size, r, world, torch.Generator().manual_seed(cfg.seed)) for r in range(world)]
    noise = [torch.Generator().manual_seed(noise_seed(cfg.seed, r)) for r in range(world)]
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        per_rank = [loss_fn(model, data[s.next_indices()], generator=g) for s, g in zip(samplers, noise)]
        loss = sum(per_rank) / world
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(net.parameters()), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    return net, losses


def test_two_process_ddp_matches_the_single_process_emulation(tmp_path):
    x = (np.random.default_rng(0).normal(size=(96, 2)) * [1.0, 0.5]).astype(np.float32)
    np.save(tmp_path / "data.npy", x)
    out = tmp_path / "run"
    steps = 5
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "scoresde", "train", "--data", str(tmp_path / "data.npy"), "--steps", str(steps), "--batch-size", "16",
        "--lr", "1e-2", "--warmup", "2", "--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8",
        "--device", "cpu", "--out", str(out), "--log-every", "1", "--checkpoint-every", "3", "--sample-every", "-1", "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x 2 processes" in proc.stdout and proc.stdout.count("checkpoint:") == 1  # rank 0 alone reports

    cfg = read_config(out)
    state = load_checkpoint(out)
    assert state["step"] == steps and state["rng"]["world_size"] == 2 and len(state["rng"]["ranks"]) == 2
    # The two ranks drew different training noise.
    assert not torch.equal(state["rng"]["ranks"][0]["noise"], state["rng"]["ranks"][1]["noise"])

    net, losses = _emulate(cfg, torch.from_numpy(x), world=2)
    logged = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in logged] == list(range(1, steps + 1))
    np.testing.assert_allclose([l["loss"] for l in logged], losses, rtol=1e-5)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state["model"][k], v, rtol=1e-4, atol=1e-6)
    # A wrong emulation (one process, same global batch, one noise stream) does not match: the check can fail.
    _, single = _emulate(cfg, torch.from_numpy(x), world=1)
    assert not np.allclose(single, losses, rtol=1e-3)

    # The 2-process checkpoint resumes in one process: the data order continues, the noise is re-seeded.
    res = Trainer(cfg.replace(steps=steps + 2, out=str(out)), resume=True).train()
    assert res.step == steps + 2 and len(res.losses) == 2
