"""Progress reports: a bar with rate and ETA on a terminal, periodic lines elsewhere, silence when quiet."""

from __future__ import annotations

import io

import pytest
import torch

import scoresde
from scoresde.evaluate import choose_trace, dataset_likelihood, draw_samples
from scoresde.progress import Progress, ScoreProgress, format_duration
from scoresde.training.logger import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_duration():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"


def test_terminal_bar_shows_rate_and_eta():
    out = Terminal()
    p = Progress(10, "train", "step", stream=out, min_interval=0)
    for _ in range(4):
        p.update(1, loss=0.5)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "train [" in last and "4/10 (40%)" in last and "ETA" in last and "loss 0.5" in last and "step/s" in last


def test_non_terminal_gets_whole_lines_at_the_interval_and_a_final_line():
    out = io.StringIO()
    p = Progress(100, "sample", "step", stream=out, log_interval=0)  # every update prints a line
    p.update(10)
    p.update(10)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue()
    assert lines[0].startswith("sample 10/100") and lines[-1].startswith("sample 20/100")
    # with a long interval only the final line appears
    out = io.StringIO()
    p = Progress(100, "sample", stream=out, log_interval=3600)
    for _ in range(50):
        p.update(1)
    p.close()
    assert out.getvalue().count("\n") == 1 and "50/100" in out.getvalue()


def test_quiet_prints_nothing():
    out = Terminal()
    p = Progress(10, stream=out, enabled=False)
    p.update(5)
    p.close()
    bar = ProgressBar(10, enabled=False, stream=out)
    bar.update(3, 0.1, 100.0)
    bar.close()
    assert out.getvalue() == ""


def test_training_bar_reports_eta_when_not_a_terminal():
    out = io.StringIO()
    bar = ProgressBar(10, 2, stream=out, log_interval=0)
    bar.update(4, 0.25, 1000.0)
    bar.close()
    assert "train 4/10" in out.getvalue() and "ETA" in out.getvalue() and "loss 0.25" in out.getvalue()


def test_score_progress_follows_time_and_counts_evaluations():
    out = io.StringIO()
    p = Progress(100, "ode", "%", stream=out, log_interval=0)
    score = ScoreProgress(lambda x, t: -x, p, t_start=1.0, t_end=0.0)
    x = torch.zeros(2, 3)
    for t in (1.0, 0.5, 0.7, 0.25):  # adaptive solvers probe back and forth: the furthest time counts
        score(x, torch.full((2,), t))
    assert score.nfe == 4 and p.n == pytest.approx(75.0)
    # two passes over the interval (e.g. two dequantization draws) in one segment of 50%
    score.segment(50.0, 50.0, passes=2)
    for t in (1.0, 0.0, 1.0, 0.5):
        score(x, torch.full((2,), t))
    assert p.n == pytest.approx(50 + 50 * (1 + 0.5) / 2)


def test_sampling_and_likelihood_loops_report_progress(capsys):
    sde = scoresde.VPSDE()
    score = lambda x, t: -x  # noqa: E731  N(0, I) data: the diffused marginal stays N(0, I)
    gen = torch.Generator().manual_seed(0)
    res = draw_samples(sde, score, 10, (2,), solver="ddim", steps=5, batch_size=4, generator=gen, progress=True)
    assert res.samples.shape == (10, 2) and res.nfe == 3 * 6  # three batches of 5 steps + the denoising evaluation
    assert "sample 15/15" in capsys.readouterr().err
    res = draw_samples(sde, score, 4, (2,), solver="ode", generator=gen, progress=True, rtol=1e-3, atol=1e-3)
    err = capsys.readouterr().err
    assert "100.0%" in err and "NFE" in err
    lik = dataset_likelihood(sde, score, torch.zeros(3, 2), batch_size=2, progress=False, rtol=1e-6, atol=1e-6)
    # N(0, I) in 2-D at the origin: log p = -log(2 pi)
    assert lik.trace == "exact" and torch.allclose(lik.log_prob, torch.full((3,), -1.8378770664093453, dtype=torch.float64), atol=1e-4)
    assert capsys.readouterr().err == ""


def test_trace_choice():
    assert choose_trace(2) == "exact" and choose_trace(784) == "hutchinson"
    assert choose_trace(784, "exact") == "exact"
    with pytest.raises(ValueError):
        choose_trace(2, "approx")


def test_score_progress_measures_positive_intervals_in_log_time():
    p = Progress(100, stream=io.StringIO(), enabled=False)
    score = ScoreProgress(lambda x, t: -x, p, t_start=1e-4, t_end=1.0)
    score(torch.zeros(1, 2), torch.full((1,), 1e-2))  # half-way in log t
    assert p.n == pytest.approx(50.0)
