"""Hardening, class 5: clear errors instead of tracebacks.

On the command line every user-caused failure is one line ``scoresde: error: ...`` with a non-zero
exit; in Python it is a precise exception (a :class:`~scoresde.errors.ScoreSDEError` subclass).
"""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch
from cli_runner import run

import scoresde
from scoresde.cli import main
from scoresde.config import ConfigError
from scoresde.errors import OptionError, OutputError, ScoreSDEError
from scoresde.training import TrainConfig

TINY = ["--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8"]


def one_line_error(code, err, match, expected_code=1):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("scoresde") and "error:" in lines[-1], err
    assert match in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    code = main(["train", "--data", "gmm", "--n-train", "256", "--steps", "4", "--batch-size", "32", *TINY,
                 "--out", str(d / "run"), "--sample-every", "-1", "--quiet", "--device", "cpu"])
    assert code == 0
    np.save(d / "test.npy", np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32))
    return d


# ---------------------------------------------------------------------- operating-system errors
def test_out_pointing_at_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["train", "--data", "moons", "--steps", "1", *TINY, "--out", tmp_path / "afile", "--quiet"], capsys)
    one_line_error(code, err, "is a file")
    with pytest.raises(OutputError, match="is a file"):
        scoresde.training.Trainer(TrainConfig(data="moons", n_train=64, steps=1, out=str(tmp_path / "afile"), device="cpu"))


def test_sample_output_under_a_file(trained, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["sample", "--checkpoint", trained / "run", "--num", "4", "--out", tmp_path / "afile" / "s.npy"], capsys)
    one_line_error(code, err, "afile")


def test_read_only_output(trained, tmp_path, capsys, monkeypatch):
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "s.npy"))

    monkeypatch.setattr(np, "save", read_only)
    code, _, err = run(["sample", "--checkpoint", trained / "run", "--num", "4", "--out", tmp_path / "s.npy"], capsys)
    one_line_error(code, err, "Read-only file system")


def test_disk_full_while_checkpointing(tmp_path, capsys, monkeypatch):
    args = ["train", "--data", "moons", "--n-train", "256", "--batch-size", "32", *TINY, "--sample-every", "-1",
            "--out", tmp_path / "r", "--quiet"]
    assert run([*args, "--steps", "2"], capsys)[0] == 0
    before = (tmp_path / "r" / "latest.pt").read_bytes()

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    code, _, err = run(["train", "--out", tmp_path / "r", "--resume", "--steps", "4", "--quiet"], capsys)
    one_line_error(code, err, "No space left on device")
    assert "previous checkpoint" in err
    assert (tmp_path / "r" / "latest.pt").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "r").glob(".latest.pt.tmp*")) == []


# ---------------------------------------------------------------------- numbers out of range
def test_huge_learning_rate(tmp_path, capsys):
    code, _, err = run(["train", "--data", "moons", "--steps", "2", *TINY, "--lr", "1e300", "--out", tmp_path / "r", "--quiet"],
                       capsys)
    one_line_error(code, err, "lr must be")
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=1e300).validate()
    with pytest.raises(ConfigError, match="overflows"):
        TrainConfig(lr=1e30, weight_decay=1e10).validate()


@pytest.mark.parametrize("command", [["train"], ["sample"], ["likelihood", "--data", "gmm"], ["demo"]])
def test_seed_beyond_63_bits(command, capsys):
    code, _, err = run([*command, "--seed", str(2**63)], capsys)
    assert code == 2 and "Traceback" not in err and "seed" in err


def test_seed_beyond_63_bits_in_python():
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig(seed=2**63).validate()
    TrainConfig(seed=2**63 - 1).validate()


# ---------------------------------------------------------------------- likelihood command line
def test_likelihood_unknown_method(trained, capsys):
    code, _, err = run(["likelihood", "--checkpoint", trained / "run", "--data", trained / "test.npy", "--method", "rk99"], capsys)
    one_line_error(code, err, "unknown ODE method 'rk99'")


def test_likelihood_max_steps_and_steps(trained, capsys):
    base = ["likelihood", "--checkpoint", trained / "run", "--data", trained / "test.npy", "--json"]
    code, _, err = run([*base, "--max-steps", "2"], capsys)
    one_line_error(code, err, "max_steps=2")
    nfe = {}
    for steps in (4, 8):
        code, out, err = run([*base, "--method", "rk4", "--steps", str(steps)], capsys)
        assert code == 0, err
        nfe[steps] = json.loads(out.strip().splitlines()[-1])["nfe"]
    assert nfe[8] == 2 * nfe[4] and nfe[4] >= 4 * 4  # four evaluations per rk4 step
    code, _, err = run([*base, "--steps", "10"], capsys)  # dopri5 chooses its own steps
    one_line_error(code, err, "--steps applies to fixed-step methods")


def test_likelihood_option_errors_are_scoresde_errors():
    sde, x, score = scoresde.VPSDE(), torch.zeros(2, 2), lambda x, t: -x
    for kwargs in (dict(method="rk99"), dict(trace="nope"), dict(n_probes=1.5, trace="hutchinson"), dict(rtol=float("nan")),
                   dict(max_steps=0), dict(eps=float("nan"))):
        with pytest.raises(ScoreSDEError):
            scoresde.log_likelihood(sde, score, x, **kwargs)
    with pytest.raises(OptionError):
        scoresde.log_likelihood(sde, score, x, method="rk99")


# ---------------------------------------------------------------------- Python arguments
@pytest.mark.parametrize("generator", [0, 42, "seed", torch.zeros(1)])
def test_a_seed_is_not_a_generator(generator):
    sde, x, score = scoresde.VPSDE(), torch.zeros(2, 2), lambda x, t: -x
    with pytest.raises(OptionError, match="torch.Generator"):
        sde.prior_sample((2, 2), generator=generator)
    with pytest.raises(OptionError, match="torch.Generator"):
        scoresde.log_likelihood(sde, score, x, trace="hutchinson", generator=generator)
    with pytest.raises(OptionError, match="torch.Generator"):
        scoresde.bits_per_dim(sde, score, torch.zeros(2, 2, dtype=torch.long), generator=generator)


def test_a_string_is_not_a_dtype():
    with pytest.raises(OptionError, match="dtype"):
        scoresde.VPSDE().prior_sample((2, 2), dtype="float32")


def test_threads_are_bounded(capsys):
    code, _, err = run(["sample", "--threads", "100000000"], capsys)
    assert code == 2 and "threads" in err and "Traceback" not in err


def test_full_disk_leaves_no_truncated_samples(trained, tmp_path, capsys, monkeypatch):
    real_save = np.save

    def disk_full(f, arr, *a, **k):
        real_save(f, arr[:1])  # part of the data reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    code, _, err = run(["sample", "--checkpoint", trained / "run", "--num", "4", "--out", tmp_path / "s.npy"], capsys)
    one_line_error(code, err, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # neither a truncated s.npy nor a temporary file
