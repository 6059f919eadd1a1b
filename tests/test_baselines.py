"""The baselines (VAE, RealNVP, DCGAN): closed-form checks of their likelihoods, training loop and files."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from scoresde.baselines import (
    BASELINE_KIND,
    BASELINES,
    DCGAN,
    ConvVAE,
    RealNVP,
    discretized_logistic_log_prob,
    fit,
    gaussian_elbo,
    gaussian_entropy,
    load_baseline,
    num_parameters,
    save_baseline,
)
from scoresde.baselines.realnvp import squeeze2x2, unsqueeze2x2
from scoresde.checkpoint import save_artifact
from scoresde.errors import CheckpointError, DataError, OptionError, ScoreSDEError, ShapeError

torch.set_num_threads(1)

SMALL = (1, 8, 8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def levels(n, shape=SMALL, seed=0):
    return torch.randint(0, 256, (n, *shape), generator=gen(seed))


# ------------------------------------------------------------------ discretized logistic


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_probabilities_sum_to_one(dtype):
    g = gen(1)
    loc = (torch.rand(500, generator=g, dtype=torch.float64) * 3 - 1.5).to(dtype)
    log_scale = (torch.rand(500, generator=g, dtype=torch.float64) * 9 - 7).to(dtype)  # s from e^-7 to e^2
    k = torch.arange(256).reshape(256, 1)
    logp = discretized_logistic_log_prob(k, loc, log_scale)  # [256, 500]
    assert logp.shape == (256, 500) and bool(torch.isfinite(logp).all())
    total = torch.logsumexp(logp.double(), dim=0).exp()
    assert (total - 1).abs().max().item() < 1e-5


def test_discretized_logistic_matches_the_cdf_difference():
    g = gen(2)
    loc = torch.rand(300, generator=g, dtype=torch.float64) * 2 - 1
    log_scale = torch.rand(300, generator=g, dtype=torch.float64) * 3 - 4
    k = torch.randint(0, 256, (300,), generator=g)
    centre = -1 + 2 * k.double() / 255
    a, b = (centre + 1 / 255 - loc) / log_scale.exp(), (centre - 1 / 255 - loc) / log_scale.exp()
    a = torch.where(k == 255, torch.full_like(a, math.inf), a)
    b = torch.where(k == 0, torch.full_like(b, -math.inf), b)
    # the difference of two CDF values, written with the survival function right of the mode so neither tail cancels
    ref = torch.where(centre < loc, torch.log(torch.sigmoid(a) - torch.sigmoid(b)), torch.log(torch.sigmoid(-b) - torch.sigmoid(-a)))
    assert torch.allclose(discretized_logistic_log_prob(k, loc, log_scale), ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the ELBO on a linear-Gaussian model


class LinearGaussian:
    """z ~ N(0, I_k), x | z ~ N(W z + b, s^2 I_D) with orthogonal columns of W (so the exact posterior is diagonal)."""

    def __init__(self, D=5, d=(1.5, 0.8, 0.3), s=0.6):
        g = gen(3)
        Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q
        self.d = torch.tensor(d, dtype=torch.float64)
        self.W = Q[:, : len(d)] * self.d
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.s, self.D, self.k = s, D, len(d)
        self.x = torch.randn(D, generator=g, dtype=torch.float64) * 1.5

    def log_px_given_z(self, x, z):  # [N, D], [N, k] -> [N]
        return Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(-1)

    def log_px(self):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.D, dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(self.x).item()

    def elbo_closed_form(self, m, v):
        """E_q[log p(x|z)] - KL(q || p) for q = N(m, diag(v))."""
        r = self.x - self.W @ m - self.b
        recon = -0.5 * self.D * math.log(2 * math.pi * self.s**2) - (r @ r + (self.W**2 @ v).sum()) / (2 * self.s**2)
        kl = 0.5 * (v + m**2 - 1 - v.log()).sum()
        return (recon - kl).item()

    def posterior(self):
        v = 1 / (1 + self.d**2 / self.s**2)
        return v * (self.W.T @ (self.x - self.b)) / self.s**2, v

    def some_encoder(self):
        g = gen(4)
        A = torch.randn(self.k, self.D, generator=g, dtype=torch.float64) * 0.3
        c = torch.randn(self.k, generator=g, dtype=torch.float64) * 0.2
        v = torch.rand(self.k, generator=g, dtype=torch.float64) * 0.5 + 0.1
        return A @ self.x + c, v


def _run(model, m, v, R, n_samples=1, kl="analytic", seed=5):
    x = model.x.expand(R, -1)
    mu, log_std = m.expand(R, -1), (0.5 * v.log()).expand(R, -1)
    return gaussian_elbo(x, mu, log_std, model.log_px_given_z, n_samples=n_samples, generator=gen(seed), kl=kl)


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_gaussian_elbo_matches_the_closed_form_within_standard_errors(kl):
    model = LinearGaussian()
    m, v = model.some_encoder()
    R = 20000
    res = _run(model, m, v, R, kl=kl)
    assert res.elbo.shape == res.recon.shape == res.kl.shape == (R,)
    assert torch.allclose(res.elbo, res.recon - res.kl)
    exact = model.elbo_closed_form(m, v)
    se = res.elbo.std().item() / math.sqrt(R)
    assert abs(res.elbo.mean().item() - exact) < 4 * se
    # n_samples draws per image average: one image, R draws, the same standard error
    one = gaussian_elbo(model.x[None], m[None], 0.5 * v.log()[None], model.log_px_given_z, n_samples=R,
                        generator=gen(6), kl=kl)
    assert one.elbo.shape == (1,) and abs(one.elbo.item() - exact) < 4 * se


def test_gaussian_elbo_with_the_exact_posterior_is_log_px():
    model = LinearGaussian()
    m, v = model.posterior()
    log_px = model.log_px()
    assert abs(model.elbo_closed_form(m, v) - log_px) < 1e-9  # the closed form itself
    res = _run(model, m, v, 64, n_samples=3, kl="sampled")  # log p(x, z) - log q(z|x) = log p(x) for every z
    assert (res.elbo - log_px).abs().max().item() < 1e-6
    res = _run(model, m, v, 20000, kl="analytic")
    assert abs(res.elbo.mean().item() - log_px) < 4 * res.elbo.std().item() / math.sqrt(20000)


def test_gaussian_elbo_rejects_bad_arguments():
    model = LinearGaussian()
    m, v = model.some_encoder()
    with pytest.raises(OptionError, match="kl"):
        _run(model, m, v, 2, kl="nope")
    with pytest.raises(OptionError, match="n_samples"):
        _run(model, m, v, 2, n_samples=0)
    with pytest.raises(ShapeError, match="log_std"):
        gaussian_elbo(model.x[None], m[None], v[None, :2], model.log_px_given_z)
    with pytest.raises(ShapeError, match="log_px_given_z"):
        gaussian_elbo(model.x[None], m[None], v[None], lambda x, z: z.sum())


# ------------------------------------------------------------------ ConvVAE


def test_vae_shapes_terms_and_bits_per_dim():
    vae = ConvVAE(SMALL, latent_channels=3, hidden=8)
    assert vae.latent_shape == (3, 2, 2)
    x = levels(5)
    mu, log_std = vae.encode(x)
    assert mu.shape == log_std.shape == (5, 3, 2, 2)
    p = vae.decode(mu)
    assert p.loc.shape == p.log_scale.shape == (5, *SMALL)
    assert vae.log_px_given_z(x, mu).shape == (5,)
    res = vae.elbo(x, gen(1), n_samples=2)
    assert res.elbo.shape == (5,) and torch.allclose(res.elbo, res.recon - res.kl) and bool((res.kl >= 0).all())
    # levels and the same images in [-1, 1] give the same numbers; bpd = -elbo / (D ln 2)
    x_float = -1 + 2 * x.float() / 255
    res_f = vae.elbo(x_float, gen(1), n_samples=2)
    assert torch.allclose(res.elbo, res_f.elbo)
    bpd = vae.bits_per_dim(x, gen(1), n_samples=2)
    assert torch.allclose(bpd, -res.elbo / (64 * math.log(2)))
    assert bool(((bpd > 0) & (bpd < 16)).all())
    # the pieces of the latent-SDE bound: KL = -H[q] - E_q[log N(z; 0, I)]
    d = mu[0].numel()
    expected_kl = -gaussian_entropy(log_std) + 0.5 * (mu**2 + (2 * log_std).exp()).flatten(1).sum(1) + 0.5 * d * math.log(2 * math.pi)
    assert torch.allclose(vae.elbo(x, gen(2)).kl, expected_kl, atol=1e-5)
    assert torch.allclose(gaussian_entropy(log_std), Normal(mu, log_std.exp()).entropy().flatten(1).sum(1), atol=1e-5)


def test_vae_sampling_and_input_errors():
    vae = ConvVAE(SMALL, hidden=8)
    s = vae.sample(4, gen(7))
    assert s.shape == (4, *SMALL) and s.min() >= -1 and s.max() <= 1
    assert torch.equal(s, vae.sample(4, gen(7)))
    with pytest.raises(DataError, match="8-bit"):
        vae.elbo(torch.full((2, *SMALL), 0.001))
    with pytest.raises(DataError, match="levels"):
        vae.elbo(torch.full((2, *SMALL), 300))
    with pytest.raises(ShapeError, match="x must have shape"):
        vae.elbo(levels(2, (1, 4, 4)))
    with pytest.raises(OptionError, match="decoder"):
        ConvVAE(SMALL, decoder="gaussian")
    with pytest.raises(OptionError, match="image_shape"):
        ConvVAE((1, 30, 30))
    with pytest.raises(OptionError, match="latent_channels"):
        ConvVAE(SMALL, latent_channels=0)
    with pytest.raises(OptionError, match="hidden"):
        ConvVAE(SMALL, hidden=2.5)


def test_bernoulli_vae_needs_binary_images():
    vae = ConvVAE(SMALL, hidden=8, decoder="bernoulli")
    binary = 255 * (levels(3) > 127).long()
    assert vae.elbo(binary, gen()).elbo.shape == (3,)
    assert vae.decode(vae.encode(binary)[0]).log_scale is None
    with pytest.raises(DataError, match="binary"):
        vae.elbo(levels(3))


# ------------------------------------------------------------------ RealNVP


def _randomise(model, scale=0.2, seed=8):
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_squeeze_is_a_permutation_with_an_inverse():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    y = squeeze2x2(x)
    assert y.shape == (1, 8, 2, 3) and torch.equal(unsqueeze2x2(y), x)
    assert torch.equal(y[0, :4, 0, 0], torch.tensor([0.0, 1, 6, 7], dtype=torch.float64))  # one 2x2 block


@pytest.mark.parametrize("shape,num_scales", [((1, 4, 4), 2), ((2, 8, 8), 3)])
def test_realnvp_log_det_matches_the_autograd_jacobian(shape, num_scales):
    nvp = _randomise(RealNVP(shape, num_scales=num_scales, hidden=6, num_blocks=1).double())
    u = torch.rand(1, *shape, generator=gen(9), dtype=torch.float64) * 0.9 + 0.05
    D = u.numel()
    J = torch.autograd.functional.jacobian(lambda v: nvp(v.reshape(1, *shape))[0].reshape(D), u.reshape(D))
    sign, logabsdet = torch.linalg.slogdet(J)
    _, log_det = nvp(u)
    assert sign.item() > 0
    assert abs(log_det.item() - logabsdet.item()) <= 1e-6 * abs(logabsdet.item())


def test_realnvp_inverse_undoes_forward():
    nvp = _randomise(RealNVP(hidden=8, num_blocks=1), scale=0.05)
    u = torch.rand(3, 1, 28, 28, generator=gen(10))
    z, _ = nvp(u)
    assert (nvp.inverse(z) - u).abs().max().item() < 1e-5
    nvp3 = _randomise(RealNVP(SMALL, num_scales=3, hidden=8, num_blocks=1).double(), scale=0.05)
    z = torch.randn(4, *SMALL, generator=gen(11), dtype=torch.float64)
    assert (nvp3(nvp3.inverse(z))[0] - z).abs().max().item() < 1e-8


def test_fresh_realnvp_is_the_logit_transform_of_a_standard_normal():
    nvp = RealNVP(SMALL, num_scales=2, hidden=8, num_blocks=1, alpha=0.05).double()
    u = torch.rand(6, *SMALL, generator=gen(12), dtype=torch.float64)
    a = 0.05
    p = a + (1 - 2 * a) * u
    y = torch.log(p / (1 - p))
    closed = (Normal(0.0, 1.0).log_prob(y) + math.log(1 - 2 * a) - torch.log(p * (1 - p))).flatten(1).sum(1)
    assert torch.allclose(nvp.log_prob(u), closed, rtol=0, atol=1e-10)
    z, _ = nvp(u)
    assert torch.allclose(z, y, atol=1e-12)  # the squeezes and factoring put every value back where it was
    # bits/dim from the same dequantization draws
    k = levels(6, seed=13)
    u_k = (k.double() + torch.rand(k.shape, generator=gen(14), dtype=torch.float64)) / 256
    p = a + (1 - 2 * a) * u_k
    logp = (Normal(0.0, 1.0).log_prob(torch.log(p / (1 - p))) + math.log(1 - 2 * a) - torch.log(p * (1 - p))).flatten(1).sum(1)
    expected = -(logp - 64 * math.log(256)) / (64 * math.log(2))
    assert torch.allclose(nvp.bits_per_dim(k, gen(14)), expected, atol=1e-10)
    assert torch.allclose(nvp.bits_per_dim(-1 + 2 * k.double() / 255, gen(14)), expected, atol=1e-10)
    # temperature 0 decodes z = 0: u = 1/2, the middle of [-1, 1]
    assert nvp.sample(2, gen(), temperature=0.0).abs().max().item() < 1e-12


def test_realnvp_bits_per_dim_at_init_is_finite_and_sane():
    nvp = RealNVP()
    bpd = nvp.bits_per_dim(levels(4, (1, 28, 28)), gen(15))
    assert bpd.shape == (4,) and bool(torch.isfinite(bpd).all()) and bool(((bpd > 4) & (bpd < 16)).all())
    s = nvp.sample(3, gen(16))
    assert s.shape == (3, 1, 28, 28) and s.min() >= -1 and s.max() <= 1 and torch.equal(s, nvp.sample(3, gen(16)))


def test_realnvp_errors():
    nvp = RealNVP(SMALL, hidden=4, num_blocks=1)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        nvp.log_prob(torch.full((1, *SMALL), -0.5))
    with pytest.raises(OptionError, match="image_shape"):
        RealNVP((1, 28, 28), num_scales=4)
    with pytest.raises(OptionError, match="alpha"):
        RealNVP(alpha=0.5)
    with pytest.raises(OptionError, match="temperature"):
        nvp.sample(1, temperature=-1)


# ------------------------------------------------------------------ DCGAN


def test_dcgan_shapes_and_reproducible_sampling():
    gan = DCGAN(SMALL, latent_dim=8, width=8)
    z = torch.randn(5, 8, generator=gen())
    img = gan.generate(z)
    assert img.shape == (5, *SMALL) and img.abs().max() <= 1
    assert gan.discriminate(img).shape == (5,)
    stats = {k: v.clone() for k, v in gan.state_dict().items()}
    gan.train()
    a, b = gan.sample(4, gen(17)), gan.sample(4, gen(17))
    assert torch.equal(a, b) and not torch.equal(a, gan.sample(4, gen(18)))
    assert gan.training and all(torch.equal(v, gan.state_dict()[k]) for k, v in stats.items())  # no side effects


def test_dcgan_train_step_lowers_the_discriminator_loss_on_a_separable_batch():
    gan = DCGAN(SMALL, latent_dim=8, width=8)
    opt_g, opt_d = gan.configure_optimizers(lr=1e-3)
    x = torch.ones(16, *SMALL)  # white images; fresh G draws grey ones
    gan.train()
    z = torch.randn(16, 8, generator=gen(19))
    with torch.no_grad():
        fake = gan.generate(z)
        before = gan.discriminator_loss(x, fake).item()
    out = gan.train_step(x, opt_g, opt_d, generator=gen(19))  # the same z
    assert set(out) == {"loss_d", "loss_g"} and abs(out["loss_d"] - before) < 1e-5
    with torch.no_grad():
        assert gan.discriminator_loss(x, fake).item() < before


def test_dcgan_has_no_likelihood():
    gan = DCGAN(SMALL, latent_dim=8, width=8)
    for ask in (lambda: gan.log_prob(levels(1)), lambda: gan.bits_per_dim(levels(1))):
        with pytest.raises(OptionError, match="a GAN has no likelihood") as e:
            ask()
        assert isinstance(e.value, ScoreSDEError)


# ------------------------------------------------------------------ training loop and files


def _tiny(kind):
    return {"vae": lambda: ConvVAE(SMALL, hidden=8), "realnvp": lambda: RealNVP(SMALL, hidden=8, num_blocks=1),
            "dcgan": lambda: DCGAN(SMALL, latent_dim=8, width=8)}[kind]()


@pytest.mark.parametrize("kind", ["vae", "realnvp", "dcgan"])
def test_fit_steps_and_save_load_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    model = _tiny(kind)
    data = -1 + 2 * levels(40).float() / 255
    res = fit(model, data, steps=3, batch_size=16, generator=gen(20))
    assert res.steps == 3 and res.stopped_by == "steps" and not model.training
    assert all(len(v) == 3 and all(math.isfinite(t) for t in v) for v in res.losses.values())
    path = tmp_path / "sub" / f"{kind}.pt"
    save_baseline(path, model)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == f"scoresde-{BASELINE_KIND}" and raw["kind"] == kind and raw["config"] == model.config
    again = load_baseline(path)
    assert type(again) is BASELINES[kind] and not again.training
    if kind == "dcgan":
        assert torch.equal(again.sample(3, gen(21)), model.sample(3, gen(21)))
    else:
        assert torch.equal(again.bits_per_dim(data[:3], gen(21)), model.bits_per_dim(data[:3], gen(21)))


@pytest.mark.parametrize("kind,steps", [("vae", 100), ("realnvp", 40)])
def test_fit_learns_a_simple_image_set(kind, steps):
    torch.manual_seed(0)
    model = _tiny(kind)
    # two images, each repeated: a left-dark/right-light one and its mirror image, with a little noise
    base = torch.zeros(2, *SMALL, dtype=torch.long)
    base[0, :, :, 4:], base[1, :, :, :4] = 220, 220
    data = (base.repeat(16, 1, 1, 1) + torch.randint(0, 20, (32, *SMALL), generator=gen(22))).clamp(max=255)
    before = model.bits_per_dim(data, gen(23)).mean().item()
    res = fit(model, data, steps=steps, batch_size=16, lr=1e-2, generator=gen(24))
    after = model.bits_per_dim(data, gen(23)).mean().item()
    assert after < before - 1.0, (before, after, res.losses["loss"][-5:])


def test_fit_stops_at_the_cpu_budget_and_reports_progress(capsys):
    model = _tiny("vae")
    res = fit(model, levels(64), budget_seconds=0.3, batch_size=8, generator=gen(), progress=True, progress_every=1e-9)
    assert res.stopped_by == "budget" and res.steps >= 1 and res.cpu_seconds >= 0.3
    err = capsys.readouterr().err
    assert "step 1:" in err and "steps/s" in err and "CPU s" in err


def test_fit_and_files_reject_bad_input(tmp_path):
    model = _tiny("vae")
    with pytest.raises(OptionError, match="steps or budget_seconds"):
        fit(model, levels(8))
    with pytest.raises(OptionError, match="batch_size"):
        fit(model, levels(8), steps=1, batch_size=9)
    with pytest.raises(ShapeError, match="data"):
        fit(model, levels(8, (1, 4, 4)), steps=1, batch_size=4)
    with pytest.raises(CheckpointError, match="no baseline at"):
        load_baseline(tmp_path / "missing.pt")
    code = tmp_path / "code.pt"
    torch.save({"format": f"scoresde-{BASELINE_KIND}", "weights": torch.nn.Linear(2, 2)}, code)  # a pickled module
    with pytest.raises(CheckpointError, match="code execution"):
        load_baseline(code)
    other = tmp_path / "other.pt"
    torch.save({"weights": {}}, other)
    with pytest.raises(CheckpointError, match="not a scoresde baseline"):
        load_baseline(other)
    save_baseline(other, model)
    raw = torch.load(other, weights_only=True)
    raw["config"]["hidden"] = 16  # weights no longer fit
    torch.save(raw, other)
    with pytest.raises(CheckpointError, match="corrupt"):  # edited after writing: the digest tells
        load_baseline(other)
    save_artifact(other, BASELINE_KIND, raw["version"], raw)  # a consistent file whose weights do not fit its config
    with pytest.raises(CheckpointError, match="cannot be rebuilt"):
        load_baseline(other)
    with pytest.raises(OptionError, match="baseline"):
        save_baseline(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def test_default_models_are_small():
    for cls in (ConvVAE, RealNVP, DCGAN):
        assert 2e5 < num_parameters(cls()) < 1.2e6, cls.__name__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["vae", "realnvp", "dcgan"])
def test_models_on_cuda_match_cpu_with_cpu_generators_and_inputs(kind):
    torch.manual_seed(0)
    cpu = _tiny(kind).eval()
    cuda = _tiny(kind).eval()
    cuda.load_state_dict(cpu.state_dict())
    cuda = cuda.cuda()
    x = levels(4)  # CPU inputs, CPU generators: the draws are the same bits on both
    a, b = cpu.sample(3, gen(25)), cuda.sample(3, gen(25))
    assert b.device.type == "cuda" and torch.allclose(a, b.cpu(), atol=1e-4)
    if kind != "dcgan":
        assert torch.allclose(cpu.bits_per_dim(x, gen(26)), cuda.bits_per_dim(x, gen(26)).cpu(), atol=1e-4)
    res = fit(cuda, x, steps=2, batch_size=2, generator=gen(27))
    assert res.steps == 2
