"""Sharded sampling and likelihood: chunks, resumption, dead and slow ranks, torchrun.

The torchrun test launches 2 gloo processes on CPU once and runs the Python API and the command line
in them; everything it writes must equal the single-process run bit for bit.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde
from scoresde.cli import build_parser, main
from scoresde.exact import GaussianMixture
from scoresde.shard import ShardError, ShardInfo, log_likelihood_points, run_chunks, sample_seeds

#: These tests claim bit-for-bit results (CI also runs them on other CPU instruction sets).
pytestmark = pytest.mark.bitwise

REPO = Path(__file__).resolve().parents[1]
SDE = scoresde.VPSDE()
GM = GaussianMixture(torch.tensor([0.45, 0.45, 0.1]),
                     torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.3, 0.0]], dtype=torch.float64),
                     torch.tensor([0.5, 0.5, 0.01], dtype=torch.float64))
TINY_NET = ["--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8"]


def points():
    """16 points; 4..7 (chunk 1 at chunk size 4, owned by rank 1 of 2) come from the narrow component: slow to integrate."""
    x, k = GM.sample(400, generator=torch.Generator().manual_seed(0), return_labels=True)
    easy, hard = x[k != 2], x[k == 2]
    return torch.cat([easy[:4], hard[:4], easy[4:12]])


# ---------------------------------------------------------------------- chunks and resumption
def test_chunks_are_written_once_and_a_rerun_resumes(tmp_path):
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        return {"v": torch.arange(start, stop, dtype=torch.float64)}

    out = run_chunks(compute, 10, tmp_path, chunk_size=4, job={"a": 1}, info=ShardInfo())
    assert torch.equal(out["v"], torch.arange(10, dtype=torch.float64)) and calls == [(0, 4), (4, 8), (8, 10)]
    (tmp_path / "chunk-000001.pt").unlink()  # as if killed before chunk 1 was written
    calls.clear()
    again = run_chunks(compute, 10, tmp_path, chunk_size=4, job={"a": 1}, info=ShardInfo())
    assert calls == [(4, 8)] and torch.equal(again["v"], out["v"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files behind
    with pytest.raises(ShardError, match="another job"):
        run_chunks(compute, 10, tmp_path, chunk_size=4, job={"a": 2}, info=ShardInfo())
    (tmp_path / "chunk-000002.pt").write_bytes(b"garbage")
    with pytest.raises(ShardError, match="delete it"):
        run_chunks(compute, 10, tmp_path, chunk_size=4, job={"a": 1}, info=ShardInfo())


def test_a_silent_rank_is_named_within_the_timeout(tmp_path):
    """Rank 0 of 2 with no rank 1 at all: it stops after `timeout` seconds and says which rank is missing."""
    t0 = time.monotonic()
    with pytest.raises(ShardError, match="rank 1 has not reported"):
        run_chunks(lambda a, b: {"v": torch.zeros(b - a)}, 8, tmp_path, chunk_size=4, timeout=1.0,
                   info=ShardInfo(rank=0, world_size=2))
    assert time.monotonic() - t0 < 30  # generous: the machine may be loaded; the point is that it ends


def test_a_slow_rank_that_keeps_reporting_is_waited_for(tmp_path):
    """Rank 1 takes three times the timeout but its heartbeat stays fresh: rank 0 waits and finishes."""
    def slow_rank_1():
        folder = Path(tmp_path)
        end = time.time() + 3.0
        while time.time() < end:
            (folder / "rank-1.alive").write_text(f"{time.time():.3f}")
            time.sleep(0.2)
        run_chunks(lambda a, b: {"v": torch.full((b - a,), 1.0)}, 8, folder, chunk_size=4, timeout=1.0,
                   info=ShardInfo(rank=1, world_size=2))

    th = threading.Thread(target=slow_rank_1)
    th.start()
    out = run_chunks(lambda a, b: {"v": torch.full((b - a,), 0.0)}, 8, tmp_path, chunk_size=4, timeout=1.0,
                     info=ShardInfo(rank=0, world_size=2))
    th.join()
    assert out["v"].tolist() == [0.0] * 4 + [1.0] * 4


# ---------------------------------------------------------------------- torchrun's own parser
def test_every_sample_and_likelihood_option_survives_torchruns_parser():
    """torchrun (Python 3.11) rejects or steals a script option that is a prefix of one of its own."""
    from torch.distributed.run import get_args_parser

    runner = get_args_parser()
    sub = build_parser()._subparsers._group_actions[0].choices
    for command in ("sample", "likelihood"):
        flags = [s for a in sub[command]._actions for s in a.option_strings if s.startswith("--")]
        for flag in flags:
            if flag == "--num":  # ambiguous with torchrun's --numa-binding: spelled --count under torchrun
                continue
            args = runner.parse_args(["--nproc_per_node=2", "-m", "scoresde", command, flag, "1"])
            assert args.training_script_args == [command, flag, "1"], flag
    with pytest.raises(SystemExit):  # the reason --count exists
        runner.parse_args(["--nproc_per_node=2", "-m", "scoresde", "sample", "--num", "1"])


# ---------------------------------------------------------------------- torchrun, 2 processes
SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    sys.path.insert(0, sys.argv[2])
    import tests.test_shard as T
    from scoresde.cli import main
    from scoresde.shard import log_likelihood_points, sample_seeds
    out, run = sys.argv[1], sys.argv[3]
    score = T.GM.score_fn(T.SDE)
    a = sample_seeds(T.SDE, score, range(20), (2,), out + "/a", chunk_size=4, solver="ode", rtol=1e-4, atol=1e-4)
    b = sample_seeds(T.SDE, score, range(20), (2,), out + "/b", chunk_size=4, solver="torchsde", steps=5)
    c = log_likelihood_points(T.SDE, score, T.points(), out + "/c", chunk_size=4, rtol=1e-6, atol=1e-6)
    codes = [main(["sample", "--checkpoint", run, "--solver", "euler_maruyama", "--steps", "5", "--seeds", "0-21",
                   "--batch-size", "4", "--out", out + "/cli.npy", "--device", "cpu"]),
             main(["likelihood", "--checkpoint", run, "--data", run + "/../test.npy", "--count", "12", "--batch-size", "4",
                   "--out", out + "/cli-ll.npy", "--device", "cpu", "--timeout", "120"])]
    if dist.get_rank() == 0:
        torch.save({"a": a, "b": b, "c": c, "codes": codes}, out + "/result.pt")
    dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("shardrun")
    assert main(["train", "--data", "gmm", "--n-train", "256", "--steps", "4", "--batch-size", "64", *TINY_NET,
                 "--out", str(d / "run"), "--sample-every", "-1", "--quiet", "--device", "cpu"]) == 0
    np.save(d / "test.npy", GM.sample(12, generator=torch.Generator().manual_seed(5)).float().numpy())
    return d


def _torchrun(script: Path, *args, timeout=240, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--monitor-interval=0.2",
           str(script), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def test_torchrun_two_processes_equal_the_single_process_run(tmp_path, tiny_run):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    proc = _torchrun(script, tmp_path, REPO, tiny_run / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "result.pt", weights_only=False)
    assert got["codes"] == [0, 0]
    score = GM.score_fn(SDE)
    one = ShardInfo()
    # the single-process runs: other chunk sizes too, since with seeds nothing depends on the chunk
    a = sample_seeds(SDE, score, range(20), (2,), tmp_path / "a1", chunk_size=7, info=one, solver="ode", rtol=1e-4, atol=1e-4)
    b = sample_seeds(SDE, score, range(20), (2,), tmp_path / "b1", chunk_size=4, info=one, solver="torchsde", steps=5)
    c = log_likelihood_points(SDE, score, points(), tmp_path / "c1", chunk_size=16, info=one, rtol=1e-6, atol=1e-6)
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b) and torch.equal(got["c"]["log_prob"], c["log_prob"])
    nfe = c["nfe"].double()
    assert nfe[4:8].mean() > nfe[[0, 1, 2, 3, 8, 9, 10, 11]].mean()  # rank 1's points took more steps, and it finished
    # the command line, single process, writes the same files. With the same chunk size they are equal bit for
    # bit even though a network's matmuls are not batch-invariant; with another chunk size they differ only by the
    # network's floating-point reassociation.
    run = tiny_run / "run"

    def cli(*argv):
        assert main([str(a) for a in argv]) == 0

    for bs, name in ((4, "cli1.npy"), (8, "cli2.npy")):
        cli("sample", "--checkpoint", run, "--solver", "euler_maruyama", "--steps", "5", "--seeds", "0-21",
            "--batch-size", bs, "--out", tmp_path / name, "--device", "cpu")
        cli("likelihood", "--checkpoint", run, "--data", tiny_run / "test.npy", "--count", "12", "--batch-size", bs,
            "--out", tmp_path / f"ll-{name}", "--device", "cpu")
    assert np.array_equal(np.load(tmp_path / "cli.npy"), np.load(tmp_path / "cli1.npy"))
    assert np.array_equal(np.load(tmp_path / "cli-ll.npy"), np.load(tmp_path / "ll-cli1.npy"))
    assert np.allclose(np.load(tmp_path / "cli.npy"), np.load(tmp_path / "cli2.npy"), rtol=1e-4, atol=1e-4)
    assert np.allclose(np.load(tmp_path / "cli-ll.npy"), np.load(tmp_path / "ll-cli2.npy"), rtol=1e-4, atol=1e-4)


STALL_SCRIPT = textwrap.dedent('''
    import os, signal, sys, time
    import torch
    sys.path.insert(0, sys.argv[2])
    from scoresde.shard import run_chunks
    rank = int(os.environ["RANK"])
    def compute(a, b):
        if rank == 1:
            os.kill(os.getpid(), signal.SIG%s)  # this rank stops (or dies) mid-job
        return {"v": torch.zeros(b - a)}
    run_chunks(compute, 8, sys.argv[1], chunk_size=2, timeout=4.0)
''')


@pytest.mark.slow
@pytest.mark.parametrize("how", ["STOP", "KILL"])
def test_a_stopped_or_killed_rank_makes_the_job_exit_with_a_message(tmp_path, how):
    script = tmp_path / "stall.py"
    script.write_text(STALL_SCRIPT % how)
    t0 = time.monotonic()
    proc = _torchrun(script, tmp_path / "shards", REPO, timeout=180)
    took = time.monotonic() - t0
    assert proc.returncode != 0
    if how == "STOP":  # torchrun does not notice a stopped process; rank 0's heartbeat check does
        assert "rank 1 has not reported" in proc.stderr, proc.stderr[-2000:]
    else:  # torchrun notices the dead process and ends the job, naming it
        assert "exitcode" in proc.stderr and "-9" in proc.stderr, proc.stderr[-2000:]
    assert took < 120, took  # generous: two interpreters start on a loaded machine; the stall timeout is 4 s
