"""Sample-quality metrics: the Fréchet distance against closed forms, the classifier file, confidence and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.errors import CheckpointError, ShapeError
from scoresde.metrics import (
    LeNet,
    QualityClassifier,
    feature_statistics,
    frechet_distance,
    load_quality_classifier,
    sample_quality,
    sqrtm_psd,
)


def random_spd(d: int, gen: torch.Generator, cond: float = 10.0) -> torch.Tensor:
    """A random symmetric positive-definite matrix with eigenvalues spread over [1, cond]."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    w = torch.logspace(0, math.log10(cond), d, dtype=torch.float64)
    return (q * w) @ q.T


def test_sqrtm_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    for d in (1, 4, 12):
        a = random_spd(d, gen, cond=1e4)
        r = sqrtm_psd(a)
        ref = np.real(scipy.linalg.sqrtm(a.numpy()))
        np.testing.assert_allclose(r.numpy(), ref, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(r @ r, a, rtol=1e-10, atol=1e-10)
    # singular PSD: a rank-1 matrix keeps a real root
    v = torch.randn(5, 1, generator=gen, dtype=torch.float64)
    r = sqrtm_psd(v @ v.T)
    torch.testing.assert_close(r @ r, v @ v.T, rtol=1e-8, atol=1e-10)


def closed_form_w2(m1, s1, m2, s2) -> float:
    """|m1 - m2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}), with scipy's sqrtm (independent of the code under test)."""
    r1 = np.real(scipy.linalg.sqrtm(s1))
    cross = np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1))
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def test_frechet_distance_closed_forms():
    # Commuting (diagonal) covariances: W2^2 = |m1 - m2|^2 + sum (sqrt a_i - sqrt b_i)^2.
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    expected = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)
    # Non-commuting covariances against the formula evaluated with scipy; symmetric in its arguments; zero on itself.
    gen = torch.Generator().manual_seed(1)
    s1, s2 = random_spd(6, gen), random_spd(6, gen)
    mu1, mu2 = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    ref = closed_form_w2(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=1e-9)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    assert frechet_distance(torch.tensor([0.5]), torch.tensor([[4.0]]), torch.tensor([-1.0]), torch.tensor([[1.0]])) == \
        pytest.approx(1.5**2 + 1.0, rel=1e-12)


def test_frechet_distance_of_gaussian_samples_converges_to_the_closed_form():
    """Estimates from samples of two known Gaussians agree with the closed form within sample-size tolerances.

    K independent replicates, each from N draws per side in d dimensions. The mean term is biased by
    exactly tr(S1)/N + tr(S2)/N (the variance of the sample means), which is subtracted; the covariance
    term's bias is O(d (tr S1 + tr S2) / N), allowed for explicitly; the rest is the replicates' spread:
    |mean - truth| <= 4 standard errors + that allowance.
    """
    d, n, k = 3, 4000, 16
    gen = torch.Generator().manual_seed(2)
    s1, s2 = random_spd(d, gen, cond=5.0), random_spd(d, gen, cond=5.0)
    m1 = torch.zeros(d, dtype=torch.float64)
    m2 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    truth = closed_form_w2(m1.numpy(), s1.numpy(), m2.numpy(), s2.numpy())
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    est = []
    for _ in range(k):
        x = m1 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ l1.T
        y = m2 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ l2.T
        fx, fy = feature_statistics(x), feature_statistics(y)
        est.append(frechet_distance(fx.mean, fx.cov, fy.mean, fy.cov))
    est = torch.tensor(est, dtype=torch.float64)
    mean_bias = float(torch.trace(s1) + torch.trace(s2)) / n
    se = float(est.std()) / math.sqrt(k)
    allowance = d * float(torch.trace(s1) + torch.trace(s2)) / n
    assert abs(float(est.mean()) - mean_bias - truth) <= 4 * se + allowance, (float(est.mean()), truth, se)


def test_feature_statistics_and_shape_errors():
    f = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    st = feature_statistics(f)
    np.testing.assert_allclose(st.mean.numpy(), [2.0, 4.0])
    np.testing.assert_allclose(st.cov.numpy(), np.cov(f.numpy().T))
    with pytest.raises(ShapeError):
        feature_statistics(f[:1])
    with pytest.raises(ShapeError):
        frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))
    with pytest.raises(ShapeError):
        sqrtm_psd(torch.zeros(2, 3))


def fixed_classifier(favourite: int, logit: float) -> QualityClassifier:
    """A LeNet whose output ignores the image: logit ``logit`` for class ``favourite``, 0 for the others."""
    net = LeNet(1, 10, feature_dim=8)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.bias[favourite] = logit
    return QualityClassifier(net.eval(), "test", [1, 8, 8], [-1.0, 1.0], 1.0)


def test_confidence_and_coverage_of_a_known_classifier():
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # softmax confidence of the favourite class: e^L / (e^L + 9)
    for logit, confident in ((5.0, 1.0), (2.0, 0.0)):
        conf = math.exp(logit) / (math.exp(logit) + 9)
        q = sample_quality(fixed_classifier(3, logit), x, x, threshold=0.9)
        assert q.mean_confidence == pytest.approx(conf, rel=1e-6)
        assert q.confident_fraction == confident
        assert q.class_fractions[3] == 1.0 and sum(q.class_fractions) == pytest.approx(1.0)
        assert q.min_class_fraction == 0.0
        assert abs(q.fld) < 1e-6  # the same images on both sides
        assert q.n == 50 and q.n_reference == 50


def test_classifier_file_round_trip_and_errors(tmp_path):
    clf = fixed_classifier(7, 4.0)
    clf.info = {"epochs": 1}
    path = clf.save(tmp_path / "c.pt")
    back = load_quality_classifier(path)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(back.probabilities(x), clf.probabilities(x))
    assert back.event_shape == [1, 8, 8] and back.data == "test" and back.info == {"epochs": 1}
    with pytest.raises(ShapeError, match="trained on images of shape"):
        back.probabilities(torch.rand(4, 1, 9, 9))
    with pytest.raises(CheckpointError, match="scoresde classifier"):
        load_quality_classifier(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable classifier"):
        load_quality_classifier(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a scoresde classifier"):
        load_quality_classifier(tmp_path / "other.pt")


def test_the_reject_class_counts_as_not_recognised(tmp_path):
    net = LeNet(1, 11, feature_dim=8)
    with torch.no_grad():  # every image goes to class 10, the reject class, with probability e^6 / (e^6 + 10)
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.bias[10] = 6.0
    clf = QualityClassifier(net.eval(), "test", [1, 8, 8], [-1.0, 1.0], 1.0, reject_class=10)
    x = torch.rand(20, 1, 8, 8) * 2 - 1
    q = sample_quality(clf, x, x)
    assert q.confident_fraction == 0.0 and q.reject_fraction == 1.0 and q.mean_confidence == 0.0
    assert len(q.class_fractions) == 10 and sum(q.class_fractions) == 0.0
    assert load_quality_classifier(clf.save(tmp_path / "r.pt")).reject_class == 10


def test_non_images_lie_in_the_data_range():
    from scoresde.metrics import non_images

    x = non_images(400, (1, 8, 8), (-1.0, 1.0), torch.Generator().manual_seed(0))
    assert x.shape == (400, 1, 8, 8) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    flat = x.reshape(400, -1)
    assert int((flat.std(1) == 0).sum()) > 50  # constant images are among them (a quarter in expectation)
