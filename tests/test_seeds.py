"""Per-sample seeds: sample i depends on seed i and input i only, for every solver and the likelihood.

The exact mixture score below is computed row by row (no reduction across the batch), so results
must agree bit for bit between batches of 1, 7 and 64 and a permuted order.
"""

import math

import pytest
import torch

import scoresde
from scoresde import SOLVERS, VPSDE
from scoresde.errors import ShapeError
from scoresde.exact import Gaussian, GaussianMixture
from scoresde.noise import SeededNoise, as_seeds, derive_seeds, parse_seed_range

#: These tests claim bit-for-bit results (CI also runs them on other CPU instruction sets).
pytestmark = pytest.mark.bitwise

SDE = VPSDE()
GM = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 1.0], [-1.0, 0.5]]), 0.3)
SCORE = GM.score_fn(SDE)

#: Small settings per solver: invariance does not need accuracy.
OPTIONS = {
    "euler_maruyama": dict(steps=8),
    "reverse_diffusion": dict(steps=8),
    "ancestral": dict(steps=8),
    "langevin": dict(steps=6),
    "pc": dict(steps=6),
    "annealed_langevin": dict(steps=3, steps_per_level=2),
    "ode": dict(rtol=1e-3, atol=1e-3),
    "ddim": dict(steps=8, eta=1.0),
    "torchsde": dict(steps=6),
    "dpmpp_2m": dict(steps=6),
    "dpmpp_3m": dict(steps=6),
    "dpmpp_2m_sde": dict(steps=6),
    "dpmpp_3m_sde": dict(steps=6),
    "unipc": dict(steps=6),
    "ipndm": dict(steps=6),
    "edm": dict(steps=6, s_churn=10.0),
}
SEEDS = list(range(100, 164))
PERM = torch.randperm(64, generator=torch.Generator().manual_seed(0))


def test_every_solver_is_covered():
    assert set(OPTIONS) >= set(SOLVERS), set(SOLVERS) - set(OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_sample_i_does_not_depend_on_its_batch(name):
    opts = OPTIONS[name]
    full = scoresde.solve(SDE, SCORE, (64, 2), name, seeds=SEEDS, **opts).samples
    assert torch.isfinite(full).all()
    for start, b in ((5, 1), (20, 7)):
        part = scoresde.solve(SDE, SCORE, (b, 2), name, seeds=SEEDS[start:start + b], **opts).samples
        assert torch.equal(part, full[start:start + b]), name
    permuted = scoresde.solve(SDE, SCORE, (64, 2), name, seeds=torch.tensor(SEEDS)[PERM], **opts).samples
    assert torch.equal(permuted, full[PERM]), name


def test_seeds_work_on_image_shapes_and_float64():
    a = scoresde.solve(SDE, lambda x, t: -x, (3, 1, 4, 4), "euler_maruyama", steps=3, seeds=[1, 2, 3],
                       dtype=torch.float64).samples
    b = scoresde.solve(SDE, lambda x, t: -x, (1, 1, 4, 4), "euler_maruyama", steps=3, seeds=[2],
                       dtype=torch.float64).samples
    assert a.dtype == torch.float64 and torch.equal(a[1:2], b)


def test_seeded_sampler_reaches_the_data_distribution():
    """Euler–Maruyama with per-sample seeds and the exact score samples N(m, S): mean within 5 standard errors."""
    g = Gaussian(torch.tensor([0.5, -0.3]), torch.tensor([[0.5, 0.1], [0.1, 0.3]]))
    n = 4000
    x = scoresde.sample(SDE, g.score_fn(SDE), (n, 2), "euler_maruyama", steps=200, seeds=range(n))
    se = (torch.diagonal(g.cov) / n).sqrt()
    assert ((x.mean(0) - g.mean).abs() <= 5 * se).all()
    var_se = torch.diagonal(g.cov) * math.sqrt(2 / (n - 1))
    assert ((x.var(0) - torch.diagonal(g.cov)).abs() <= 5 * var_se + 0.02).all()  # + the O(dt) bias of 200 steps


def test_noise_source_statistics():
    """Moments of the normal, uniform and sign draws within 5 standard errors; streams and draws uncorrelated."""
    n = SeededNoise(range(400))
    z = n.randn((400, 250), dtype=torch.float64)
    N = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(N)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / N)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / N)
    u = n.uniform((400, 250), dtype=torch.float64)
    assert 0 <= float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / N)
    r = n.rademacher((400, 250))
    assert set(r.unique().tolist()) == {-1.0, 1.0} and abs(float(r.mean())) < 5 / math.sqrt(N)
    z2 = n.randn((400, 250), dtype=torch.float64)  # the next draw of the same stream
    zp = n.randn((400, 250), dtype=torch.float64, stream="prior", counter=0)
    for other in (z2, zp):
        assert abs(float((z * other).mean())) < 5 / math.sqrt(N)
    # neighbouring seeds give unrelated numbers
    assert abs(float((z[:-1] * z[1:]).mean())) < 5 / math.sqrt(N)


def test_seed_validation_and_ranges():
    with pytest.raises(ValueError, match="not both"):
        scoresde.solve(SDE, SCORE, (2, 2), "ddim", steps=2, seeds=[0, 1], generator=torch.Generator())
    with pytest.raises(ShapeError, match="one seed per sample"):
        scoresde.solve(SDE, SCORE, (3, 2), "ddim", steps=2, seeds=[0, 1])
    with pytest.raises(TypeError, match="integers"):
        as_seeds(torch.tensor([0.5, 1.0]))
    with pytest.raises(TypeError):
        as_seeds([0, "1"])
    assert parse_seed_range("0-49999") == range(50000)
    assert parse_seed_range("3:7") == range(3, 7)
    assert parse_seed_range("5") == range(5, 6)
    with pytest.raises(ValueError, match="A-B"):
        parse_seed_range("a-b")
    d0, d1 = derive_seeds(torch.tensor([1, 2]), 0), derive_seeds(torch.tensor([1, 2]), 1)
    assert not torch.equal(d0, d1) and torch.equal(d0, derive_seeds(torch.tensor([1, 2]), 0))
    with pytest.raises(TypeError, match="single"):
        SeededNoise([1]).seed()


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_log_likelihood_i_does_not_depend_on_its_batch(trace):
    x = GM.sample(64, generator=torch.Generator().manual_seed(3)).double()
    kw = dict(trace=trace, rtol=1e-4, atol=1e-4, **({"n_probes": 2} if trace == "hutchinson" else {}))
    full = scoresde.log_likelihood(SDE, SCORE, x, seeds=SEEDS, **kw)
    assert full.nfe_per_sample is not None and full.nfe_per_sample.shape == (64,)
    for start, b in ((5, 1), (20, 7)):
        part = scoresde.log_likelihood(SDE, SCORE, x[start:start + b], seeds=SEEDS[start:start + b], **kw)
        assert torch.equal(part.log_prob, full.log_prob[start:start + b])
        assert torch.equal(part.nfe_per_sample, full.nfe_per_sample[start:start + b])
    permuted = scoresde.log_likelihood(SDE, SCORE, x[PERM], seeds=torch.tensor(SEEDS)[PERM], **kw)
    assert torch.equal(permuted.log_prob, full.log_prob[PERM])


def test_bits_per_dim_i_does_not_depend_on_its_batch():
    k = torch.randint(0, 256, (16, 2), generator=torch.Generator().manual_seed(0))
    kw = dict(repeats=2, rtol=1e-4, atol=1e-4, trace="hutchinson")
    full = scoresde.bits_per_dim(SDE, SCORE, k, seeds=range(16), **kw)
    part = scoresde.bits_per_dim(SDE, SCORE, k[[9, 2]], seeds=[9, 2], **kw)
    assert torch.equal(part.bits_per_dim, full.bits_per_dim[[9, 2]])
    assert not torch.equal(full.per_repeat[0], full.per_repeat[1])  # each repeat its own noise
    with pytest.raises(ValueError, match="not both"):
        scoresde.bits_per_dim(SDE, SCORE, k, seeds=range(16), generator=torch.Generator())
