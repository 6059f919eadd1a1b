"""Hardening, round two: the surfaces added with guidance, inpainting, grids, seeds, sharding and metrics.

One test (at least) per reproduction of the issue: each used to return a wrong number, coerce a value
silently or end in a raw torch/NumPy traceback, and now gives a correct result or one ``ScoreSDEError``
naming the parameter.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import scoresde
from scoresde import guidance as G
from scoresde._validation import MAX_CLASSES
from scoresde.classifier import NoiseConditionalClassifier, save_classifier
from scoresde.cli import args as A
from scoresde.cli import build_parser, main
from scoresde.errors import (
    DataError,
    IncompatibleSDEError,
    LabelError,
    MaskError,
    NonFiniteError,
    OptionError,
    OutputError,
    ScoreSDEError,
    ShardError,
    TimeRangeError,
    UserError,
)
from scoresde.metrics import FeatureStatistics, LeNet, QualityClassifier, frechet_distance, sample_quality
from scoresde.nets import MLP, UNet, build_network
from scoresde.noise import parse_seed_range
from scoresde.shard import model_identity, sample_seeds
from scoresde.solvers import EDM, IPNDM, DPMSolverPP, Karras, PredictorCorrector, TimeGrid, UniPC

SDE = scoresde.VPSDE()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def std_normal(x, t):
    """The exact score of N(0, I) data under the VP SDE (its marginals stay N(0, I))."""
    return -x


# ---------------------------------------------------------------------- 1. return_log_prob needs a differentiable score
def _no_grad(x, t):
    with torch.no_grad():
        return -x


def _through_numpy(x, t):
    return torch.from_numpy(-x.detach().cpu().numpy())


@pytest.mark.parametrize("score", [lambda x, t: (-x).detach(), _no_grad, _through_numpy], ids=["detach", "no_grad", "numpy"])
@pytest.mark.parametrize("seeded", [False, True])
def test_return_log_prob_refuses_a_score_without_a_derivative(score, seeded):
    kw = dict(seeds=[1, 2, 3]) if seeded else dict(generator=gen())
    with pytest.raises(OptionError, match="not differentiable in x"):
        scoresde.solve(SDE, score, (3, 2), "ode", return_log_prob=True, **kw)


class _NaNDerivative(torch.autograd.Function):
    """``-x`` with a NaN derivative: a finite score whose divergence is NaN."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("options", [dict(), dict(trace="hutchinson"), dict(method="rk4", steps=4)])
def test_return_log_prob_reports_a_nan_derivative(options):
    with pytest.raises(NonFiniteError, match="divergence"):
        scoresde.solve(SDE, lambda x, t: _NaNDerivative.apply(x), (3, 2), "ode", return_log_prob=True, generator=gen(),
                       **options)


def test_return_log_prob_is_the_exact_density_and_a_real_boolean():
    res = scoresde.solve(SDE, std_normal, (4, 2), "ode", return_log_prob=True, generator=gen(), rtol=1e-7, atol=1e-7,
                         dtype=torch.float64)
    exact = -0.5 * (res.samples**2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(res.log_prob, exact, rtol=0, atol=1e-4)
    for bad in ("yes", 1, "true", None):
        with pytest.raises(OptionError, match="return_log_prob"):
            scoresde.solve(SDE, std_normal, (2, 2), "ode", return_log_prob=bad)


# ---------------------------------------------------------------------- 2. sharded sampling identifies the model by content
def test_sample_seeds_refuses_chunks_of_another_model(tmp_path):
    kw = dict(chunk_size=2, solver="ddim", steps=3)
    first = sample_seeds(SDE, std_normal, range(4), (2,), tmp_path, **kw)
    again = sample_seeds(SDE, std_normal, range(4), (2,), tmp_path, **kw)  # the same model resumes
    assert torch.equal(first, again)
    with pytest.raises(ShardError, match="another job"):
        sample_seeds(SDE, lambda x, t: -2 * x, range(4), (2,), tmp_path, **kw)
    a, b = MLP(2, hidden=8, depth=1), MLP(2, hidden=8, depth=1)
    na, nb = scoresde.NetworkScore(a, SDE), scoresde.NetworkScore(b, SDE)
    assert model_identity(na, (2,)) != model_identity(nb, (2,))
    sample_seeds(SDE, na, range(4), (2,), tmp_path / "net", **kw)
    with pytest.raises(ShardError, match="another job"):
        sample_seeds(SDE, nb, range(4), (2,), tmp_path / "net", **kw)


def test_sample_seeds_refuses_a_file_as_its_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        sample_seeds(SDE, std_normal, range(2), (2,), f, solver="ddim", steps=2)


# ---------------------------------------------------------------------- 3. booleans only from real booleans
def test_solver_arg_false_is_false():
    args = build_parser().parse_args(["sample", "--solver", "ipndm", "--solver-arg", "variable_step=false"])
    opts = A.solver_options(args, "ipndm")
    assert opts == {"variable_step": False} and A.make_solver(args, "ipndm", opts).variable_step is False
    args = build_parser().parse_args(["sample", "--solver", "ipndm", "--solver-arg", "variable_step=maybe"])
    with pytest.raises(UserError, match="variable_step must be True or False"):
        A.make_solver(args, "ipndm", A.solver_options(args, "ipndm"))


@pytest.mark.parametrize("make", [
    lambda v: IPNDM(variable_step=v), lambda v: UniPC(corrector=v), lambda v: UniPC(lower_order_final=v),
    lambda v: DPMSolverPP(lower_order_final=v), lambda v: scoresde.NetworkScore(MLP(2), SDE, "score", scale_by_std=v),
    lambda v: scoresde.ReverseSDE(SDE, std_normal, probability_flow=v),
])
@pytest.mark.parametrize("value", ["false", "yes", 1, 0.0, None])
def test_flags_take_only_real_booleans(make, value):
    with pytest.raises(OptionError, match="must be True or False"):
        make(value)


def test_flag_values_that_are_booleans_pass():
    assert IPNDM(variable_step=np.bool_(True)).variable_step is True
    assert UniPC(corrector=False).corrector is False


@pytest.mark.parametrize("corrector", ["no", False, 0, "off"])
def test_pc_corrector_is_an_exact_choice(corrector):
    with pytest.raises(OptionError, match="corrector"):
        PredictorCorrector(corrector=corrector)


@pytest.mark.parametrize("rho", ["7", 1e-9, 0.0, -1.0, float("nan"), float("inf"), 1e9, True])
def test_karras_rho_is_a_number_in_range(rho):
    with pytest.raises(OptionError, match=r"rho must"):
        Karras(rho=rho)


def test_karras_rho_range_ends_give_valid_grids():
    for rho in (0.1, 1000.0):
        res = scoresde.solve(SDE, std_normal, (2, 2), "ddim", steps=5, grid=Karras(rho=rho), generator=gen())
        assert bool(torch.isfinite(res.samples).all()) and bool((res.times.diff() < 0).all())


# ---------------------------------------------------------------------- 4. a TimeGrid object is checked like a tensor grid
class _Ends(TimeGrid):
    def __init__(self, start, end):
        self.start, self.end = start, end

    def __call__(self, sde, steps, eps):  # bypasses TimeGrid.__call__'s end snapping, as a custom grid may
        return torch.linspace(self.start, eps if self.end is None else self.end, steps + 1, dtype=torch.float64)


class _Times(TimeGrid):
    def __init__(self, start, end):
        self.start, self.end = start, end

    def times(self, sde, steps, eps):  # through TimeGrid.__call__
        return torch.linspace(self.start, eps if self.end is None else self.end, steps + 1, dtype=torch.float64)


@pytest.mark.parametrize("cls", [_Ends, _Times])
@pytest.mark.parametrize("start,end,match", [(1.0, 0.3, "end at eps"), (0.5, None, "start at T"),
                                             (1.0, 1.5, "strictly decreasing|end at eps")])
def test_custom_grid_is_validated_like_a_tensor_grid(cls, start, end, match):
    calls = []
    score = lambda x, t: calls.append(1) or -x  # noqa: E731
    with pytest.raises(TimeRangeError, match=match):
        scoresde.solve(SDE, score, (2, 2), "ddim", steps=4, grid=cls(start, end), generator=gen())
    assert not calls  # refused before the first evaluation


def test_custom_grid_ending_at_eps_works():
    res = scoresde.solve(SDE, std_normal, (2, 2), "ddim", steps=4, grid=_Ends(1.0, None), eps=0.01, generator=gen())
    assert float(res.times[0]) == 1.0 and float(res.times[-1]) == pytest.approx(0.01)


# ---------------------------------------------------------------------- 5. a classifier of another data set
def test_guidance_classifier_of_another_data_set_is_refused(tmp_path):
    clf = NoiseConditionalClassifier((2,), 3, hidden=8, depth=1)
    path = tmp_path / "clf.pt"
    save_classifier(path, clf, "vp", {}, data="moons", num_classes=3)
    model = SimpleNamespace(event_shape=(2,), sde=scoresde.VPSDE(), data="gmm")
    with pytest.raises(UserError, match="trained on 'moons' but the model on 'gmm'"):
        A.load_guidance_classifier(str(path), model, "cpu")
    A.load_guidance_classifier(str(path), SimpleNamespace(event_shape=(2,), sde=scoresde.VPSDE(), data="moons"), "cpu")


# ---------------------------------------------------------------------- 6. silent coercions on the new code
@pytest.mark.parametrize("value", [2.5, True, "4", 0, -1, float("nan"), MAX_CLASSES + 1])
def test_num_classes_is_a_count(value):
    with pytest.raises(OptionError, match="num_classes"):
        MLP(2, num_classes=value)
    with pytest.raises(OptionError, match="num_classes"):
        UNet(1, 8, channels=8, channel_mults=(1, 2), num_classes=value)
    with pytest.raises(OptionError, match="num_classes"):
        build_network("mlp", (2,), num_classes=value)


@pytest.mark.parametrize("kwargs,name", [(dict(hidden=2.5), "hidden"), (dict(hidden="abc"), "hidden"),
                                         (dict(num_classes=True), "num_classes"), (dict(depth=-1), "depth"),
                                         (dict(fourier_scale=float("nan")), "fourier_scale"),
                                         (dict(channel_mults="12"), "channel_mults")])
def test_noise_conditional_classifier_arguments(kwargs, name):
    args = dict(event_shape=(2,), num_classes=3)
    args.update(kwargs)
    with pytest.raises(ScoreSDEError, match=name):
        NoiseConditionalClassifier(**args)


@pytest.mark.parametrize("arg", ["hidden=abc", "hidden=2.5", "depth=-1", "num_classes=3"])
def test_train_classifier_net_arg_is_one_line(tmp_path, capsys, arg):
    code = main(["train-classifier", "--data", "gmm", "--steps", "1", "--net-arg", arg, "--out",
                 str(tmp_path / "c.pt"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and arg.split("=")[0] in err[0]
    assert not (tmp_path / "c.pt").exists()


def _quality_classifier() -> QualityClassifier:
    torch.manual_seed(0)
    net = LeNet(1, 11, feature_dim=8).eval().requires_grad_(False)
    return QualityClassifier(net, "mnist", [1, 8, 8], [-1.0, 1.0], 0.9, reject_class=10)


def test_sample_quality_refuses_nan_samples_bad_thresholds_and_uint8():
    clf = _quality_classifier()
    x = torch.rand(6, 1, 8, 8, generator=gen()) * 2 - 1
    ref = FeatureStatistics(torch.zeros(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64), 100)
    good = sample_quality(clf, x, ref)
    assert math.isfinite(good.fld) and 0 <= good.confident_fraction <= 1
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sample_quality(clf, bad, ref)
    for threshold in (float("nan"), 2.0, 0.0, 1.0, -0.5, "0.9", True):
        with pytest.raises(OptionError, match="threshold"):
            sample_quality(clf, x, ref, threshold=threshold)
    with pytest.raises(DataError, match=r"floating-point images .*\[-1, 1\].*255"):
        sample_quality(clf, torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), ref)


def test_frechet_distance_refuses_what_is_not_a_covariance():
    m = torch.zeros(3, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert frechet_distance(m, eye, m + 1, 4 * eye) == pytest.approx(6.0)
    not_psd = torch.diag(torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64))
    with pytest.raises(DataError, match="positive semi-definite"):
        frechet_distance(m, not_psd, m, eye)
    with pytest.raises(DataError, match="symmetric"):
        frechet_distance(m, eye, m, eye + torch.triu(torch.ones(3, 3, dtype=torch.float64), 1))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(m * float("nan"), eye, m, eye)
    singular = torch.zeros(3, 3, dtype=torch.float64)  # fewer samples than features: PSD, not refused
    assert frechet_distance(m, singular, m, eye) == pytest.approx(3.0)


@pytest.mark.parametrize("w", [float("nan"), float("inf"), 1e300, -1e5, "2", True, torch.tensor([1.0, float("nan")]),
                               torch.tensor([1, 2]), torch.ones(2, 2)])
def test_guidance_weights_are_bounded(w):
    gmm = _mixture()
    with pytest.raises(OptionError, match=r"\bw\b"):
        G.classifier_free(gmm.conditional_score_fn(SDE), 0, w)
    with pytest.raises(OptionError, match="scale"):
        G.classifier_guided(std_normal, _linear_classifier, 0, scale=w)


def _mixture():
    from scoresde.exact import GaussianMixture

    return GaussianMixture([0.5, 0.5], torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5)


def _linear_classifier(x, t):
    return torch.stack([x[:, 0], -x[:, 0]], 1)


def test_guidance_bound_is_stated_and_allowed_weights_work():
    with pytest.raises(OptionError, match=r"\[-10000, 10000\]"):
        G.classifier_free(_mixture().conditional_score_fn(SDE), 0, 2e4)
    score = G.classifier_free(_mixture().conditional_score_fn(SDE), 0, torch.tensor([0.0, 1.0, 2.0]))
    x = scoresde.sample(SDE, score, (3, 2), "ddim", steps=4, generator=gen())
    assert bool(torch.isfinite(x).all())


# ---------------------------------------------------------------------- 7. raw torch errors become one-line errors
def test_classifier_free_errors_name_the_argument():
    cond = _mixture().conditional_score_fn(SDE)
    with pytest.raises(LabelError, match="y"):
        G.classifier_free(cond, 10**30, 1.0)
    with pytest.raises(LabelError, match="y"):
        G.classifier_free(cond, torch.tensor([0, 5]), 1.0)
    score = G.classifier_free(cond, 0, torch.tensor([1.0, 2.0]))  # two weights for a batch of three
    with pytest.raises(ScoreSDEError, match="w holds 2 weights"):
        scoresde.sample(SDE, score, (3, 2), "ddim", steps=2, generator=gen())
    wrong = G.classifier_free(lambda x, t, y: x[:, :1], 0, 1.0)
    with pytest.raises(ScoreSDEError, match="cond_score_fn"):
        scoresde.sample(SDE, wrong, (3, 2), "ddim", steps=2, generator=gen())


def test_classifier_guided_errors_name_the_argument():
    with pytest.raises(LabelError, match="y"):
        G.classifier_guided(std_normal, _linear_classifier, -3)
    guided = G.classifier_guided(std_normal, lambda x, t: torch.zeros(x.shape[0], 2, dtype=torch.long), 0)
    with pytest.raises(ScoreSDEError, match="floating-point logits"):
        scoresde.sample(SDE, guided, (3, 2), "ddim", steps=2, generator=gen())

    def detached(x, t):
        return _linear_classifier(x, t).detach()

    guided = G.classifier_guided(std_normal, detached, 0)
    with pytest.raises(OptionError, match="autograd graph"):
        scoresde.sample(SDE, guided, (3, 2), "ddim", steps=2, generator=gen())
    guided = G.classifier_guided(lambda x, t: x[:, :1], _linear_classifier, 0)
    with pytest.raises(ScoreSDEError, match="score_fn"):
        scoresde.sample(SDE, guided, (3, 2), "ddim", steps=2, generator=gen())


@pytest.mark.parametrize("mask", ["10", "abc", object(), torch.zeros(2, device="meta"), [[0, 1, 2]]])
def test_inpaint_mask_errors_are_mask_errors(mask):
    x = torch.zeros(3, 2)
    with pytest.raises(MaskError, match="mask"):
        scoresde.inpaint(SDE, std_normal, x, mask, steps=2, generator=gen())


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_particles="abc"), "num_particles"), (dict(num_particles=2.5), "num_particles"),
    (dict(steps=float("nan")), "steps"), (dict(ess_threshold="0.5"), "ess_threshold"),
    (dict(ess_threshold=float("nan")), "ess_threshold"), (dict(eps=float("nan")), "eps"),
    (dict(proposal=["twisted"]), "proposal"), (dict(generator=0), "generator"), (dict(mask="10"), "mask"),
    (dict(num_particles=10**12), "particles"),
])
def test_smc_inpaint_errors_name_the_argument(kwargs, name):
    args = dict(mask=torch.tensor([1.0, 0.0]), num_particles=2, steps=2)
    args.update(kwargs)
    mask = args.pop("mask")
    with pytest.raises(ScoreSDEError, match=name):
        scoresde.smc_inpaint(SDE, std_normal, torch.zeros(2, 2), mask, **args)


def test_huge_label_in_an_npz_is_a_label_error_before_allocation(tmp_path):
    from scoresde.data import get_dataset

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 2, 10**12]))
    with pytest.raises(DataError, match="label 1000000000000"):
        get_dataset(str(tmp_path / "d.npz"))
    code = main(["train-classifier", "--data", str(tmp_path / "d.npz"), "--steps", "1", "--out", str(tmp_path / "c.pt")])
    assert code == 1


# ---------------------------------------------------------------------- 8. edm at one step
def test_edm_refuses_one_step_with_the_reason():
    calls = []
    score = lambda x, t: calls.append(1) or -x  # noqa: E731
    with pytest.raises(OptionError, match=r"steps >= 2.*trapezoid"):
        scoresde.sample(SDE, score, (8, 2), "edm", steps=1, generator=gen())
    assert not calls


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "ipndm", "unipc"])
def test_one_step_of_the_other_few_step_solvers_is_the_denoised_mean(name):
    """One deterministic step from T on N(0, I) data returns about E[x_0 | x_T] = scale(T) x_T: a spread of about
    scale(T) (0.0067), well below the data's, never the prior's ~152 of an unscaled Heun step."""
    x = scoresde.sample(SDE, std_normal, (4000, 2), name, steps=1, generator=gen())
    scale_T = float(SDE.marginal_coeffs(torch.tensor([1.0]))[0])
    assert float(x.std()) < 5 * scale_T


def test_edm_from_two_steps_samples_the_data_scale():
    x = scoresde.sample(SDE, std_normal, (4000, 2), EDM(), steps=18, generator=gen())
    assert abs(float(x.std()) - 1.0) < 0.1


# ---------------------------------------------------------------------- seeds and classes on the command line
@pytest.mark.parametrize("spec", ["0-999999999999", "0:99999999999", f"{2**63}", f"{2**63 - 1}-{2**63 + 5}", "5-1", "a-b", "-3"])
def test_seed_ranges_are_bounded(spec):
    with pytest.raises(OptionError, match="seed"):
        parse_seed_range(spec)


def test_seed_range_parses():
    assert parse_seed_range("3-5") == range(3, 6) and parse_seed_range("3:5") == range(3, 5)
    assert parse_seed_range("7") == range(7, 8)


def test_as_seeds_of_a_huge_range_is_refused_without_building_it():
    from scoresde.noise import as_seeds

    with pytest.raises(OptionError, match="seeds"):
        as_seeds(range(10**12))
    assert as_seeds(range(2, 8, 3)).tolist() == [2, 5]


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "2.5", "nan"])
def test_class_option_is_range_checked_at_parse(value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["sample", "--class", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code in (1, 2) and len(err) == 1 and "--class" in err[0]


# ---------------------------------------------------------------------- command-line refusals before work
def test_broken_png_input_is_one_line(tmp_path):
    from scoresde.cli.sample import read_input

    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="not a readable PNG"):
        read_input(str(png), "input", (1, 8, 8), (-1.0, 1.0))


def test_train_classifier_refuses_before_training(tmp_path, capsys):
    folder = tmp_path / "existing.pt"
    folder.mkdir()
    assert main(["train-classifier", "--data", "gmm", "--steps", "1", "--out", str(folder)]) == 1
    assert "is a folder" in capsys.readouterr().err
    code = main(["train-classifier", "--checkpoint", str(tmp_path / "run"), "--sde", "ve", "--out", str(tmp_path / "c.pt")])
    assert code == 1 and "conflict with --checkpoint" in capsys.readouterr().err


def test_p_uncond_without_conditional_is_refused(tmp_path, capsys):
    code = main(["train", "--data", "moons", "--p-uncond", "0.2", "--steps", "1", "--out", str(tmp_path / "r")])
    assert code == 1 and "--conditional" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- 10. an SDE with a prior of its own under seeds
class _ShiftedPrior(scoresde.VPSDE):
    def prior_sample(self, shape, generator=None, device=None, dtype=None):
        return super().prior_sample(shape, generator, device, dtype) + 3.0


class _ShiftedPriorFromNormal(_ShiftedPrior):
    def prior_from_normal(self, z):
        return z + 3.0


def test_prior_of_its_own_is_refused_or_honoured_under_seeds():
    with pytest.raises(IncompatibleSDEError, match="prior_from_normal"):
        scoresde.solve(_ShiftedPrior(), std_normal, (2, 2), "ddim", steps=2, seeds=[1, 2], record_trajectory=True)
    res = scoresde.solve(_ShiftedPriorFromNormal(), std_normal, (64, 2), "ddim", steps=2, seeds=range(64),
                         record_trajectory=True)
    assert abs(float(res.trajectory[0].mean()) - 3.0) < 0.5


# ---------------------------------------------------------------------- the remaining silent coercions of the sweep
@pytest.mark.parametrize("steps", [10**7, 10**30, float("inf")])
def test_steps_are_bounded(steps):
    with pytest.raises(OptionError, match="steps must be an integer >= 1"):
        scoresde.sample(SDE, std_normal, (2, 2), "ddim", steps=steps)


@pytest.mark.parametrize("kwargs", [dict(beta_max=1e300), dict(beta_max=1e4), dict(beta_min="0.1")])
def test_vp_schedule_is_bounded(kwargs):
    with pytest.raises(OptionError, match="beta"):
        scoresde.VPSDE(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(sigma_max=1e300), dict(sigma_min=1e-300, sigma_max=10.0)])
def test_ve_schedule_is_bounded(kwargs):
    with pytest.raises(OptionError, match="sigma"):
        scoresde.VESDE(**kwargs)


def test_meta_tensors_and_devices_are_refused():
    with pytest.raises(OptionError, match="meta"):
        scoresde.sample(SDE, std_normal, (2, 2), "ddim", steps=2, device="meta")
    with pytest.raises(OptionError, match="meta"):
        scoresde.sample(SDE, std_normal, None, "ddim", steps=2, x_init=torch.zeros(2, 2, device="meta"))
    with pytest.raises(DataError, match="x_init"):
        scoresde.sample(SDE, std_normal, None, "ddim", steps=2, x_init=torch.full((2, 2), float("nan")))


@pytest.mark.parametrize("make,name", [
    (lambda: UniPC(order=2.5), "order"), (lambda: UniPC(variant=["bh1"]), "variant"),
    (lambda: DPMSolverPP(order=True), "order"), (lambda: IPNDM(max_order=5), "max_order"),
    (lambda: scoresde.SOLVERS["ode"](rtol="1e-3"), "rtol"), (lambda: scoresde.SOLVERS["ddim"](eta="0.5"), "eta"),
    (lambda: scoresde.SOLVERS["torchsde"](method=["euler"]), "method"), (lambda: EDM(s_tmax=float("nan")), "s_tmax"),
    (lambda: EDM(s_churn=-1), "s_churn"), (lambda: scoresde.SOLVERS["ode"](trace=["exact"]), "trace"),
])
def test_solver_constructors_validate(make, name):
    with pytest.raises(OptionError, match=name):
        make()


def test_inpaint_resample_is_a_bounded_count():
    for bad in ("abc", 2.5, float("nan"), 10**6):
        with pytest.raises(OptionError, match="resample"):
            scoresde.inpaint(SDE, std_normal, torch.zeros(2, 2), torch.tensor([1, 0]), steps=2, resample=bad)


def test_build_network_event_shape_is_not_truncated():
    with pytest.raises(ScoreSDEError, match="event_shape"):
        build_network("mlp", (2.5,))
    with pytest.raises(ScoreSDEError, match="event_shape"):
        build_network("mlp", "22")
    with pytest.raises(OptionError, match="depth"):
        build_network("mlp", (2,), depth=10**9)


# ---------------------------------------------------------------------- command-line values found by the battery
@pytest.mark.parametrize("argv,option", [
    (["train", "--threads=--"], "--threads"), (["sample", "--method", "rk99"], "--method"),
    (["sample", "--predictor", "ancestal"], "--predictor"), (["train-classifier", "--device", "gpu"], "--device"),
])
def test_cli_values_are_typed_at_parse(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code in (1, 2) and len(err) == 1 and option in err[0]


def test_resolve_device_refuses_malformed_names():
    from scoresde.config import ConfigError
    from scoresde.distributed import resolve_device

    for name in ("cuda:99999999999999999999", " cpu", "gpu", 0):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(name)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_mask_of_a_tiny_float_is_not_rounded_to_zero():
    # torch.as_tensor(1e-300) is float32 0.0: the mask used to be read as "unknown everywhere"
    with pytest.raises(MaskError, match="0 and 1"):
        scoresde.inpaint(SDE, std_normal, torch.zeros(2, 2), 1e-300, steps=2, generator=gen())


def test_numpy_booleans_are_not_numbers():
    with pytest.raises(OptionError, match="eta"):
        scoresde.SOLVERS["ddim"](eta=np.True_)


def test_likelihood_integral_counts_are_converted_and_bounded():
    x = torch.zeros(2, 2, dtype=torch.float64)
    res = scoresde.log_likelihood(SDE, std_normal, x, method="rk4", steps=3.0, chunk_size=1.0)
    assert bool(torch.isfinite(res.log_prob).all())
    for kw in (dict(steps=10**7), dict(max_steps=10**30), dict(n_probes=10**5, trace="hutchinson")):
        with pytest.raises(OptionError, match=next(iter(kw))):
            scoresde.log_likelihood(SDE, std_normal, x, **({"method": "rk4"} if "steps" in kw else {}), **kw)


def test_bits_per_dim_levels_and_range():
    k = torch.tensor([[0, 3], [2, 1]])
    res = scoresde.bits_per_dim(SDE, std_normal, k, levels=4.0, method="rk4", steps=2)
    assert bool(torch.isfinite(res.bits_per_dim).all())
    with pytest.raises(OptionError, match="levels"):
        scoresde.bits_per_dim(SDE, std_normal, k, levels=10**400, method="rk4", steps=2)
    with pytest.raises(OptionError, match="data_range"):
        scoresde.bits_per_dim(SDE, std_normal, k, levels=4, data_range=(-1e308, 1e308), method="rk4", steps=2)


def test_tiny_eps_is_refused_before_a_log_of_zero():
    for solver in ("annealed_langevin", "edm", "dpmpp_2m"):
        with pytest.raises(TimeRangeError, match="eps"):
            scoresde.sample(SDE, std_normal, (2, 2), solver, steps=3, eps=5e-324)
    with pytest.raises(TimeRangeError, match="float32"):  # 1e-300 is 0 in float32: the last two times merge
        scoresde.sample(SDE, std_normal, (2, 2), "ddim", steps=3, eps=1e-300, grid="uniform")
