"""Baselines to measure score SDEs against: a VAE, a RealNVP flow and a DCGAN, for 8-bit images.

All three take images ``[B, C, H, W]`` as floats in ``[-1, 1]`` on the grid ``-1 + 2k/255``
(:func:`scoresde.data.to_model_range`) or as integer levels ``k``, and return samples in ``[-1, 1]``.
What each ``bits_per_dim`` means (all in bits per pixel of 8-bit data, lower is better):

* :class:`ConvVAE`: an **upper bound**, ``-ELBO / (D ln 2)``. The decoder is a discretized logistic
  that assigns probabilities to the 256 levels, so the bound is on ``-log2 P(x) / D`` directly, with
  no dequantization (and it is stochastic: one latent draw per call unless ``n_samples`` says more).
* :class:`RealNVP`: **exact** density of uniformly dequantized data, ``u = (k + v) / 256``, reported
  as ``-(log p(u) - D log 256) / (D ln 2)``, the same convention as :func:`scoresde.bits_per_dim`
  (itself an upper bound on ``-log2 P(k) / D`` through the dequantization; its only noise is ``v``).
* :class:`DCGAN`: **none**. ``bits_per_dim`` and ``log_prob`` raise :class:`~scoresde.errors.OptionError`.

:func:`fit` trains any of them for a number of steps or a budget of process CPU seconds;
:func:`save_baseline` / :func:`load_baseline` write and read them as code-free files.
"""

from __future__ import annotations

from ._train import FitResult, fit, num_parameters
from .dcgan import DCGAN
from .files import BASELINE_KIND, BASELINES, load_baseline, save_baseline
from .realnvp import RealNVP
from .vae import ConvVAE, DecoderParams, ELBOResult, discretized_logistic_log_prob, gaussian_elbo, gaussian_entropy

__all__ = [
    "ConvVAE", "RealNVP", "DCGAN", "BASELINES", "ELBOResult", "DecoderParams",
    "gaussian_elbo", "gaussian_entropy", "discretized_logistic_log_prob",
    "fit", "FitResult", "save_baseline", "load_baseline", "num_parameters", "BASELINE_KIND",
]
