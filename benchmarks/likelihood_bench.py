"""Benchmark of :func:`scoresde.log_likelihood`: NFE, wall time and error, against the classic loop.

Problem: Gaussian data ``N(m, Q diag(lam) Q^T)`` in ``D`` dimensions with its exact diffused score,
``score(x, t) = -Q diag(1 / c_t) Q^T (x - a_t m)`` with ``c_t = a_t^2 lam + s_t^2``, under the VP SDE.
The probability-flow map from ``eps`` to ``T`` is then linear and known, so every error below is
measured against the closed-form model log-density

    log p(x) = log N(z; 0, I) + 1/2 sum_i log(c_T,i / c_eps,i),
    z = a_T m + Q diag(sqrt(c_T / c_eps)) Q^T (x - a_eps m).

The classic loop re-implemented here follows the widely used reference code: scipy ``solve_ivp``
(RK45) on a flat float64 numpy state, numpy -> torch -> numpy copies at every evaluation, one
forward pass for the drift and a second forward pass inside ``autograd.grad`` for the
single-probe Hutchinson divergence.

The headline is :func:`unet_comparison`: a U-Net score on 1x28x28 images (a trained MNIST run with
``--checkpoint``), ours against the classic loop with the same probe and tolerance, with the cost
floor of one forward pass plus one VJP per evaluation.

Run: ``python benchmarks/likelihood_bench.py`` (``--unet`` for the U-Net headline only, ``--checkpoint RUN``,
``--full`` for larger Gaussian problems, ``--threads N``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from scipy.integrate import solve_ivp

import scoresde
from scoresde import CountedScore
from scoresde.exact import Gaussian
from scoresde.likelihood import log_likelihood
from scoresde.noise import rademacher as _rademacher

EPS = 1e-5


# --------------------------------------------------------------------------- problem
class GaussianScore:
    """Exact score of ``N(m, Q diag(lam) Q^T)`` data diffused by ``sde`` (:class:`scoresde.exact.Gaussian`),
    ``[B, D], [B] -> [B, D]``, with the closed-form model log-density :meth:`exact_log_prob`."""

    def __init__(self, sde: scoresde.SDE, mean: torch.Tensor, lam: torch.Tensor, Q: torch.Tensor):
        self.sde = sde
        self.mean, self.lam, self.Q = mean.double(), lam.double(), Q.double()
        self.data = Gaussian(self.mean, (self.Q * self.lam) @ self.Q.T)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.data.score(x, self.sde, t)

    def exact_log_prob(self, x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
        """Closed-form model log-density ``log p_eps(x)`` in float64, ``[B, D] -> [B]``."""
        x = x.double().cpu()
        t = torch.tensor([eps, self.sde.T], dtype=torch.float64)
        a, s = self.sde.marginal_coeffs(t)
        lam, Q, m = self.lam, self.Q, self.mean
        c_e, c_T = a[0] ** 2 * lam + s[0] ** 2, a[1] ** 2 * lam + s[1] ** 2
        z = a[1] * m + (((x - a[0] * m) @ Q) * torch.sqrt(c_T / c_e)) @ Q.T
        return self.sde.prior_log_prob(z) + 0.5 * torch.log(c_T / c_e).sum()


def make_problem(
    D: int, B: int, device: str = "cpu", seed: int = 0
) -> Tuple[scoresde.SDE, GaussianScore, torch.Tensor]:
    """A VP SDE, the exact score of a ``D``-dim Gaussian with spread-out eigenvalues, and ``B`` data points."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = torch.logspace(-2, math.log10(2.0), D, dtype=torch.float64)  # variances from 0.01 to 2
    mean = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    sde = scoresde.VPSDE()
    x = mean + (torch.randn(B, D, generator=g, dtype=torch.float64) * lam.sqrt()) @ Q.T
    return sde, GaussianScore(sde, mean, lam, Q), x.float().to(device)


# --------------------------------------------------------------------------- the classic loop
def classic_log_likelihood(
    sde: scoresde.SDE,
    score_fn: Callable,
    x: torch.Tensor,
    probe: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    eps: float = EPS,
) -> Tuple[torch.Tensor, int]:
    """The classic scipy likelihood loop, re-implemented faithfully: returns ``(log_prob [B], nfe)``.

    scipy RK45 on a flat float64 numpy state; every evaluation copies the state numpy -> torch,
    runs the model once for the drift and once more inside ``autograd.grad`` for the
    single-probe Hutchinson divergence, and copies both results torch -> numpy.
    """
    shape, device = x.shape, x.device
    pf = sde.probability_flow(score_fn)

    def drift_fn(x, t):
        return pf.drift(x, t)

    def div_fn(x, t, noise):
        with torch.enable_grad():
            x.requires_grad_(True)
            fn_eps = torch.sum(drift_fn(x, t) * noise)  # second forward pass
            grad_fn_eps = torch.autograd.grad(fn_eps, x)[0]
        x.requires_grad_(False)
        return torch.sum(grad_fn_eps * noise, dim=tuple(range(1, len(x.shape))))

    def ode_func(t, y):
        sample = torch.from_numpy(y[: -shape[0]].reshape(shape)).to(device).type(torch.float32)
        vec_t = torch.ones(sample.shape[0], device=sample.device) * t
        drift = drift_fn(sample, vec_t).detach().cpu().numpy().reshape((-1,))  # first forward pass
        logp_grad = div_fn(sample, vec_t, probe).detach().cpu().numpy().reshape((-1,))
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape((-1,)), np.zeros((shape[0],))], axis=0)
    solution = solve_ivp(ode_func, (eps, sde.T), init, rtol=rtol, atol=atol, method="RK45")
    zp = solution.y[:, -1]
    z = torch.from_numpy(zp[: -shape[0]].reshape(shape)).to(device).type(torch.float32)
    delta_logp = torch.from_numpy(zp[-shape[0] :]).to(device).type(torch.float32)
    return sde.prior_log_prob(z) + delta_logp, int(solution.nfev)


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _timed(fn: Callable[[], object], repeats: int) -> Tuple[float, object]:
    """Best wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    out = fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# --------------------------------------------------------------------------- public entry points
def likelihood_table(device: str = "cpu", quick: bool = True, threads: int = 1) -> List[Dict]:
    """NFE, wall time and error of :func:`scoresde.log_likelihood` per trace mode and tolerance.

    Returns rows ``{trace, n_probes, dtype, rtol, nfe, seconds, abs_error, stderr}``: ``abs_error``
    is the mean over samples of ``|log_prob - exact|`` in nats, ``stderr`` the mean reported
    standard error (0 for the exact trace, NaN for one probe).
    """
    D, B = (16, 32) if quick else (64, 128)
    sde, score, x = make_problem(D, B, device)
    exact = score.exact_log_prob(x).to(device)
    modes = [("exact", 1), ("hutchinson", 1), ("hutchinson", 16)]
    settings = [(torch.float32, 1e-3), (torch.float32, 1e-5), (torch.float64, 1e-5), (torch.float64, 1e-7)]
    if not quick:
        settings.append((torch.float64, 1e-9))
    rows = []
    with _num_threads(threads):
        for dtype, rtol in settings:
            xd = x.to(dtype)
            for trace, n in modes:
                def run(xd=xd, trace=trace, n=n, rtol=rtol):
                    gen = torch.Generator().manual_seed(0)
                    return log_likelihood(sde, score, xd, trace=trace, n_probes=n, rtol=rtol, atol=rtol, generator=gen)

                seconds, res = _timed(run, 1 if quick else 3)
                rows.append(
                    dict(
                        trace=trace, n_probes=n, dtype=str(dtype).replace("torch.", ""), rtol=rtol, nfe=res.nfe,
                        seconds=seconds, abs_error=float((res.log_prob.double() - exact).abs().mean()),
                        stderr=float(res.stderr.double().mean()),
                    )
                )
    return rows


def scipy_roundtrip_comparison(device: str = "cpu", quick: bool = True, threads: int = 1, n_probes: int = 16) -> Dict:
    """Ours against the classic scipy loop on the same score function, data and tolerance.

    Both run with ``rtol = atol = 1e-5`` on float32 data. Rows (each ``{seconds, nfe, forwards, error}``,
    ``error`` the mean over samples of ``|log_prob - exact|`` in nats):

    * ``classic_1``: one classic solve with one Rademacher probe (what the classic code reports).
    * ``ours_hutchinson_1``: ours with the same single probe: the same estimator, one solve.
    * ``classic_avg``: ``n_probes`` classic solves with fresh probes, averaged: the cheapest way the
      classic loop gets below single-probe noise.
    * ``ours_hutchinson_n``: ours with the same ``n_probes`` probes in one solve (same estimator as
      ``classic_avg``), with its per-sample standard error.
    * ``ours_exact``: ours with the exact trace (no probe noise).

    Headline: ``speedup = classic_avg.seconds / ours_exact.seconds``, where ``ours_exact`` is also the
    more accurate of the two (``our_error`` vs ``their_error``); since the classic loop would need
    even more solves to match the exact trace's error, this is a lower bound on the speedup at equal
    accuracy. ``speedup_same_estimator`` and ``speedup_single_probe`` compare like with like.
    """
    D, B = (16, 64) if quick else (64, 256)
    rtol = atol = 1e-5
    reps = 2 if quick else 3  # best of `reps` timed calls after a warm-up call, the same on both sides
    sde, gaussian, x = make_problem(D, B, device)
    exact = gaussian.exact_log_prob(x).to(device)
    # The probes the classic runs use are drawn exactly as log_likelihood draws them from these seeds,
    # so that ours and the classic loop evaluate the same estimator on the same draws.
    seed_1, seed_n = 1, 2
    probe_1 = _rademacher((1, *x.shape), torch.Generator().manual_seed(seed_1), device, torch.float32)
    probes = _rademacher((n_probes, *x.shape), torch.Generator().manual_seed(seed_n), device, torch.float32)

    def err(lp: torch.Tensor) -> float:
        return float((lp.double() - exact).abs().mean())

    out: Dict = dict(dim=D, batch=B, rtol=rtol, atol=atol, n_probes=n_probes, threads=threads, device=str(device))
    with _num_threads(threads), torch.no_grad():
        # -- classic, one probe and n_probes probes averaged
        def classic(probe_set: torch.Tensor):
            lps, nfe, score = [], 0, CountedScore(gaussian)
            for e in probe_set:
                lp, n = classic_log_likelihood(sde, score, x, e, rtol=rtol, atol=atol)
                lps.append(lp)
                nfe += n
            return torch.stack(lps).mean(0), nfe, score.nfe

        t, (lp, nfe, fw) = _timed(lambda: classic(probe_1), reps)
        out["classic_1"] = dict(seconds=t, nfe=nfe, forwards=fw, error=err(lp))
        t, (lp, nfe, fw) = _timed(lambda: classic(probes), reps)
        out["classic_avg"] = dict(seconds=t, nfe=nfe, forwards=fw, error=err(lp))

        # -- ours, same probes (exact trace needs none)
        def ours(**kw):
            score = CountedScore(gaussian)
            if "generator" in kw:
                kw = dict(kw, generator=kw["generator"]())
            res = log_likelihood(sde, score, x, rtol=rtol, atol=atol, **kw)
            return res, score.nfe

        for name, kw in [
            ("ours_hutchinson_1", dict(trace="hutchinson", n_probes=1, seed=seed_1)),
            ("ours_hutchinson_n", dict(trace="hutchinson", n_probes=n_probes, seed=seed_n)),
            ("ours_exact", dict(trace="exact")),
        ]:
            seed = kw.pop("seed", None)
            if seed is not None:  # a fresh generator per call: every timed call draws the same probes
                kw["generator"] = lambda seed=seed: torch.Generator().manual_seed(seed)
            t, (res, fw) = _timed(lambda kw=kw: ours(**kw), reps)
            out[name] = dict(seconds=t, nfe=res.nfe, forwards=fw, error=err(res.log_prob),
                             stderr=float(res.stderr.double().mean()))

    out["their_seconds"] = out["classic_avg"]["seconds"]
    out["their_error"] = out["classic_avg"]["error"]
    out["our_seconds"] = out["ours_exact"]["seconds"]
    out["our_error"] = out["ours_exact"]["error"]
    out["speedup"] = out["their_seconds"] / out["our_seconds"]
    out["speedup_same_estimator"] = out["classic_avg"]["seconds"] / out["ours_hutchinson_n"]["seconds"]
    out["speedup_single_probe"] = out["classic_1"]["seconds"] / out["ours_hutchinson_1"]["seconds"]
    return out


def unet_problem(checkpoint: Optional[str] = None, data_dir: Optional[str] = None, batch: int = 4, seed: int = 0):
    """``(sde, score, x, label)``: a U-Net score on ``[batch, 1, 28, 28]`` images.

    With ``checkpoint`` (a trained MNIST run, e.g. the ``cpu`` preset), its EMA network on MNIST test
    images (``data_dir`` or ``SCORESDE_DATA``); otherwise the same architecture with random weights
    (the zero-initialised output layers drawn too, so the score is not trivially zero) on uniform images.
    """
    from scoresde.checkpoint import build_score_model, load_model
    from scoresde.nets import UNet

    if checkpoint:
        sde, score, cfg = load_model(checkpoint)
        from scoresde.data import get_dataset

        x = get_dataset(cfg.data, data_dir=data_dir or cfg.data_dir, split="test", n=batch).data
        return sde, score, x, f"trained U-Net ({sum(p.numel() for p in score.parameters()) / 1e6:.2f}M parameters)"
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(channels=16, channel_mults=[1, 2, 2], num_res_blocks=1, dropout=0.0)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d) and not bool(m.weight.any()):
                torch.nn.init.normal_(m.weight, std=0.02)
    sde = scoresde.VPSDE()
    score = build_score_model(net.eval().requires_grad_(False), sde, "eps")
    x = torch.rand(batch, 1, 28, 28, generator=g) * 2 - 1
    return sde, score, x, f"random U-Net ({sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters)"


def unet_comparison(checkpoint: Optional[str] = None, data_dir: Optional[str] = None, batch: int = 4,
                    rtol: float = 1e-5, ref_rtol: float = 1e-7, threads: int = 1, reps: int = 1) -> Dict:
    """Ours against the classic scipy loop with a U-Net score on 1x28x28 images, one Rademacher probe each.

    Both integrate the same single-probe Hutchinson estimator (the same probe) at ``rtol = atol``;
    the error of each is measured against ours at ``ref_rtol`` (same probe, float64 state), so it is
    the integration error alone. ``limit_ms`` is the cost floor of one evaluation: one forward pass of
    the network plus one vector-Jacobian product at this batch, timed on its own; ``ms_per_eval`` of
    each method is its wall time over its NFE.
    """
    sde, net_score, x, label = unet_problem(checkpoint, data_dir, batch)
    score = CountedScore(net_score)
    seed = 1
    probe = _rademacher((1, *x.shape), torch.Generator().manual_seed(seed), x.device, torch.float32)[0]
    out: Dict = dict(model=label, shape=list(x.shape), rtol=rtol, atol=rtol, ref_rtol=ref_rtol, threads=threads)
    with _num_threads(threads), torch.no_grad():
        ref = log_likelihood(sde, score, x.double(), trace="hutchinson", n_probes=1, rtol=ref_rtol, atol=ref_rtol,
                             generator=torch.Generator().manual_seed(seed), score_dtype=torch.float32)
        out["reference_nfe"] = ref.nfe

        def err(lp: torch.Tensor) -> float:
            return float((lp.double() - ref.log_prob.double()).abs().mean())

        score.nfe = 0
        t, (lp, nfe) = _timed(lambda: classic_log_likelihood(sde, score, x, probe, rtol=rtol, atol=rtol), reps)
        out["classic"] = dict(seconds=t, nfe=nfe, forwards=score.nfe // (reps + 1), error=err(lp), ms_per_eval=1e3 * t / nfe)

        def ours():
            return log_likelihood(sde, score, x, trace="hutchinson", n_probes=1, rtol=rtol, atol=rtol,
                                  generator=torch.Generator().manual_seed(seed))

        score.nfe = 0
        t, res = _timed(ours, reps)
        out["ours"] = dict(seconds=t, nfe=res.nfe, forwards=score.nfe // (reps + 1), error=err(res.log_prob),
                           ms_per_eval=1e3 * t / res.nfe)

        # the floor: one forward pass and one VJP of the score at this batch, nothing else
        def forward_vjp():
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                tt = torch.full((x.shape[0],), 0.5)
                y = net_score(xr, tt)
                return torch.autograd.grad(y, xr, probe)[0]

        n_limit = 20
        forward_vjp()
        t0 = time.perf_counter()
        for _ in range(n_limit):
            forward_vjp()
        out["limit_ms"] = 1e3 * (time.perf_counter() - t0) / n_limit
    out["speedup"] = out["classic"]["seconds"] / out["ours"]["seconds"]
    return out


def _format_table(rows: List[Dict]) -> str:
    head = f"{'trace':<11}{'probes':>7}{'dtype':>9}{'rtol':>8}{'nfe':>6}{'seconds':>10}{'abs_error':>12}{'stderr':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['trace']:<11}{r['n_probes']:>7}{r['dtype']:>9}{r['rtol']:>8.0e}{r['nfe']:>6}"
            f"{r['seconds']:>10.3f}{r['abs_error']:>12.2e}{r['stderr']:>10.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="larger problems and best-of-3 timings")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--unet", action="store_true", help="only the U-Net comparison (the headline)")
    parser.add_argument("--checkpoint", help="a trained MNIST run for the U-Net comparison (default: random weights)")
    parser.add_argument("--data-dir", help="MNIST folder (default: the run's, then SCORESDE_DATA)")
    parser.add_argument("--json", help="write the U-Net comparison to this JSON file")
    parser.add_argument("--batch", type=int, default=4, help="images in the U-Net comparison (default 4)")
    parser.add_argument("--rtol", type=float, default=1e-5, help="rtol = atol of both methods (default 1e-5)")
    parser.add_argument("--ref-rtol", type=float, default=1e-7, help="rtol = atol of the reference solve (default 1e-7)")
    args = parser.parse_args()
    u = unet_comparison(args.checkpoint, args.data_dir, batch=args.batch, rtol=args.rtol, ref_rtol=args.ref_rtol,
                        threads=args.threads)
    print(f"U-Net score ({u['model']}), images {tuple(u['shape'])}, one Rademacher probe, rtol=atol={u['rtol']:g}; "
          f"error against ours at rtol=atol={u['ref_rtol']:g} (NFE {u['reference_nfe']}):")
    print(f"{'':<10}{'seconds':>9}{'nfe':>6}{'forwards':>10}{'ms/eval':>9}{'mean |err| (nats)':>19}")
    for k in ("classic", "ours"):
        r = u[k]
        print(f"{k:<10}{r['seconds']:>9.2f}{r['nfe']:>6}{r['forwards']:>10}{r['ms_per_eval']:>9.1f}{r['error']:>19.2e}")
    print(f"cost floor (one forward + one VJP): {u['limit_ms']:.1f} ms per evaluation; speedup {u['speedup']:.2f}x\n")
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(u, f, indent=1)
    if args.unet:
        return
    quick = not args.full
    mode = "quick" if quick else "full"
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, {mode} mode\n")
    print("log_likelihood on Gaussian data with the exact score (errors against the closed form):")
    print(_format_table(likelihood_table(args.device, quick, args.threads)))
    c = scipy_roundtrip_comparison(args.device, quick, args.threads)
    print(f"\nclassic scipy loop vs ours, D={c['dim']}, B={c['batch']}, rtol=atol={c['rtol']:g}, float32 model:")
    print(f"{'':<20}{'seconds':>9}{'nfe':>7}{'forwards':>10}{'mean |err| (nats)':>19}")
    for k in ["classic_1", "ours_hutchinson_1", "classic_avg", "ours_hutchinson_n", "ours_exact"]:
        r = c[k]
        label = k.replace("_n", f"_{c['n_probes']}").replace("avg", f"avg{c['n_probes']}")
        print(f"{label:<20}{r['seconds']:>9.3f}{r['nfe']:>7}{r['forwards']:>10}{r['error']:>19.2e}")
    print(
        f"\nspeedup (classic avg of {c['n_probes']} probes -> ours exact trace, error {c['their_error']:.2e} -> "
        f"{c['our_error']:.2e} nats): {c['speedup']:.1f}x\n"
        f"speedup, same estimator ({c['n_probes']} probes): {c['speedup_same_estimator']:.1f}x; "
        f"single probe: {c['speedup_single_probe']:.1f}x"
    )


if __name__ == "__main__":
    main()
