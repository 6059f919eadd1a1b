"""Smoke tests of the benchmark suite (tiny sizes): metrics against closed forms, invariants of the
measurements, the peers' convention mapping, and the runner's JSON structure."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import scoresde
from benchmarks import common, peers, run, solvers_bench
from benchmarks.common import get_profile, make_sde, quality_reference, random_directions, sliced_w2
from benchmarks.solvers_bench import ADAPTIVE_CONFIG, FIXED_CONFIGS

SMOKE = get_profile("smoke")
CONFIGS = {c.label: c for c in FIXED_CONFIGS}


# --------------------------------------------------------------------------- metrics
def test_sliced_w2_of_a_shift_is_the_projected_shift():
    # Shifting every sample by a moves each sorted projection by theta.a, so
    # SW2^2 = mean_theta (theta.a)^2 exactly for the same directions.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    a = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    dirs = random_directions(64, 3, g)
    expected = float(((dirs @ a) ** 2).mean().sqrt())
    assert sliced_w2(x, x + a, directions=dirs) == pytest.approx(expected, rel=1e-5)
    assert sliced_w2(x, x, directions=dirs) == 0.0


def test_sliced_w2_monte_carlo_over_directions_matches_closed_form():
    # For uniform directions on S^{D-1}: E (theta.a)^2 = |a|^2 / D and
    # Var (theta.a)^2 = |a|^4 (3 / (D (D + 2)) - 1 / D^2).
    D, P = 4, 4096
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, D, generator=g, dtype=torch.float64)
    a = torch.tensor([1.0, 2.0, -0.5, 0.0], dtype=torch.float64)
    sw2_sq = sliced_w2(x, x + a, n_projections=P, generator=g) ** 2
    a2 = float(a @ a)
    se = math.sqrt(a2**2 * (3 / (D * (D + 2)) - 1 / D**2) / P)
    assert abs(sw2_sq - a2 / D) < 4 * se


def test_sliced_w2_unequal_sizes_and_scaling():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 1, generator=g, dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    # each value duplicated: the interpolated quantiles of y are exactly those of x
    assert sliced_w2(x, x.repeat(2, 1), directions=one) == pytest.approx(0.0, abs=1e-6)
    # 1-D, y = 2x: the sorted samples differ by x_(i), so W2 = sqrt(mean x^2)
    assert sliced_w2(x, 2 * x, directions=one) == pytest.approx(float(x.pow(2).mean().sqrt()), rel=1e-5)
    with pytest.raises(ValueError):
        sliced_w2(x, torch.randn(10, 2, dtype=torch.float64))


def test_dlogp_of_true_samples_is_zero_within_its_standard_error():
    ref = quality_reference("gmm2d", SMOKE, seed=3)
    fresh = ref.mixture.sample(ref.n_samples, generator=torch.Generator().manual_seed(99))
    q = ref.score(fresh)
    # the sample mean and the reference expectation both carry sampling error
    se = ref.logp_std * math.sqrt(1 / ref.n_samples + 1 / SMOKE.n_logp_reference)
    assert abs(q["dlogp"]) < 4 * se
    assert q["dlogp_stderr"] == pytest.approx(ref.logp_std / math.sqrt(ref.n_samples))
    # a visibly wrong sampler (every sample shifted by 1) is far above the exact-sample floor
    assert ref.score(fresh + 1.0)["sw2"] > ref.sw2_floor + 5 * ref.sw2_floor_sd + 0.3


# --------------------------------------------------------------------------- solvers
def test_fit_steps_reaches_the_budget_as_the_solver_counts():
    sde = make_sde("vp")
    for label in ("ddim", "ode:heun", "pc", "annealed_langevin", "torchsde:euler"):
        cfg = CONFIGS[label]
        steps = solvers_bench.fit_steps(cfg, sde, (2,), 20)
        res = scoresde.solve(
            sde,
            lambda x, t: -x,
            (3, 2),
            solver=cfg.solver,
            steps=steps,
            generator=torch.Generator().manual_seed(0),
            **cfg.options,
        )
        assert res.nfe <= 20, label
        more = scoresde.solve(
            sde,
            lambda x, t: -x,
            (3, 2),
            solver=cfg.solver,
            steps=steps + 1,
            generator=torch.Generator().manual_seed(0),
            **cfg.options,
        )
        assert more.nfe > 20, label  # the largest step count within the budget
    assert solvers_bench.fit_steps(CONFIGS["ode:rk4"], sde, (2,), 3) is None


def test_solver_overhead_rows():
    configs = [CONFIGS["ddim"], CONFIGS["pc"], ADAPTIVE_CONFIG.with_tolerance(1e-2)]
    rows = solvers_bench.solver_overhead(profile=SMOKE, configs=configs)
    assert len(rows) == 2 * len(configs)
    sde = make_sde("vp")
    for r in rows:
        assert "error" not in r, r
        assert {"network", "solver", "nfe", "ratio", "seconds", "bare_ms"} <= set(r)
        # a solver cannot run its NFE evaluations in much less time than the evaluations alone
        assert r["ratio"] >= 0.5, r
        assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
        cfg = next(c for c in configs if c.label == r["solver"])
        if not cfg.adaptive:
            # the recorded NFE is the solver's own count for those steps, whatever the score
            res = scoresde.solve(
                sde,
                lambda x, t: -x,
                r["batch"],
                solver=cfg.solver,
                steps=r["steps"],
                generator=torch.Generator().manual_seed(0),
                **cfg.options,
            )
            assert r["nfe"] == res.nfe
            assert r["nfe"] <= SMOKE.overhead_nfe


def test_quality_improves_with_nfe_for_a_convergent_solver():
    heun = CONFIGS["ode:heun"]
    rows = solvers_bench.quality_vs_nfe(profile=SMOKE, configs=[(heun, 5), (heun, 41)])
    assert [r["target_nfe"] for r in rows] == [5, 41]
    lo, hi = rows
    for r in rows:
        assert "error" not in r, r
        assert {"problem", "sde", "solver", "nfe", "seconds", "sw2", "dlogp"} <= set(r)
        assert r["nfe"] <= r["target_nfe"]
        res = scoresde.solve(
            make_sde(r["sde"]),
            lambda x, t: -x,
            (2, 2),
            solver="ode",
            steps=r["steps"],
            method="heun",
            generator=torch.Generator().manual_seed(0),
        )
        assert r["nfe"] == res.nfe
    # same prior noise, so the comparison is paired: 2 steps of Heun are far from converged
    assert hi["sw2"] < lo["sw2"] - 0.05
    assert abs(hi["dlogp"]) < abs(lo["dlogp"])


def test_failing_solver_is_a_row_not_a_crash():
    bad = solvers_bench.SolverConfig("ode:bogus", "ode", {"method": "no-such-method"})
    ref = quality_reference("gmm2d", SMOKE)
    row = solvers_bench.run_quality("gmm2d", "vp", bad, 10, ref, torch.device("cpu"))
    assert row["error"].startswith("OptionError") and "no-such-method" in row["error"]


# --------------------------------------------------------------------------- peers
def test_convention_mapping_is_exact_for_standard_normal_data():
    # N(0, I) data: score at t is -x / (scale^2 + std^2); in sigma-space the posterior mean of x_0
    # given x_sigma = x_0 + sigma z is x_sigma / (1 + sigma^2), and eps = -std * score.
    for name in ("vp", "ve"):
        sde = make_sde(name)

        def score(x, t, sde=sde):
            scale, std = sde.marginal_coeffs(t)
            return -x / scoresde._utils.append_dims(scale**2 + std**2, x.ndim)

        sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
        t = peers.time_at_sigma(sde, sigma)
        assert torch.allclose(sde.noise_to_signal(t), sigma, rtol=1e-6)
        x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        D = peers.denoiser(sde, score)(x, sigma)
        assert torch.allclose(D, x / (1 + sigma[:, None] ** 2), rtol=1e-6)
        scale, std = sde.marginal_coeffs(t)
        expected_eps = std[:, None] * x / (scale[:, None] ** 2 + std[:, None] ** 2)
        assert torch.allclose(peers.eps_model(sde, score)(x, sigma), expected_eps, rtol=1e-6)


def test_verdict():
    assert peers.verdict([0.10, 0.11], [0.10, 0.11]) == "equal within noise"
    assert peers.verdict([0.05, 0.06, 0.05], [0.10, 0.11, 0.10]) == "better"
    assert peers.verdict([0.20, 0.21, 0.20], [0.10, 0.11, 0.10]) == "worse"
    assert peers.verdict([float("nan")], [0.1]) == "n/a"


def test_k_diffusion_loader_reports_a_reason():
    try:
        sampling = peers.load_k_diffusion_sampling()
    except ImportError as e:
        assert str(e)  # recorded as "unavailable: <reason>"
    else:
        assert hasattr(sampling, "sample_euler") and hasattr(sampling, "log_likelihood")


def test_diffusers_samplers_match_ours_at_equal_nfe():
    pytest.importorskip("diffusers")
    ref = quality_reference("gmm2d", SMOKE, seed=1, n_samples=SMOKE.peer_samples)
    shape = (SMOKE.peer_samples, 2)
    # ScoreSdeVeScheduler's predictor-corrector vs our pc on VE: the same NFE
    ve = make_sde("ve")
    score_ve = common.exact_score(ref.mixture, ve)
    x, nfe = peers.diffusers_pc_sample(ve, score_ve, shape, 10, torch.Generator().manual_seed(0), 0.16, 1e-5)
    assert nfe == 20 and torch.isfinite(x).all()
    ours, ours_nfe, _ = peers._ours("pc", ve, score_ve, shape, 20, 0, denoise=False, snr=0.16)
    assert ours_nfe == 20
    assert ref.score(ours)["sw2"] < 2 * ref.score(x)["sw2"]
    # Euler in sigma-space with x / scale is DDIM (Karras et al. 2022): on near-identical time grids the
    # two samplers give the same samples up to the grid difference.
    vp = make_sde("vp")
    score_vp = common.exact_score(ref.mixture, vp)
    xe, nfe_e = peers.diffusers_discrete_sample(
        "EulerDiscreteScheduler",
        {"timestep_spacing": "linspace"},
        vp,
        score_vp,
        shape,
        20,
        torch.Generator().manual_seed(0),
    )
    xd, nfe_d, _ = peers._ours("ddim", vp, score_vp, shape, 20, 0)
    assert nfe_e == nfe_d == 20
    assert ref.score(xe)["sw2"] == pytest.approx(ref.score(xd)["sw2"], rel=0.05)


# --------------------------------------------------------------------------- runner
def test_run_section_records_unavailable_and_failed():
    def missing():
        raise ImportError("no module named 'nope'")

    def broken():
        raise RuntimeError("boom")

    assert run.run_section(missing) == "unavailable: no module named 'nope'"
    assert run.run_section(broken, log=lambda m: None).startswith("failed: RuntimeError: boom")
    with pytest.raises(ImportError, match="no_such_bench"):
        run.load_function("no_such_bench", "f")


def test_runner_writes_strict_json_markdown_and_plot(tmp_path):
    out = tmp_path / "r.json"
    assert run.main(["--profile", "smoke", "--sections", "quality_vs_nfe", "--out", str(out)]) == 0

    def no_nan(token):
        raise AssertionError(f"non-strict JSON constant {token}")

    results = json.loads(out.read_text(), parse_constant=no_nan)
    assert set(results) == set(run.SECTIONS) | {"meta"}
    for key in ("device", "torch", "scoresde", "numpy", "python", "peers", "quick", "date"):
        assert key in results["meta"]
    assert results["meta"]["quick"] is True
    assert results["solver_overhead"] == "skipped: not selected"
    rows = results["quality_vs_nfe"]
    assert {(r["problem"], r["sde"]) for r in rows} == set(SMOKE.quality_problems)
    md = out.with_suffix(".md").read_text()
    assert "## Quality against NFE" in md and "## Targets" in md
    if importlib.util.find_spec("matplotlib") is not None:  # the plot is optional
        assert (tmp_path / "r-quality_vs_nfe.png").stat().st_size > 1000


def test_targets_report_misses_with_their_size():
    results = {
        "meta": {"device": "cpu"},
        "solver_overhead": [{"network": "unet(x)", "solver": "pc", "ratio": 1.3}],
        "likelihood_vs_scipy_roundtrip": {"speedup": 4.0, "our_error": 0.1, "their_error": 0.2},
        "peers": {
            "rows": [
                {
                    "analog": "same method",
                    "verdict": "worse",
                    "peer": "p",
                    "peer_method": "m",
                    "ours": "o",
                    "problem": "gmm2d",
                    "nfe": 20,
                    "ours_sw2": 0.2,
                    "peer_sw2": 0.1,
                }
            ]
        },
    }
    t = {r["target"].split()[0]: r for r in run.targets(results)}
    assert "CUDA not measured" in t["solver"]["status"]
    assert "short of 10x by 6.0x" in t["likelihood"]["status"]
    assert "+100%" in t["at"]["status"]
    assert run.clean_json({"a": float("nan"), "b": (1, float("inf"))}) == {"a": None, "b": [1, None]}
