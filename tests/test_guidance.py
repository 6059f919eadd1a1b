"""Guidance against closed forms: Gaussian-mixture data with the component as the class.

The mixture has exact conditional scores ``grad log p_t(x | y)`` and an exact noisy posterior
``p(y | x_t)``, so the conditional route and the classifier route must reproduce each component.
Tolerances are statistical (``Z`` standard errors from the sample size), as in ``test_solvers.py``.
"""

import math

import pytest
import torch

import scoresde
from scoresde import VPSDE
from scoresde import guidance as G
from scoresde.errors import LabelError, ShapeError
from scoresde.exact import GaussianMixture
from scoresde.nets import MLP, UNet

Z = 5.0
SDE = VPSDE()
#: Three overlapping components in 2-D: p(y | x) is far from one-hot, so conditioning matters.
MIX = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([[-0.6, 0.0], [0.6, 0.2], [0.0, -0.8]], dtype=torch.float64),
    torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64),
)
STEPS = 400


def component_prior_draw(k: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Exact draw of component ``k`` diffused to ``T`` (the test checks guidance, not the prior mismatch)."""
    scale, std = SDE.marginal_coeffs(torch.ones(1, dtype=torch.float64))
    sd = torch.sqrt(scale**2 * MIX.stds[k] ** 2 + std**2)
    return scale * MIX.means[k] + sd * torch.randn(n, 2, generator=g, dtype=torch.float64)


def assert_component(x: torch.Tensor, k: int) -> None:
    """Sample mean and per-coordinate variance of ``x`` within ``Z`` standard errors of component ``k``."""
    n = x.shape[0]
    var = MIX.stds[k] ** 2
    z_mean = (x.mean(0) - MIX.means[k]) / torch.sqrt(var / n)
    z_var = (x.var(0) - var) / (var * math.sqrt(2 / (n - 1)))
    assert z_mean.abs().max() < Z, f"component {k}: mean off by {z_mean.tolist()} standard errors"
    assert z_var.abs().max() < Z, f"component {k}: variance off by {z_var.tolist()} standard errors"


def _sample(score_fn, x_init, seed=0):
    return scoresde.sample(SDE, score_fn, x_init.shape, solver="ancestral", steps=STEPS,
                           generator=torch.Generator().manual_seed(seed), x_init=x_init)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_conditional_reproduces_each_component(k):
    n = 1000
    x_init = component_prior_draw(k, n, torch.Generator().manual_seed(10 + k))
    x = _sample(G.conditional(MIX.conditional_score_fn(SDE), k), x_init)
    assert_component(x, k)


def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_score():
    """Bayes: grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y), pointwise, under no_grad too."""
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64).clamp_min(0.01)
    y = torch.randint(0, 3, (64,), generator=g)
    guided = G.classifier_guided(MIX.score_fn(SDE), MIX.classifier(SDE), y, scale=1.0)
    with torch.no_grad():
        s = guided(x, t)
    torch.testing.assert_close(s, MIX.component_score(x, y, SDE, t), rtol=1e-9, atol=1e-9)


def test_classifier_guided_sampling_reproduces_the_component_and_agrees_with_conditional():
    n, k = 1000, 1
    x_init = component_prior_draw(k, n, torch.Generator().manual_seed(3))
    x_cls = _sample(G.classifier_guided(MIX.score_fn(SDE), MIX.classifier(SDE), k, scale=1.0), x_init, seed=5)
    x_cond = _sample(G.conditional(MIX.conditional_score_fn(SDE), k), x_init, seed=5)
    assert_component(x_cls, k)
    torch.testing.assert_close(x_cls, x_cond, rtol=0, atol=1e-6)  # same noise, same scores: the same samples


def test_classifier_free_at_zero_is_conditional_and_one_batched_call():
    cond = MIX.conditional_score_fn(SDE)
    calls = []

    def counted(x, t, y):
        calls.append(x.shape[0])
        return cond(x, t, y)

    counted.accepts_null_label = True
    counted.num_classes = 3
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64).clamp_min(0.01)
    y = torch.randint(0, 3, (32,), generator=g)
    torch.testing.assert_close(G.classifier_free(counted, y, 0.0)(x, t), G.conditional(cond, y)(x, t), rtol=0, atol=0)
    assert calls == [64]  # one call on the doubled batch
    # the two-call fallback (a function without null labels) gives the same guided score
    plain = lambda x, t, y: cond(x, t, y)  # noqa: E731
    for w in (0.5, 3.0):
        ref = (1 + w) * MIX.component_score(x, y, SDE, t) - w * MIX.score(x, SDE, t)
        torch.testing.assert_close(G.classifier_free(cond, y, w)(x, t), ref)
        torch.testing.assert_close(G.classifier_free(plain, y, w)(x, t), ref)


def test_classifier_free_guidance_concentrates_samples():
    """Larger w puts the samples where p(y | x) is higher: mean p(y | x_0) grows strictly with w.

    Measured (benchmarks/conditional_bench.py, n = 2000, the same setting): mean p(y | x) 0.824 at w = 0,
    0.952 at w = 1, 0.993 at w = 4; the spread along the direction of the other classes shrinks (0.50 -> 0.38).
    """
    n, k = 1000, 0
    x_init = component_prior_draw(k, n, torch.Generator().manual_seed(7))
    cond = MIX.conditional_score_fn(SDE)
    means, ses = [], []
    for w in (0.0, 1.0, 4.0):
        x = _sample(G.classifier_free(cond, k, w), x_init, seed=11)
        p = MIX.responsibilities(x)[:, k]
        means.append(float(p.mean()))
        ses.append(float(p.std()) / math.sqrt(n))
    # exact at w = 0: E_{x ~ p(x | y)} p(y | x), computed on fresh exact draws
    xs = MIX.means[k] + MIX.stds[k] * torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact0 = float(MIX.responsibilities(xs)[:, k].mean())
    assert abs(means[0] - exact0) < Z * ses[0], (means[0], exact0)
    for (a, sa), (b, sb) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert b - a > Z * math.hypot(sa, sb), f"mean p(y|x) did not grow with w: {means}"


# --------------------------------------------------------------------------- bad input
def test_label_errors_name_the_problem():
    cond = MIX.conditional_score_fn(SDE)
    with pytest.raises(LabelError, match=r"\[0, 3\)"):
        G.conditional(cond, 3)
    with pytest.raises(LabelError, match=r"\[0, 3\)"):
        G.classifier_free(cond, torch.tensor([0, -1]), 1.0)
    with pytest.raises(LabelError, match="integer"):
        G.conditional(cond, torch.tensor([0.5]))
    net = scoresde.NetworkScore(MLP(2, hidden=8, depth=1), SDE)
    with pytest.raises(LabelError, match="without classes"):
        G.conditional(net, 0)
    with pytest.raises(LabelError, match="no classes"):
        net(torch.zeros(2, 2), torch.ones(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ShapeError, match="batch"):
        G.conditional(cond, torch.tensor([0, 1, 2]))(torch.zeros(2, 2), torch.ones(2))


def test_classifier_output_must_be_batch_by_classes():
    bad = lambda x, t: x.sum(1)  # noqa: E731  ([B], not [B, K])
    guided = G.classifier_guided(MIX.score_fn(SDE), bad, 0)
    with pytest.raises(ShapeError, match=r"\[B, K\]"):
        guided(torch.zeros(4, 2, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    few = lambda x, t: torch.zeros(x.shape[0], 2, dtype=x.dtype)  # noqa: E731
    with pytest.raises(LabelError, match="2 classes"):
        G.classifier_guided(MIX.score_fn(SDE), few, 2)(torch.zeros(4, 2), torch.ones(4))


# --------------------------------------------------------------------------- networks and the loss
@pytest.mark.parametrize("make", [lambda: MLP(4, hidden=16, depth=1, num_classes=3),
                                  lambda: UNet(1, 8, channels=8, channel_mults=(1, 2), num_classes=3)])
def test_class_conditional_networks_have_a_null_label(make):
    torch.manual_seed(0)
    net = make().eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised output layers would hide the labels
            p.add_(0.1 * torch.randn_like(p))
    shape = (3, 4) if isinstance(net, MLP) else (3, 1, 8, 8)
    x, t = torch.randn(shape), torch.rand(3)
    none = net(x, t)
    torch.testing.assert_close(net(x, t, torch.full((3,), -1)), none)
    labelled = net(x, t, torch.tensor([0, 1, 2]))
    assert not torch.allclose(labelled, none)
    assert not torch.allclose(labelled[0], net(x, t, torch.tensor([1, 1, 2]))[0])
    assert net.config["num_classes"] == 3 and type(net)(**net.config).num_classes == 3
    with pytest.raises(LabelError, match=r"\[0, 3\)"):
        net(x, t, torch.tensor([0, 1, 3]))
    with pytest.raises(LabelError, match="shape"):
        net(x, t, torch.tensor([0, 1]))
    score = scoresde.NetworkScore(net, SDE)
    assert score.num_classes == 3 and score.accepts_null_label
    torch.testing.assert_close(score(x, t, torch.tensor([0, 1, 2])), score(x, t, torch.tensor([0, 1, 2])))


def test_unconditional_network_config_is_unchanged():
    assert "num_classes" not in MLP(2).config and "num_classes" not in UNet(1, 8, channel_mults=(1, 2)).config


def test_dsm_loss_label_dropout():
    from scoresde.losses import dsm_loss

    seen = []

    class Spy(torch.nn.Module):
        num_classes = 4

        def forward(self, x, t, y=None):
            seen.append(y)
            return torch.zeros_like(x)

    x0 = torch.randn(4000, 2)
    y = torch.randint(0, 4, (4000,), generator=torch.Generator().manual_seed(0))
    dsm_loss(SDE, Spy(), x0, y=y, p_uncond=0.3, generator=torch.Generator().manual_seed(1))
    dropped = float((seen[-1] == G.NULL_LABEL).double().mean())
    assert abs(dropped - 0.3) < Z * math.sqrt(0.3 * 0.7 / 4000)
    kept = seen[-1] != G.NULL_LABEL
    assert torch.equal(seen[-1][kept], y[kept])
    # p_uncond = 1: every label is the null label; t and noise are drawn first, so the loss equals y = None's
    l1 = dsm_loss(SDE, Spy(), x0, y=y, p_uncond=1.0, generator=torch.Generator().manual_seed(1))
    l0 = dsm_loss(SDE, Spy(), x0, generator=torch.Generator().manual_seed(1))
    assert bool((seen[-2] == G.NULL_LABEL).all()) and torch.equal(l1, l0)
    with pytest.raises(LabelError):
        dsm_loss(SDE, Spy(), x0, y=y + 1)
    with pytest.raises(ValueError, match="p_uncond"):
        dsm_loss(SDE, Spy(), x0, p_uncond=0.1)


# --------------------------------------------------------------------------- the noise-conditional classifier
def test_trained_classifier_approaches_the_exact_noisy_posterior():
    """A short training run brings the cross-entropy on x_t to within 0.03 nats of the Bayes-optimal one
    (the exact p(y | x_t)); measured: 0.903 vs 0.900 nats after 600 steps (the test trains 300)."""
    from scoresde.classifier import NoiseConditionalClassifier, classifier_loss, train_classifier

    mix = GaussianMixture(MIX.weights.float(), MIX.means.float(), MIX.stds.float())
    x, y = mix.sample(20000, generator=torch.Generator().manual_seed(0), return_labels=True)
    torch.manual_seed(0)
    clf = NoiseConditionalClassifier((2,), 3, hidden=64, depth=2)
    train_classifier(clf, SDE, x, y, steps=300, batch_size=256, generator=torch.Generator().manual_seed(1))
    xt, yt = mix.sample(20000, generator=torch.Generator().manual_seed(5), return_labels=True)
    g = torch.Generator().manual_seed(2)
    t = 1e-5 + (1 - 1e-5) * torch.rand(20000, generator=g)
    noise = torch.randn(20000, 2, generator=g)
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(clf(*_noisy(xt, t, noise)), yt, reduction="none")
        ce_bayes = torch.nn.functional.cross_entropy(mix.classifier(SDE)(*_noisy(xt, t, noise)), yt, reduction="none")
        assert torch.allclose(classifier_loss(SDE, clf, xt, yt, t=t, noise=noise), ce.mean())
    d = ce - ce_bayes
    se = float(d.std()) / math.sqrt(d.numel())
    assert -Z * se < float(d.mean()) < 0.03, (float(ce.mean()), float(ce_bayes.mean()))


def _noisy(x0, t, noise):
    scale, std = SDE.marginal_coeffs(t)
    return scale[:, None] * x0 + std[:, None] * noise, t


def test_classifier_file_round_trip(tmp_path):
    from scoresde.classifier import NoiseConditionalClassifier, load_classifier, save_classifier
    from scoresde.errors import CheckpointError

    torch.manual_seed(0)
    clf = NoiseConditionalClassifier((1, 8, 8), 4, channels=8, channel_mults=(1, 2)).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    save_classifier(tmp_path / "c.pt", clf, "vp", {"beta_max": 20.0})
    back, sde_info = load_classifier(tmp_path / "c.pt")
    assert sde_info == {"name": "vp", "kwargs": {"beta_max": 20.0}}
    torch.testing.assert_close(back(x, t), clf(x, t))
    assert back(x, t).shape == (3, 4)
    (tmp_path / "bad.pt").write_bytes(b"nonsense")
    with pytest.raises(CheckpointError):
        load_classifier(tmp_path / "bad.pt")
