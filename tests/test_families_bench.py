"""benchmarks/families.py: every family trains under a CPU budget, is measured and reported (tiny images, tiny budget)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from scoresde.data import Dataset, to_model_range
from scoresde.metrics import LeNet, QualityClassifier, reference_statistics

ROOT = Path(__file__).resolve().parents[1]


def _families():
    spec = importlib.util.spec_from_file_location("families", ROOT / "benchmarks" / "families.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (160, 1, 8, 8), generator=g)
    labels = torch.randint(0, 3, (160,), generator=g)
    ds = Dataset("tiny", to_model_range(levels), 256, (-1.0, 1.0), labels)
    net = LeNet(1, 3, feature_dim=8).eval()
    clf = QualityClassifier(net, "tiny", [1, 8, 8], [-1.0, 1.0], 1.0)
    return ds, clf, reference_statistics(clf, ds.data)


@pytest.mark.parametrize("family", ["score_sde", "score_sde_likelihood", "latent_score_sde", "vae", "realnvp", "gan"])
def test_each_family_trains_within_its_budget_and_is_measured(family, tiny, tmp_path):
    F = _families()
    ds, clf, ref = tiny
    profile = dict(F.PROFILES["quick"], budget=1.0, samples=8, bpd_num=2, bpd_num_cheap=8, sampler_steps=2,
                   likelihood=dict(method="rk4", steps=3))
    row = F.run_one(family, "tiny", ds, ds, clf, ref, profile, tmp_path, 0)
    assert row["family"] == family and row["bpd_kind"] == {"gan": "none", "vae": "bound", "latent_score_sde": "bound"}.get(
        family, "exact")
    assert (row["bpd"] is None) == (family == "gan")
    if row["bpd"] is not None:
        assert math.isfinite(row["bpd"]) and row["bpd"] > 0
    assert math.isfinite(row["fld"]) and 0 <= row["confident"] <= 1 and row["train_steps"] >= 1
    assert row["train_seconds"] < 60  # a budget of 1 CPU second, plus set-up
    if family.startswith("score_sde"):  # the variant differs only in its weighting and time sampling
        cfg = json.loads((tmp_path / f"tiny-{family}-run" / "config.json").read_text())
        assert (cfg["weighting"], cfg["importance_sampling"]) == (
            ("likelihood", True) if family == "score_sde_likelihood" else ("min_snr", False))
    (tmp_path / f"tiny-{family}.json").write_text(json.dumps(row))
    text = F.markdown([row], "quick")
    assert family in text and "tiny" in text
