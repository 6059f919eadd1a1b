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


class Recorded(Progress):
    """A Progress that keeps every value it was asked to draw."""

    def set(self, n, **fields):
        self.drawn = getattr(self, "drawn", []) + [float(n)]
        return super().set(n, **fields)


def test_score_progress_measures_in_log_snr_given_an_sde():
    sde = scoresde.VPSDE()
    p = Progress(100, stream=io.StringIO(), enabled=False)
    score = ScoreProgress(lambda x, t: -x, p, t_start=1e-5, t_end=1.0, sde=sde)
    assert score.variable == "log_snr"
    lam = sde.log_snr(torch.tensor([1e-5, 1.0], dtype=torch.float64))
    t_mid = sde.time_at_log_snr(lam.mean().reshape(1))  # half-way in log-SNR
    for t in (torch.full((1,), 1e-5), t_mid, t_mid):  # the start, the step-size probe, a step
        score(torch.zeros(1, 2), t)
    assert p.n == pytest.approx(50.0, abs=1e-4)
    # a score function that carries its SDE (as NetworkScore does) needs no sde=
    net = scoresde.NetworkScore(torch.nn.Linear(2, 2), sde)
    assert ScoreProgress(net, p, 1.0, 1e-3).variable == "log_snr"
    # without one: log t for positive ends, t otherwise
    assert ScoreProgress(lambda x, t: -x, p, 1.0, 1e-3).variable == "log_t"
    assert ScoreProgress(lambda x, t: -x, p, 1.0, 0.0, sde=sde).variable == "t"  # log-SNR infinite at t = 0


def test_score_progress_averages_per_sample_times_and_counts_finished_samples():
    p = Progress(100, stream=io.StringIO(), enabled=False)
    score = ScoreProgress(lambda x, t: -x, p, t_start=0.0, t_end=1.0)
    score(torch.zeros(4, 2), torch.zeros(4))  # all four samples start
    score(torch.zeros(4, 2), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    score(torch.zeros(4, 2), torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert p.n == pytest.approx(50.0)
    score(torch.zeros(2, 2), torch.tensor([0.5, 0.5]))  # two samples finished: they count as done
    assert p.n == pytest.approx(100 * (0.5 + 0.5 + 1 + 1) / 4)


def test_initial_step_probe_of_an_adaptive_solver_is_not_shown():
    sde = scoresde.VPSDE()
    ang = torch.arange(4) * torch.pi / 2
    data = scoresde.exact.GaussianMixture(torch.ones(4), torch.stack([2 * ang.cos(), 2 * ang.sin()], 1), 0.1)
    p = Recorded(100, "sample", "%", stream=io.StringIO(), log_interval=0)
    score = ScoreProgress(data.score_fn(sde), p, sde.T, 1e-3, sde=sde)
    scoresde.solve(sde, score, (8, 2), solver="ode", eps=1e-3, generator=torch.Generator().manual_seed(0), rtol=1e-3, atol=1e-3)
    # the step-size probe evaluates at t = eps second of all: the bar does not jump to 100% and back
    assert p.drawn == sorted(p.drawn) and p.drawn[2] < 20 and p.drawn[-1] == pytest.approx(100.0)
    assert score.nfe == len(p.drawn) + 1  # the probe itself is recorded, not drawn
    assert "\r" not in p.stream.getvalue() and " 100.0% " in p.stream.getvalue().splitlines()[-1]


def test_fields_and_labels_with_braces_and_a_forced_line():
    out = io.StringIO()
    p = Progress(None, "x{0}", "it", stream=out, log_interval=0)
    p.update(3, note="{a}")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("x{0} 3 it") and line.endswith("note {a}") for line in lines)
    out = io.StringIO()
    bar = ProgressBar(10, stream=out, log_interval=3600)
    bar.update(1, 0.5, 10.0)
    assert out.getvalue() == ""
    bar.update(2, 0.5, 10.0, force=True)  # one line now, whatever the interval
    assert out.getvalue().count("\n") == 1 and "train 2/10" in out.getvalue()
    bar.close()
    assert out.getvalue().count("\n") == 2


def test_messages_written_through_tqdm_keep_the_terminal_bar_whole():
    from tqdm import tqdm

    out = Terminal()
    with Progress(10, "train", "step", stream=out, min_interval=0) as p:
        p.update(3)
        tqdm.write("checkpoint saved", file=out)  # clears the bar, prints the line, redraws the bar
        p.update(1)
    text = out.getvalue()
    assert "\rcheckpoint saved\n" in text and text.rstrip("\n").split("\r")[-1].startswith("train [")
