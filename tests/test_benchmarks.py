"""Smoke tests of the benchmark suite (tiny sizes): metrics against closed forms, invariants of the
measurements, the peers' convention mapping, and the runner's JSON structure."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import scoresde
from scoresde.checkpoint import build_sde
from scoresde.metrics import sliced_wasserstein

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _import_benchmarks(*names: str):
    """The benchmark scripts' modules, imported as the scripts import each other (as local modules).

    The folder is on ``sys.path`` only while they import; each must come from ``benchmarks/``.
    """
    sys.path.insert(0, str(BENCHMARKS))
    try:
        modules = [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(BENCHMARKS))
    for m in modules:
        assert Path(m.__file__).resolve().parent == BENCHMARKS, f"{m.__name__} shadowed by {m.__file__}"
    return modules


common, solvers_bench, peers, paper_samplers, fewstep_bench, run = _import_benchmarks(
    "common", "solvers_bench", "peers", "paper_samplers", "fewstep_bench", "run"
)
get_profile, quality_reference = common.get_profile, common.quality_reference
ADAPTIVE_CONFIG, FIXED_CONFIGS = solvers_bench.ADAPTIVE_CONFIG, solvers_bench.FIXED_CONFIGS

SMOKE = get_profile("smoke")
CONFIGS = {c.label: c for c in FIXED_CONFIGS}


# --------------------------------------------------------------------------- metrics
def test_sliced_wasserstein_of_a_shift_in_one_dimension():
    # In 1-D every direction is +-1: shifting every sample by a moves each sorted projection by
    # +-a, so SW2 = |a| exactly whatever the directions.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(x, x + 0.7, n_projections=16, generator=g) == pytest.approx(0.7, rel=1e-9)
    assert sliced_wasserstein(x, x, n_projections=16, generator=g) == 0.0


def test_sliced_wasserstein_monte_carlo_over_directions_matches_closed_form():
    # For uniform directions on S^{D-1}: E (theta.a)^2 = |a|^2 / D and
    # Var (theta.a)^2 = |a|^4 (3 / (D (D + 2)) - 1 / D^2).
    D, P = 4, 4096
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, D, generator=g, dtype=torch.float64)
    a = torch.tensor([1.0, 2.0, -0.5, 0.0], dtype=torch.float64)
    sw2_sq = sliced_wasserstein(x, x + a, n_projections=P, generator=g) ** 2
    a2 = float(a @ a)
    se = math.sqrt(a2**2 * (3 / (D * (D + 2)) - 1 / D**2) / P)
    assert abs(sw2_sq - a2 / D) < 4 * se


def test_sliced_wasserstein_scaling_and_shapes():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 1, generator=g, dtype=torch.float64)
    # 1-D, y = 2x: the sorted samples differ by x_(i), so W2 = sqrt(mean x^2)
    assert sliced_wasserstein(x, 2 * x, generator=g) == pytest.approx(float(x.pow(2).mean().sqrt()), rel=1e-5)
    with pytest.raises(ValueError):
        sliced_wasserstein(x, torch.randn(10, 2, dtype=torch.float64))


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
    sde = build_sde("vp")
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
    sde = build_sde("vp")
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
            build_sde(r["sde"]),
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
        sde = build_sde(name)

        def score(x, t, sde=sde):
            scale, std = sde.marginal_coeffs(t)
            return -x / scoresde.append_dims(scale**2 + std**2, x.ndim)

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
    ve = build_sde("ve")
    score_ve = common.exact_score(ref.mixture, ve)
    x, nfe = peers.diffusers_pc_sample(ve, score_ve, shape, 10, torch.Generator().manual_seed(0), 0.16, 1e-5)
    assert nfe == 20 and torch.isfinite(x).all()
    ours, ours_nfe, _ = peers._ours("pc", ve, score_ve, shape, 20, 0, denoise=False, snr=0.16)
    assert ours_nfe == 20
    assert ref.score(ours)["sw2"] < 2 * ref.score(x)["sw2"]
    # Euler in sigma-space with x / scale is DDIM (Karras et al. 2022): on near-identical time grids the
    # two samplers give the same samples up to the grid difference.
    vp = build_sde("vp")
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


# --------------------------------------------------------------------------- few-step
def _gaussian_flow(m, s2, sigma_from, sigma_to, x):
    """Closed-form probability-flow map of N(m, diag(s2)) data in the sigma frame (then Tweedie at sigma_to = 0)."""
    return m + (x - m) * ((s2 + sigma_to**2) / (s2 + sigma_from**2)).sqrt()


def test_paper_transcriptions_against_closed_form_and_ddim():
    sde = build_sde("ve")
    m = torch.tensor([0.5, -1.0], dtype=torch.float64)
    s2 = torch.tensor([0.04, 1.0], dtype=torch.float64)
    data = scoresde.exact.Gaussian(m, torch.diag(s2))
    D = peers.denoiser(sde, data.score_fn(sde))
    x = 50.0 * torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _gaussian_flow(m, s2, 50.0, 0.0, x)
    fine = paper_samplers.karras_sigmas(50.0, 2e-3, 200)
    # both converge to the exact map; the last step to sigma = 0 is the Tweedie mean at 2e-3, off by O(2e-3^2)
    for fn in (paper_samplers.dpmpp_2m, paper_samplers.edm_heun):
        assert (fn(D, x, fine) - exact).abs().max() < 1e-3, fn.__name__
    # second order: halving the steps of DPM-Solver++(2M) on a coarse grid multiplies its error by about 4
    errs = [float((paper_samplers.dpmpp_2m(D, x, paper_samplers.log_snr_sigmas(50.0, 1e-3, n)) - exact).abs().max())
            for n in (16, 32)]
    assert 2.5 < errs[0] / errs[1] < 6, errs
    # DDIM in the sigma frame is our ddim on the same levels (a convention check between the two frames)
    vp = build_sde("vp")
    score_vp = data.score_fn(vp)
    times = torch.linspace(1.0, 1e-3, 6, dtype=torch.float64)
    x_T = vp.prior_sample((50, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = scoresde.solve(vp, score_vp, None, solver="ddim", grid=times, x_init=x_T, denoise=True)
    sig = torch.cat([vp.noise_to_signal(times), torch.zeros(1, dtype=torch.float64)])
    scale_T, _ = vp.marginal_coeffs(times[:1])
    theirs = paper_samplers.ddim(peers.denoiser(vp, score_vp), x_T / scale_T, sig)
    assert ours.nfe == len(sig) - 1
    assert torch.allclose(ours.samples, theirs, atol=1e-8)


def test_fewstep_rows_count_every_evaluation(monkeypatch):
    # a few candidates per side keep this at seconds; the full lists run in the benchmark itself
    monkeypatch.setattr(fewstep_bench, "OURS_DETERMINISTIC", fewstep_bench.OURS_DETERMINISTIC[:4])
    monkeypatch.setattr(fewstep_bench, "OURS_STOCHASTIC", fewstep_bench.OURS_STOCHASTIC[:1])
    monkeypatch.setattr(fewstep_bench, "OUR_GRIDS", (None, "gits"))
    monkeypatch.setattr(fewstep_bench, "DIFFUSERS_MULTISTEP", fewstep_bench.DIFFUSERS_MULTISTEP[::3])
    monkeypatch.setattr(fewstep_bench, "GITS_FINE_STEPS", 16)
    monkeypatch.setattr(fewstep_bench, "GITS_SAMPLES", 128)

    tiny = get_profile("smoke").__class__(
        **dict(vars(get_profile("smoke")), fewstep_problems=(("fs2d", "vp"),), fewstep_nfe=(5,), fewstep_samples=256)
    )
    out = fewstep_bench.fewstep(profile=tiny)
    (row,) = out["rows"]
    assert row["problem"] == "fs2d" and row["nfe"] == 5 and row["seeds"] == tiny.fewstep_seeds
    for side in ("ours", "peer", "ours_det", "ours_nogits"):
        assert row[f"{side}_nfe"] <= 5 and len(row[f"{side}_sw2_seeds"]) == tiny.fewstep_seeds
        assert row[f"{side}_sw2_se"] >= 0
    assert row["verdict"] in ("better", "equal within noise", "worse")
    cands = out["candidates"]
    assert {c["side"] for c in cands} == {"ours", "peer"}
    assert all("error" not in c for c in cands), [c for c in cands if "error" in c][:2]
    # the peers spend exactly the budget; ours at most the budget, counted by the driver (denoising included)
    assert all(c["nfe"] == 5 for c in cands if c["side"] == "peer")
    assert all(c["nfe"] <= 5 for c in cands if c["side"] == "ours")
    (sched,) = out["schedule"]
    assert len(sched["gits_times"]) == 5 and sched["gits_times"][0] == 1.0
    if importlib.util.find_spec("diffusers") is not None:
        assert any(c["label"].startswith("diffusers") for c in cands)


def test_fewstep_target_and_markdown():
    def row(nfe, verdict):
        return dict(problem="fs2d", sde="vp", nfe=nfe, verdict=verdict, ours_sw2=0.1, peer_sw2=0.2, ours_label="a",
                    peer_label="b", ours_sw2_se=0.01, peer_sw2_se=0.01)

    assert run.fewstep_target([row(5, "better"), row(20, "equal within noise")])["status"] == "met"
    status = run.fewstep_target([row(5, "equal within noise"), row(20, "worse")])["status"]
    assert "NFE 5 (equal within noise" in status and "NFE 20 (worse" in status
    md = run.fewstep_markdown({"rows": [row(5, "better")], "schedule": [], "settings": {"seeds": 3, "samples": 10}})
    assert "| fs2d | VP | 5 | `a` | 0.100 ± 0.010 |" in md


def test_fewstep_mnist_resume_log_keeps_finished_rows_by_nfe_and_label(tmp_path):
    (fewstep_mnist,) = _import_benchmarks("fewstep_mnist")
    rows = [
        {"nfe": 5, "side": "ours", "label": "ddim", "nfe_used": 5, "fld": 9.0, "confident": 0.5, "seconds": 1.0},
        {"nfe": 5, "side": "ours", "label": "ddim", "nfe_used": 5, "fld": 8.0, "fld_se": 0.1, "fld_per_seed": [8.0],
         "confident": 0.5, "confident_se": 0.0, "min_class_share": 0.1},
        {"nfe": 8, "side": "diffusers", "label": "UniPC", "nfe_used": 8, "fld": 7.0, "confident": 0.6, "seconds": 2.0},
    ]
    log = tmp_path / "run.log"
    log.write_text("GITS grid fitted in 12 s\n" + "\n".join(json.dumps(r) for r in rows) + "\nnot a row\n")
    selection, finals, gits_seconds = fewstep_mnist._earlier_rows(str(log))
    assert gits_seconds == 12.0
    assert set(selection) == {(5, "ddim"), (8, "UniPC")} and selection[(8, "UniPC")]["fld"] == 7.0
    assert set(finals) == {(5, "ddim")} and finals[(5, "ddim")]["fld_se"] == 0.1
    assert fewstep_mnist._earlier_rows(None) == ({}, {}, None)
