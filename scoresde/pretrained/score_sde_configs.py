"""The published configurations of score_sde_pytorch (Song et al. 2021), as plain data.

Every file of the reference's ``configs/`` folder is transcribed here as a dict of four sections,
``training``, ``sampling``, ``data`` and ``model``, holding the same fields and values as the
``ml_collections.ConfigDict`` that the file builds (the ``optim`` and ``eval`` sections, the seed and the
device are left out: they do not affect a trained network). Most configs start from one of three
default files (CIFAR-10, CelebA, LSUN); :func:`_config` merges a default, a shared set of model fields
and the config's own overrides into one plain dict.

Only ``model.name`` ``'ncsnpp'`` (NCSN++ and DDPM++) and ``'ddpm'`` can be imported; the NCSN / NCSNv2
configs (``ve/ncsn/*``, ``ve/ncsnv2/*``) are listed for completeness. Quirks of the originals are kept
as they are (``ve/ncsn/celeba`` names its SDE in ``training.loss``; ``ve/ncsnv2/bedroom`` spells
``training.continuouse``).

The released checkpoints are published under folder names that differ from three config names;
:data:`ALIASES` maps them (``vp/cifar10_ddpm`` -> ``vp/ddpm/cifar10`` and so on).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

_SECTIONS = ("training", "sampling", "data", "model")


def _config(base: Optional[Dict[str, Dict[str, Any]]], model_preset: Optional[Dict[str, Any]] = None,
            **overrides: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``base`` (a default file's sections), then ``model_preset`` over ``base['model']``, then the overrides."""
    out = {s: dict(base[s]) if base else {} for s in _SECTIONS}
    out["model"].update(model_preset or {})
    for section, fields in overrides.items():
        out[section].update(fields)
    return out


#: ``configs/default_cifar10_configs.py``
_CIFAR10 = {
    'training': {'batch_size': 128, 'continuous': True, 'eval_freq': 100, 'likelihood_weighting': False,
                 'log_freq': 50, 'n_iters': 1300001, 'reduce_mean': False, 'snapshot_freq': 50000,
                 'snapshot_freq_for_preemption': 10000, 'snapshot_sampling': True},
    'sampling': {'n_steps_each': 1, 'noise_removal': True, 'probability_flow': False, 'snr': 0.16},
    'data': {'centered': False, 'dataset': 'CIFAR10', 'image_size': 32, 'num_channels': 3, 'random_flip': True,
             'uniform_dequantization': False},
    'model': {'beta_max': 20.0, 'beta_min': 0.1, 'dropout': 0.1, 'embedding_type': 'fourier',
              'num_scales': 1000, 'sigma_max': 50, 'sigma_min': 0.01},
}

#: ``configs/default_celeba_configs.py``
_CELEBA = {
    'training': {'batch_size': 128, 'continuous': True, 'eval_freq': 100, 'likelihood_weighting': False,
                 'log_freq': 50, 'n_iters': 1300001, 'reduce_mean': False, 'snapshot_freq': 50000,
                 'snapshot_freq_for_preemption': 10000, 'snapshot_sampling': True},
    'sampling': {'n_steps_each': 1, 'noise_removal': True, 'probability_flow': False, 'snr': 0.17},
    'data': {'centered': False, 'dataset': 'CELEBA', 'image_size': 64, 'num_channels': 3, 'random_flip': True,
             'uniform_dequantization': False},
    'model': {'beta_max': 20.0, 'beta_min': 0.1, 'dropout': 0.1, 'embedding_type': 'fourier',
              'num_scales': 1000, 'sigma_max': 90.0, 'sigma_min': 0.01},
}

#: ``configs/default_lsun_configs.py``
_LSUN = {
    'training': {'batch_size': 64, 'continuous': True, 'eval_freq': 100, 'likelihood_weighting': False,
                 'log_freq': 50, 'n_iters': 2400001, 'reduce_mean': False, 'snapshot_freq': 50000,
                 'snapshot_freq_for_preemption': 5000, 'snapshot_sampling': True},
    'sampling': {'n_steps_each': 1, 'noise_removal': True, 'probability_flow': False, 'snr': 0.075},
    'data': {'centered': False, 'dataset': 'LSUN', 'image_size': 256, 'num_channels': 3, 'random_flip': True,
             'uniform_dequantization': False},
    'model': {'beta_max': 20.0, 'beta_min': 0.1, 'dropout': 0.0, 'embedding_type': 'fourier',
              'num_scales': 2000, 'sigma_max': 378, 'sigma_min': 0.01},
}

#: model fields shared with ``vp/cifar10_ddpmpp_continuous``
_DDPMPP = {'attention_type': 'ddpm', 'attn_resolutions': (16,), 'ch_mult': (1, 2, 2, 2), 'conditional': True,
           'conv_size': 3, 'ema_rate': 0.9999, 'embedding_type': 'positional', 'fir': False,
           'fir_kernel': [1, 3, 3, 1], 'fourier_scale': 16, 'init_scale': 0.0, 'name': 'ncsnpp', 'nf': 128,
           'nonlinearity': 'swish', 'normalization': 'GroupNorm', 'num_res_blocks': 4, 'progressive': 'none',
           'progressive_combine': 'sum', 'progressive_input': 'none', 'resamp_with_conv': True,
           'resblock_type': 'biggan', 'scale_by_sigma': False, 'skip_rescale': True}

#: model fields shared with ``vp/cifar10_ncsnpp_continuous``
_NCSNPP_RESIDUAL = {'attention_type': 'ddpm', 'attn_resolutions': (16,), 'ch_mult': (1, 2, 2, 2),
                    'conditional': True, 'conv_size': 3, 'ema_rate': 0.9999, 'embedding_type': 'positional',
                    'fir': True, 'fir_kernel': [1, 3, 3, 1], 'fourier_scale': 16, 'init_scale': 0.0,
                    'name': 'ncsnpp', 'nf': 128, 'nonlinearity': 'swish', 'normalization': 'GroupNorm',
                    'num_res_blocks': 4, 'progressive': 'none', 'progressive_combine': 'sum',
                    'progressive_input': 'residual', 'resamp_with_conv': True, 'resblock_type': 'biggan',
                    'scale_by_sigma': False, 'skip_rescale': True}

#: model fields shared with ``ve/celebahq_256_ncsnpp_continuous``
_NCSNPP_SKIP = {'attention_type': 'ddpm', 'attn_resolutions': (16,), 'ch_mult': (1, 1, 2, 2, 2, 2, 2),
                'conditional': True, 'conv_size': 3, 'ema_rate': 0.999, 'fir': True, 'fir_kernel': [1, 3, 3, 1],
                'fourier_scale': 16, 'init_scale': 0.0, 'name': 'ncsnpp', 'nf': 128, 'nonlinearity': 'swish',
                'normalization': 'GroupNorm', 'num_res_blocks': 2, 'progressive': 'output_skip',
                'progressive_combine': 'sum', 'progressive_input': 'input_skip', 'resamp_with_conv': True,
                'resblock_type': 'biggan', 'scale_by_sigma': True, 'skip_rescale': True}

#: model fields shared with ``vp/ddpm/cifar10``
_DDPM = {'attn_resolutions': (16,), 'ch_mult': (1, 2, 2, 2), 'conditional': True, 'ema_rate': 0.9999,
         'name': 'ddpm', 'nf': 128, 'nonlinearity': 'swish', 'normalization': 'GroupNorm', 'num_res_blocks': 2,
         'resamp_with_conv': True, 'scale_by_sigma': False}

PUBLISHED_CONFIGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    'subvp/cifar10_ddpm_continuous': _config(_CIFAR10, _DDPM,
        training={'reduce_mean': True, 'sde': 'subvpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'subvp/cifar10_ddpmpp_continuous': _config(_CIFAR10, _DDPMPP,
        training={'reduce_mean': True, 'sde': 'subvpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'subvp/cifar10_ddpmpp_deep_continuous': _config(_CIFAR10, _DDPMPP,
        training={'n_iters': 950001, 'reduce_mean': True, 'sde': 'subvpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
        model={'num_res_blocks': 8},
    ),
    'subvp/cifar10_ncsnpp_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'reduce_mean': True, 'sde': 'subvpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'subvp/cifar10_ncsnpp_deep_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'n_iters': 950001, 'reduce_mean': True, 'sde': 'subvpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
        model={'num_res_blocks': 8},
    ),
    've/bedroom_ncsnpp_continuous': _config(_LSUN, _NCSNPP_SKIP,
        training={'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        data={'category': 'bedroom'},
    ),
    've/celeba_ncsnpp': _config(_CELEBA, _DDPM,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        model={'attention_type': 'ddpm', 'conv_size': 3, 'ema_rate': 0.999, 'embedding_type': 'positional',
               'fir': True, 'fir_kernel': [1, 3, 3, 1], 'init_scale': 0.0, 'name': 'ncsnpp',
               'num_res_blocks': 4, 'progressive': 'none', 'progressive_combine': 'sum',
               'progressive_input': 'residual', 'resblock_type': 'biggan', 'scale_by_sigma': True,
               'sigma_begin': 90, 'skip_rescale': True},
    ),
    've/celebahq_256_ncsnpp_continuous': _config(_LSUN, _NCSNPP_SKIP,
        training={'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        data={'dataset': 'CelebAHQ', 'tfrecords_path': '/home/yangsong/ncsc/celebahq/r08.tfrecords'},
        model={'sigma_max': 348},
    ),
    've/celebahq_ncsnpp_continuous': _config(None,
        training={'batch_size': 8, 'continuous': True, 'eval_freq': 100, 'likelihood_weighting': False,
                  'log_freq': 50, 'n_iters': 2400001, 'reduce_mean': False, 'sde': 'vesde',
                  'snapshot_freq': 50000, 'snapshot_freq_for_preemption': 5000, 'snapshot_sampling': True},
        sampling={'corrector': 'langevin', 'method': 'pc', 'n_steps_each': 1, 'noise_removal': True,
                  'predictor': 'reverse_diffusion', 'probability_flow': False, 'snr': 0.15},
        data={'centered': False, 'dataset': 'CelebAHQ', 'image_size': 1024, 'num_channels': 3,
              'random_flip': True, 'tfrecords_path': '/atlas/u/yangsong/celeba_hq/-r10.tfrecords',
              'uniform_dequantization': False},
        model={'attention_type': 'ddpm', 'attn_resolutions': (16,), 'ch_mult': (1, 2, 4, 8, 16, 32, 32, 32),
               'conditional': True, 'conv_size': 3, 'dropout': 0.0, 'ema_rate': 0.9999,
               'embedding_type': 'fourier', 'fir': True, 'fir_kernel': [1, 3, 3, 1], 'fourier_scale': 16,
               'init_scale': 0.0, 'name': 'ncsnpp', 'nf': 16, 'nonlinearity': 'swish',
               'normalization': 'GroupNorm', 'num_res_blocks': 1, 'num_scales': 2000,
               'progressive': 'output_skip', 'progressive_combine': 'sum', 'progressive_input': 'input_skip',
               'resamp_with_conv': True, 'resblock_type': 'biggan', 'scale_by_sigma': True, 'sigma_max': 1348,
               'sigma_min': 0.01, 'skip_rescale': True},
    ),
    've/church_ncsnpp_continuous': _config(_LSUN, _NCSNPP_SKIP,
        training={'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        data={'category': 'church_outdoor'},
        model={'sigma_max': 380},
    ),
    've/cifar10_ddpm': _config(_CIFAR10, _DDPM,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        model={'conv_size': 3, 'ema_rate': 0.999, 'scale_by_sigma': True},
    ),
    've/cifar10_ncsnpp': _config(_CIFAR10, _DDPM,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        model={'attention_type': 'ddpm', 'conv_size': 3, 'ema_rate': 0.999, 'embedding_type': 'positional',
               'fir': True, 'fir_kernel': [1, 3, 3, 1], 'init_scale': 0.0, 'name': 'ncsnpp',
               'num_res_blocks': 4, 'progressive': 'none', 'progressive_combine': 'sum',
               'progressive_input': 'residual', 'resblock_type': 'biggan', 'scale_by_sigma': True,
               'skip_rescale': True},
    ),
    've/cifar10_ncsnpp_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        model={'ema_rate': 0.999, 'embedding_type': 'fourier', 'scale_by_sigma': True},
    ),
    've/cifar10_ncsnpp_deep_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'n_iters': 950001, 'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        model={'ema_rate': 0.999, 'embedding_type': 'fourier', 'num_res_blocks': 8, 'scale_by_sigma': True},
    ),
    've/ffhq_256_ncsnpp_continuous': _config(_LSUN, _NCSNPP_SKIP,
        training={'sde': 'vesde'},
        sampling={'corrector': 'langevin', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        data={'dataset': 'FFHQ', 'tfrecords_path': '/home/yangsong/ncsc/ffhq/ffhq-r08.tfrecords'},
        model={'sigma_max': 348},
    ),
    've/ffhq_ncsnpp_continuous': _config(None,
        training={'batch_size': 8, 'continuous': True, 'eval_freq': 100, 'likelihood_weighting': False,
                  'log_freq': 50, 'n_iters': 2400001, 'reduce_mean': True, 'sde': 'vesde',
                  'snapshot_freq': 50000, 'snapshot_freq_for_preemption': 5000, 'snapshot_sampling': True},
        sampling={'corrector': 'langevin', 'method': 'pc', 'n_steps_each': 1, 'noise_removal': True,
                  'predictor': 'reverse_diffusion', 'probability_flow': False, 'snr': 0.15},
        data={'centered': False, 'dataset': 'FFHQ', 'image_size': 1024, 'num_channels': 3, 'random_flip': True,
              'tfrecords_path': '/raid/song/ffhq-dataset/ffhq/ffhq-r10.tfrecords',
              'uniform_dequantization': False},
        model={'attention_type': 'ddpm', 'attn_resolutions': (16,), 'ch_mult': (1, 2, 4, 8, 16, 32, 32, 32),
               'conditional': True, 'conv_size': 3, 'dropout': 0.0, 'ema_rate': 0.9999,
               'embedding_type': 'fourier', 'fir': True, 'fir_kernel': [1, 3, 3, 1], 'fourier_scale': 16,
               'init_scale': 0.0, 'name': 'ncsnpp', 'nf': 16, 'nonlinearity': 'swish',
               'normalization': 'GroupNorm', 'num_res_blocks': 1, 'num_scales': 2000,
               'progressive': 'output_skip', 'progressive_combine': 'sum', 'progressive_input': 'input_skip',
               'resamp_with_conv': True, 'resblock_type': 'biggan', 'scale_by_sigma': True, 'sigma_max': 1348,
               'sigma_min': 0.01, 'skip_rescale': True},
    ),
    've/ncsn/celeba': _config(_CELEBA, None,
        training={'continuous': False, 'loss': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 100, 'predictor': 'none', 'snr': 0.316},
        model={'ema_rate': 0.0, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 10, 'scale_by_sigma': False, 'sigma_max': 1.0},
    ),
    've/ncsn/celeba_124': _config(_CELEBA, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.128},
        model={'ema_rate': 0.0, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 500, 'scale_by_sigma': False},
    ),
    've/ncsn/celeba_1245': _config(_CELEBA, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.128},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 500, 'scale_by_sigma': False},
    ),
    've/ncsn/celeba_5': _config(_CELEBA, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 100, 'predictor': 'none', 'snr': 0.316},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 10, 'scale_by_sigma': False, 'sigma_max': 1.0},
    ),
    've/ncsn/cifar10': _config(_CIFAR10, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 100, 'predictor': 'none', 'snr': 0.316},
        model={'ema_rate': 0.0, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 10, 'scale_by_sigma': False, 'sigma_max': 1},
    ),
    've/ncsn/cifar10_124': _config(_CIFAR10, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.176},
        model={'ema_rate': 0.0, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 232, 'scale_by_sigma': False},
    ),
    've/ncsn/cifar10_1245': _config(_CIFAR10, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.176},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 232, 'scale_by_sigma': False},
    ),
    've/ncsn/cifar10_5': _config(_CIFAR10, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 100, 'predictor': 'none', 'snr': 0.316},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsn', 'nf': 128, 'nonlinearity': 'elu',
               'normalization': 'InstanceNorm++', 'num_scales': 10, 'scale_by_sigma': False, 'sigma_max': 1},
    ),
    've/ncsnv2/bedroom': _config(_LSUN, None,
        training={'batch_size': 128, 'continuouse': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 3, 'predictor': 'none', 'snr': 0.095},
        data={'category': 'bedroom', 'image_size': 128},
        model={'ema_rate': 0.9999, 'interpolation': 'bilinear', 'name': 'ncsnv2_128', 'nf': 128,
               'nonlinearity': 'elu', 'normalization': 'InstanceNorm++', 'num_scales': 1086,
               'scale_by_sigma': True, 'sigma_max': 190},
    ),
    've/ncsnv2/celeba': _config(_CELEBA, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.128},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsnv2_64', 'nf': 128,
               'nonlinearity': 'elu', 'normalization': 'InstanceNorm++', 'num_scales': 500,
               'scale_by_sigma': True},
    ),
    've/ncsnv2/cifar10': _config(_CIFAR10, None,
        training={'continuous': False, 'sde': 'vesde'},
        sampling={'corrector': 'ald', 'method': 'pc', 'n_steps_each': 5, 'predictor': 'none', 'snr': 0.176},
        model={'ema_rate': 0.999, 'interpolation': 'bilinear', 'name': 'ncsnv2_64', 'nf': 128,
               'nonlinearity': 'elu', 'normalization': 'InstanceNorm++', 'num_scales': 232,
               'scale_by_sigma': True},
    ),
    'vp/cifar10_ddpmpp': _config(_CIFAR10, _DDPMPP,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'centered': True},
    ),
    'vp/cifar10_ddpmpp_continuous': _config(_CIFAR10, _DDPMPP,
        training={'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'vp/cifar10_ddpmpp_deep_continuous': _config(_CIFAR10, _DDPMPP,
        training={'n_iters': 950001, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
        model={'num_res_blocks': 8},
    ),
    'vp/cifar10_ncsnpp': _config(_CIFAR10, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'reverse_diffusion'},
        data={'centered': True},
        model={'attention_type': 'ddpm', 'conv_size': 3, 'embedding_type': 'positional', 'fir': True,
               'fir_kernel': [1, 3, 3, 1], 'init_scale': 0.0, 'name': 'ncsnpp', 'num_res_blocks': 4,
               'progressive': 'none', 'progressive_combine': 'sum', 'progressive_input': 'residual',
               'resblock_type': 'biggan', 'skip_rescale': True},
    ),
    'vp/cifar10_ncsnpp_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'vp/cifar10_ncsnpp_deep_continuous': _config(_CIFAR10, _NCSNPP_RESIDUAL,
        training={'n_iters': 950001, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
        model={'num_res_blocks': 8},
    ),
    'vp/ddpm/bedroom': _config(_LSUN, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'category': 'bedroom', 'centered': True},
        model={'ch_mult': (1, 1, 2, 2, 4, 4), 'num_scales': 1000},
    ),
    'vp/ddpm/celebahq': _config(_LSUN, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'centered': True, 'dataset': 'CelebAHQ',
              'tfrecords_path': '/atlas/u/yangsong/celeba_hq/-r10.tfrecords'},
        model={'ch_mult': (1, 1, 2, 2, 4, 4), 'num_scales': 1000},
    ),
    'vp/ddpm/church': _config(_LSUN, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'category': 'church_outdoor', 'centered': True},
        model={'ch_mult': (1, 1, 2, 2, 4, 4), 'num_scales': 1000},
    ),
    'vp/ddpm/cifar10': _config(_CIFAR10, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'centered': True},
    ),
    'vp/ddpm/cifar10_continuous': _config(_CIFAR10, _DDPM,
        training={'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'euler_maruyama'},
        data={'centered': True},
    ),
    'vp/ddpm/cifar10_unconditional': _config(_CIFAR10, _DDPM,
        training={'continuous': False, 'reduce_mean': True, 'sde': 'vpsde'},
        sampling={'corrector': 'none', 'method': 'pc', 'predictor': 'ancestral_sampling'},
        data={'centered': True},
        model={'conditional': False},
    ),
}

#: Folder names of the released checkpoints that differ from their config's name.
ALIASES: Dict[str, str] = {
    "vp/cifar10_ddpm": "vp/ddpm/cifar10",
    "vp/cifar10_ddpm_continuous": "vp/ddpm/cifar10_continuous",
    "ve/ffhq_1024_ncsnpp_continuous": "ve/ffhq_ncsnpp_continuous",
}

#: ``model.name`` values that :func:`scoresde.pretrained.from_score_sde` can build.
SUPPORTED_MODELS = ("ncsnpp", "ddpm")


def config_names(supported_only: bool = False) -> List[str]:
    """The names of :data:`PUBLISHED_CONFIGS` (only those with an importable model when ``supported_only``)."""
    return [n for n, c in PUBLISHED_CONFIGS.items() if not supported_only or c["model"].get("name") in SUPPORTED_MODELS]


def published_config(name: str) -> Dict[str, Dict[str, Any]]:
    """A deep copy of the published config ``name`` (a key of :data:`PUBLISHED_CONFIGS` or :data:`ALIASES`).

    Raises:
        KeyError: an unknown name (the importer turns this into an error listing the valid names).
    """
    return copy.deepcopy(PUBLISHED_CONFIGS[ALIASES.get(name, name)])


__all__ = ["PUBLISHED_CONFIGS", "ALIASES", "SUPPORTED_MODELS", "config_names", "published_config"]
