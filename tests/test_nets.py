"""Score networks: shapes, gradients, time conditioning, initialisation, config round trips."""

import json
import math

import pytest
import torch
from torch import nn

from scoresde.errors import ShapeError
from scoresde.nets import (
    MLP,
    NETWORKS,
    GaussianFourierEmbedding,
    SinusoidalEmbedding,
    UNet,
    build_network,
)


def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter (zero-initialised ones included) with small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def _check_gradients(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> None:
    """Every parameter and the input receive finite gradients, and no parameter's gradient is all zero."""
    x = x.clone().requires_grad_(True)
    out = net(x, t)
    assert out.shape == x.shape
    (out**2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# --------------------------------------------------------------------------- time embeddings
def test_fourier_embedding_formula_and_determinism():
    torch.manual_seed(123)
    a = GaussianFourierEmbedding(64, scale=16.0)
    torch.manual_seed(456)  # the global RNG must not matter
    b = GaussianFourierEmbedding(64, scale=16.0)
    assert torch.equal(a.W, b.W)
    assert not torch.equal(a.W, GaussianFourierEmbedding(64, scale=16.0, seed=1).W)
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = a(t)
    phase = 2 * math.pi * t[:, None] * a.W[None, :]
    assert emb.shape == (3, 64)
    torch.testing.assert_close(emb, torch.cat([phase.sin(), phase.cos()], dim=1))
    assert torch.equal(a(t), b(t))
    # frequencies are N(0, scale^2): their sample std is near the scale (32 draws: ~ +-12% at 1 SE)
    assert 0.5 * 16 < float(a.W.std()) < 1.5 * 16
    assert "W" in a.state_dict() and not any(True for _ in a.parameters())


def test_positional_embedding_formula():
    e = SinusoidalEmbedding(8, time_scale=1000.0, max_period=10000.0)
    t = torch.tensor([0.0, 0.5])
    out = e(t)
    freqs = torch.tensor([10000.0 ** (-k / 4) for k in range(4)])
    phase = 1000.0 * t[:, None] * freqs
    torch.testing.assert_close(out, torch.cat([phase.sin(), phase.cos()], 1))
    assert torch.equal(out[0], torch.tensor([0.0] * 4 + [1.0] * 4))


@pytest.mark.parametrize("cls", [GaussianFourierEmbedding, SinusoidalEmbedding])
def test_embedding_rejects_bad_input(cls):
    with pytest.raises(ValueError):
        cls(7)
    with pytest.raises(ShapeError):
        cls(8)(torch.zeros(2, 2))


# --------------------------------------------------------------------------- MLP
def test_mlp_shapes_gradients_and_time_dependence():
    net = MLP(2, hidden=32, depth=2, embed_dim=16)
    x, t = torch.randn(5, 2), torch.rand(5)
    _check_gradients(net, x, t)
    with torch.no_grad():
        assert not torch.allclose(net(x, t), net(x, 1 - t))  # the output depends on t


def test_mlp_flattens_any_event_shape():
    net = MLP(12, hidden=16, depth=1, embed_dim=8)
    x, t = torch.randn(4, 3, 4), torch.rand(4)
    out = net(x, t)
    assert out.shape == (4, 3, 4)
    torch.testing.assert_close(out.reshape(4, 12), net(x.reshape(4, 12), t))
    with pytest.raises(ShapeError):
        net(torch.randn(4, 5), t)


# --------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize(
    "C, S, kw",
    [
        (1, 28, dict(channels=8, channel_mults=(1, 2, 2), attn_resolutions=(7,), num_groups=4)),
        (3, 28, dict(channels=8, channel_mults=(1, 2), attn_resolutions=(14,), num_groups=4)),
        (1, 8, dict(channels=16, channel_mults=(1, 2, 2), attn_resolutions=(4,))),
        (3, 8, dict(channels=16, channel_mults=(1, 2), num_res_blocks=2, embed="positional")),
    ],
)
def test_unet_shapes_zero_init_and_gradients(C, S, kw):
    net = UNet(in_channels=C, image_size=S, dropout=0.0, **kw)
    x, t = torch.randn(2, C, S, S), torch.tensor([0.1, 0.9])
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == (2, C, S, S)
    assert torch.equal(out, torch.zeros_like(out))  # the last convolution starts at zero
    _randomise(net)
    _check_gradients(net, x, t)
    with torch.no_grad():
        assert not torch.allclose(net(x, t), net(x, t.flip(0)))  # time conditioning reaches the output


def test_unet_resolutions_and_attention_layout():
    net = UNet(channels=16, channel_mults=(1, 2, 2), attn_resolutions=(14, 7))
    assert net.config["attn_resolutions"] == [14, 7]
    # the default puts attention at the lowest resolution only: 7 for 28x28 with three levels
    assert UNet(channels=16).config["attn_resolutions"] == [7]
    assert UNet(image_size=8, channels=16).config["attn_resolutions"] == [2]


def test_unet_rejects_bad_configurations():
    with pytest.raises(ShapeError, match="divisible"):
        UNet(image_size=30, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNet(image_size=8, attn_resolutions=(7,))
    with pytest.raises(ValueError, match="num_groups"):
        UNet(channels=12, num_groups=8)
    with pytest.raises(ValueError, match="embed"):
        UNet(embed="learned")
    with pytest.raises(ShapeError):
        UNet(channels=16)(torch.randn(2, 1, 8, 8), torch.rand(2))


def test_unet_dropout_only_in_training_mode():
    net = _randomise(UNet(image_size=8, channels=16, dropout=0.5))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x, t), net(x, t))


# --------------------------------------------------------------------------- builder and config
@pytest.mark.parametrize(
    "kind, event_shape, kw",
    [
        ("mlp", (2,), dict(hidden=32, depth=2, embed_dim=16)),
        ("mlp", (3, 4), dict(hidden=16, depth=1)),
        ("unet", (1, 28, 28), dict(channels=8, num_res_blocks=1, num_groups=4)),
        ("unet", (3, 8, 8), dict(channels=8, channel_mults=(1, 2), embed="positional", dropout=0.0, num_groups=4)),
    ],
)
def test_config_round_trip(kind, event_shape, kw):
    net = _randomise(build_network(kind, event_shape, **kw))
    assert isinstance(net, NETWORKS[kind]) and net.kind == kind
    config = json.loads(json.dumps(net.config))  # plain JSON-able values survive a text round trip
    assert config == net.config
    rebuilt = build_network(kind, event_shape, **config)
    assert rebuilt.config == net.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    net.eval(), rebuilt.eval()
    x, t = torch.randn(3, *event_shape), torch.rand(3)
    with torch.no_grad():
        assert torch.equal(net(x, t), rebuilt(x, t))


def test_build_network_errors():
    with pytest.raises(ValueError, match="mlp, unet"):
        build_network("transformer", (2,))
    with pytest.raises(ShapeError):
        build_network("mlp", (2,), dim=3)
    with pytest.raises(ShapeError):
        build_network("unet", (1, 28, 28), image_size=32)
    with pytest.raises(ShapeError):
        build_network("unet", (1, 28, 14))
    with pytest.raises(ShapeError):
        build_network("unet", (784,))
    with pytest.raises(ValueError, match="valid arguments"):
        build_network("mlp", (2,), width=3)
